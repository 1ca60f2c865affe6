//! Learning-rate schedules (`src/optim/schedule.rs`) and the LR range test
//! (`src/optim/lr_range.rs`): 1cycle against the notebook's `OneCycleScheduler` written out
//! literally, exponential and piecewise decay at hand-computed steps, Keras's
//! `ReduceLROnPlateau` counting, the `--schedule` syntax (round trips, ~50 malformed values and
//! a deterministic random search, none of which may panic), and the range test on a quadratic
//! whose diverging rate is known.

use simdnn::optim::lr_range::{LrRangeTest, Suggestions};
use simdnn::optim::schedule::{OneCycle, ReduceOnPlateau, Schedule, ScheduleSpec};

/// `actual` within 1e-6 relative of `expected`.
fn close(what: &str, actual: f32, expected: f64) {
    let diff = (actual as f64 - expected).abs();
    assert!(diff <= 1e-6 * expected.abs(), "{what}: got {actual}, expected {expected} (|diff| {diff:e})");
}

// ---------------------------------------------------------------------------------------------
// 1cycle

/// The notebook's `OneCycleScheduler` with its defaults, as Python computes it: `//` floors
/// (`div_euclid`), floats are f64, `max_rate` is the f32 the schedule is given.
fn notebook_rate(iterations: i64, max_rate: f32, iteration: i64) -> f64 {
    let max_rate = max_rate as f64;
    let start_rate = max_rate / 10.0;
    let last_rate = start_rate / 1000.0;
    let last_iterations = iterations.div_euclid(10) + 1;
    let half_iteration = (iterations - last_iterations).div_euclid(2);
    let interpolate = |iter1: i64, iter2: i64, rate1: f64, rate2: f64| {
        (rate2 - rate1) * (iteration - iter1) as f64 / (iter2 - iter1) as f64 + rate1
    };
    if iteration < half_iteration {
        interpolate(0, half_iteration, start_rate, max_rate)
    } else if iteration < 2 * half_iteration {
        interpolate(half_iteration, 2 * half_iteration, max_rate, start_rate)
    } else {
        interpolate(2 * half_iteration, iterations, start_rate, last_rate)
    }
}

/// Momentum cycling (Smith; fastai): high -> low over the first phase, low -> high over the
/// second, high over the last, with the notebook's phase boundaries.
fn notebook_momentum(iterations: i64, iteration: i64, high: f64, low: f64) -> f64 {
    let last_iterations = iterations.div_euclid(10) + 1;
    let half_iteration = (iterations - last_iterations).div_euclid(2);
    let interpolate =
        |iter1: i64, iter2: i64, m1: f64, m2: f64| (m2 - m1) * (iteration - iter1) as f64 / (iter2 - iter1) as f64 + m1;
    if iteration < half_iteration {
        interpolate(0, half_iteration, high, low)
    } else if iteration < 2 * half_iteration {
        interpolate(half_iteration, 2 * half_iteration, low, high)
    } else {
        high
    }
}

/// Step 0, the peak, the end of the second phase, the last step, and some in between.
fn probe_steps(iterations: u64, half: u64) -> Vec<u64> {
    let mut steps = vec![0, 1, half / 3, half / 2, half.saturating_sub(1), half, half + 1, half + half / 2];
    steps.extend([2 * half - half.min(1), 2 * half, 2 * half + 1, (2 * half + iterations) / 2, iterations - 1]);
    steps.retain(|&s| s < iterations);
    steps.sort_unstable();
    steps.dedup();
    steps
}

#[test]
fn one_cycle_rates_match_the_notebook() {
    let max_rate = 0.05f32;
    for iterations in [100u64, 101, 1407 * 20, 7, 8, 3, 2, 1] {
        let one = OneCycle::new(iterations, max_rate);
        let half = (iterations - (iterations / 10 + 1)) / 2;
        assert_eq!(one.half_iteration(), half, "iterations {iterations}");
        assert_eq!(one.last_iterations, iterations / 10 + 1);
        close("start_rate", one.start_rate, max_rate as f64 / 10.0);
        close("last_rate", one.last_rate, max_rate as f64 / 10.0 / 1000.0);
        for step in probe_steps(iterations, half) {
            let expected = notebook_rate(iterations as i64, max_rate, step as i64);
            close(&format!("1cycle {iterations} iterations, step {step}"), one.lr(step), expected);
            // Through `Schedule`, which ignores the base rate.
            let schedule = Schedule::OneCycle(one);
            close(&format!("Schedule::OneCycle step {step}"), schedule.lr(123.0, step), expected);
        }
        if half > 0 {
            close("rate at step 0", one.lr(0), max_rate as f64 / 10.0);
            close("peak", one.lr(half), max_rate as f64);
            close("end of the second phase", one.lr(2 * half), max_rate as f64 / 10.0);
        }
    }
    // The notebook's 20-epoch run: the last step is one step of the final phase above the last rate.
    let one = OneCycle::new(1407 * 20, max_rate);
    let final_phase = (1407 * 20 - 2 * one.half_iteration()) as f64;
    let (start, last) = (max_rate as f64 / 10.0, max_rate as f64 / 10_000.0);
    close("last step", one.lr(1407 * 20 - 1), last + (start - last) / final_phase);
}

#[test]
fn one_cycle_momentum_cycles_opposite_to_the_rate() {
    for iterations in [100u64, 101, 1407 * 20, 7, 2, 1] {
        let plain = OneCycle::new(iterations, 0.01);
        assert_eq!(plain.momentum(0), None);
        assert_eq!(Schedule::OneCycle(plain).momentum(0), None);
        let one = plain.with_momentum();
        assert_eq!(one.momentum, Some((0.95, 0.85)));
        let half = one.half_iteration();
        for step in probe_steps(iterations, half) {
            let expected = notebook_momentum(iterations as i64, step as i64, 0.95f32 as f64, 0.85f32 as f64);
            let got = one.momentum(step).unwrap();
            close(&format!("momentum, {iterations} iterations, step {step}"), got, expected);
            assert_eq!(Schedule::OneCycle(one).momentum(step), Some(got));
        }
        if half > 0 {
            close("momentum at 0", one.momentum(0).unwrap(), 0.95f32 as f64);
            close("momentum at the peak rate", one.momentum(half).unwrap(), 0.85f32 as f64);
            close("momentum at 2 * half", one.momentum(2 * half).unwrap(), 0.95f32 as f64);
        }
        close("momentum at the last step", one.momentum(iterations - 1).unwrap(), 0.95f32 as f64);
    }
    assert_eq!(Schedule::Constant.momentum(5), None);
}

#[test]
fn one_cycle_degenerate_lengths_never_divide_by_zero() {
    // half_iteration = 0 (1 or 2 iterations): only the final phase, start -> last, exactly what
    // the notebook's formula gives (checked above); here the values themselves.
    let one = OneCycle::new(2, 1.0);
    assert_eq!(one.half_iteration(), 0);
    close("2 iterations, step 0", one.lr(0), 0.1);
    close("2 iterations, step 1", one.lr(1), (0.1 + 0.0001) / 2.0);
    // No iterations at all: the last rate, finite.
    let zero = OneCycle::new(0, 1.0).with_momentum();
    assert_eq!(zero.half_iteration(), 0);
    close("0 iterations", zero.lr(0), 0.0001);
    close("0 iterations, momentum", zero.momentum(0).unwrap(), 0.95f32 as f64);
    // An empty final phase (last_iterations = 0, even iterations): steps up to the end follow
    // the two cycles; from `iterations` on, the last rate.
    let mut no_tail = OneCycle::new(10, 1.0);
    no_tail.last_iterations = 0;
    assert_eq!(no_tail.half_iteration(), 5);
    close("no tail, peak", no_tail.lr(5), 1.0);
    close("no tail, step 9", no_tail.lr(9), (0.1 - 1.0) * 4.0 / 5.0 + 1.0);
    close("no tail, step 10", no_tail.lr(10), no_tail.last_rate as f64);
    // last_iterations beyond iterations counts as iterations: half = 0, start -> last.
    let mut long_tail = OneCycle::new(10, 1.0);
    long_tail.last_iterations = 1000;
    assert_eq!(long_tail.half_iteration(), 0);
    close("long tail, step 0", long_tail.lr(0), 0.1);
    close("long tail, step 5", long_tail.lr(5), (0.0001 - 0.1) * 5.0 / 10.0 + 0.1);
    // Past the end (the notebook never goes there): the last rate, never negative.
    let one = OneCycle::new(100, 0.05).with_momentum();
    for step in [100, 101, 1_000_000, u64::MAX] {
        assert_eq!(one.lr(step), one.last_rate, "step {step}");
        close("momentum past the end", one.momentum(step).unwrap(), 0.95f32 as f64);
    }
    for iterations in 0..40 {
        let one = OneCycle::new(iterations, 0.05).with_momentum();
        for step in 0..iterations + 3 {
            let (lr, m) = (one.lr(step), one.momentum(step).unwrap());
            assert!(lr.is_finite() && lr > 0.0 && lr <= 0.05, "{iterations} iterations, step {step}: {lr}");
            assert!((0.85..=0.95).contains(&m), "{iterations} iterations, step {step}: momentum {m}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Exponential and piecewise

#[test]
fn exponential_decay_values() {
    let s = Schedule::Exponential { factor: 0.5, steps: 10 };
    close("step 0", s.lr(2.0, 0), 2.0);
    close("step 5", s.lr(2.0, 5), 2.0 * 0.5f64.sqrt()); // 1.41421356...
    close("step 10", s.lr(2.0, 10), 1.0);
    close("step 30", s.lr(2.0, 30), 0.25);
    close("step 15", s.lr(2.0, 15), 2.0 * 0.5f64.powf(1.5));
    // steps = 0 counts as 1: no division by zero.
    close("steps 0", Schedule::Exponential { factor: 0.5, steps: 0 }.lr(1.0, 2), 0.25);

    // `exponential:0.1@20` with 100 steps per epoch: a factor of 10 every 2000 steps.
    let spec = ScheduleSpec::parse("exponential:0.1@20").unwrap();
    let (s, plateau) = spec.resolve(0.01, 100, 100).unwrap();
    assert!(plateau.is_none());
    assert_eq!(s, Schedule::Exponential { factor: 0.1, steps: 2000 });
    let f = 0.1f32 as f64;
    close("step 0", s.lr(0.01, 0), 0.01f32 as f64);
    close("step 1000", s.lr(0.01, 1000), 0.01f32 as f64 * f.powf(0.5));
    close("step 2000", s.lr(0.01, 2000), 0.01f32 as f64 * f);
    close("step 4000", s.lr(0.01, 4000), 0.01f32 as f64 * f * f);
    close("step 1000 (rounded)", s.lr(0.01, 1000), 0.01 * 0.1f64.powf(0.5));
    close("step 2000 (rounded)", s.lr(0.01, 2000), 0.001);
}

#[test]
fn piecewise_values() {
    let s = Schedule::Piecewise { boundaries: vec![10, 30], values: vec![1.0, 0.5, 0.1] };
    for (step, expected) in [(0, 1.0), (9, 1.0), (10, 0.5), (29, 0.5), (30, 0.1), (31, 0.1), (1_000_000, 0.1)] {
        assert_eq!(s.lr(7.0, step), expected, "step {step}");
    }
    // Malformed vectors do not panic.
    let short = Schedule::Piecewise { boundaries: vec![10, 30], values: vec![1.0] };
    assert_eq!(short.lr(7.0, 40), 1.0);
    let empty = Schedule::Piecewise { boundaries: vec![10], values: vec![] };
    assert_eq!(empty.lr(7.0, 40), 7.0);

    // `piecewise:5=1e-3,15=1e-4` with 100 steps per epoch: base rate for epochs 0-4 (steps
    // 0-499), 1e-3 for epochs 5-14, then 1e-4.
    let (s, plateau) = ScheduleSpec::parse("piecewise:5=1e-3,15=1e-4").unwrap().resolve(0.01, 20, 100).unwrap();
    assert!(plateau.is_none());
    assert_eq!(s, Schedule::Piecewise { boundaries: vec![500, 1500], values: vec![0.01, 1e-3, 1e-4] });
    for (step, expected) in [(0, 0.01), (499, 0.01), (500, 1e-3), (1499, 1e-3), (1500, 1e-4), (1999, 1e-4)] {
        assert_eq!(s.lr(0.01, step), expected, "step {step}");
    }
    assert_eq!(Schedule::Constant.lr(0.25, 12345), 0.25);
}

#[test]
fn resolve_one_cycle_plateau_and_errors() {
    let (s, plateau) = ScheduleSpec::parse("1cycle:0.05,momentum").unwrap().resolve(1e-3, 20, 1407).unwrap();
    assert!(plateau.is_none());
    assert_eq!(s, Schedule::OneCycle(OneCycle::new(1407 * 20, 0.05).with_momentum()));
    let (s, _) = ScheduleSpec::parse("1cycle:0.05").unwrap().resolve(1e-3, 3, 10).unwrap();
    assert_eq!(s, Schedule::OneCycle(OneCycle::new(30, 0.05)));

    let (s, plateau) = ScheduleSpec::parse("plateau:0.5@3").unwrap().resolve(1e-3, 20, 10).unwrap();
    assert_eq!(s, Schedule::Constant);
    assert_eq!(plateau, Some(ReduceOnPlateau::new(0.5, 3)));
    let (_, plateau) = ScheduleSpec::parse("plateau").unwrap().resolve(1e-3, 20, 10).unwrap();
    assert_eq!(plateau, Some(ReduceOnPlateau::default()));
    assert_eq!(ScheduleSpec::parse("constant").unwrap().resolve(1e-3, 20, 10).unwrap(), (Schedule::Constant, None));

    let err = |spec: &str, lr: f32, epochs: u64, spe: u64, flag: &str| {
        let e = ScheduleSpec::parse(spec).unwrap().resolve(lr, epochs, spe).unwrap_err().to_string();
        assert!(e.contains(flag), "{spec} with {epochs} x {spe}: `{e}` does not name {flag}");
    };
    err("constant", 1e-3, 10, 0, "--schedule");
    err("exponential:0.1@1000000", 1e-3, 10, u64::MAX, "--schedule");
    err("piecewise:999999=1e-3", 1e-3, 10, u64::MAX / 2, "--schedule");
    err("1cycle:0.05", 1e-3, 0, 10, "--schedule");
    err("1cycle:0.05", 1e-3, u64::MAX, 10, "--schedule");
    err("constant", f32::NAN, 10, 10, "--lr");
    err("piecewise:5=1e-3", 0.0, 10, 10, "--lr");
}

// ---------------------------------------------------------------------------------------------
// ReduceOnPlateau

#[test]
fn plateau_reduces_exactly_after_patience_epochs() {
    let d = ReduceOnPlateau::default();
    assert_eq!((d.factor, d.patience, d.min_lr, d.min_delta, d.wait), (0.1, 10, 0.0, 1e-4, 0));
    assert_eq!(d.best, f64::INFINITY);

    let mut p = ReduceOnPlateau::new(0.5, 3);
    assert_eq!(p.update(1.0, 0.1), 0.1); // improvement: best = 1
    assert_eq!(p.best, 1.0);
    assert_eq!(p.update(1.0, 0.1), 0.1); // 1 epoch without improvement
    assert_eq!(p.update(0.99995, 0.1), 0.1); // 2 (within min_delta: not an improvement)
    assert_eq!(p.wait, 2);
    assert_eq!(p.update(1.5, 0.1), 0.05); // 3 = patience: reduce
    assert_eq!(p.wait, 0);
    assert_eq!(p.update(1.0, 0.05), 0.05);
    assert_eq!(p.update(f64::NAN, 0.05), 0.05); // NaN is no improvement
    assert_eq!(p.update(1.0, 0.05), 0.025); // 3 more: reduce again
    // An improvement resets the count.
    assert_eq!(p.update(1.0, 0.025), 0.025);
    assert_eq!(p.update(1.0, 0.025), 0.025);
    assert_eq!(p.update(0.5, 0.025), 0.025); // improvement
    assert_eq!((p.best, p.wait), (0.5, 0));
    assert_eq!(p.update(0.6, 0.025), 0.025);
    assert_eq!(p.update(0.6, 0.025), 0.025);
    assert_eq!(p.update(0.6, 0.025), 0.0125);

    // Keras's default patience: 10 epochs.
    let mut k = ReduceOnPlateau::default();
    assert_eq!(k.update(2.0, 1.0), 1.0);
    for epoch in 1..10 {
        assert_eq!(k.update(2.0, 1.0), 1.0, "epoch {epoch}");
    }
    assert_eq!(k.update(2.0, 1.0), 0.1);
}

#[test]
fn plateau_respects_min_lr() {
    let mut p = ReduceOnPlateau::new(0.5, 1);
    p.min_lr = 0.03;
    p.update(1.0, 0.05);
    assert_eq!(p.update(1.0, 0.05), 0.03); // max(0.025, 0.03)
    assert_eq!(p.update(1.0, 0.03), 0.03); // at min_lr: no further change
    assert_eq!(p.update(1.0, 0.03), 0.03);
    assert!(p.wait >= 2, "Keras keeps counting when the rate is already at min_lr");
}

// ---------------------------------------------------------------------------------------------
// The --schedule syntax

#[test]
fn parse_and_display_round_trip() {
    let cases: &[(&str, ScheduleSpec, &str)] = &[
        ("constant", ScheduleSpec::Constant, "constant"),
        ("Constant", ScheduleSpec::Constant, "constant"),
        ("exponential:0.1@20", ScheduleSpec::Exponential { factor: 0.1, epochs: 20 }, "exponential:0.1@20"),
        ("exponential:1@1", ScheduleSpec::Exponential { factor: 1.0, epochs: 1 }, "exponential:1@1"),
        ("exponential:5e-1@3", ScheduleSpec::Exponential { factor: 0.5, epochs: 3 }, "exponential:0.5@3"),
        (
            "piecewise:5=1e-3,15=1e-4",
            ScheduleSpec::Piecewise { changes: vec![(5, 1e-3), (15, 1e-4)] },
            "piecewise:5=0.001,15=0.0001",
        ),
        ("piecewise:1=10", ScheduleSpec::Piecewise { changes: vec![(1, 10.0)] }, "piecewise:1=10"),
        ("1cycle:0.05", ScheduleSpec::OneCycle { max_rate: 0.05, momentum: false }, "1cycle:0.05"),
        ("1cycle:0.05,momentum", ScheduleSpec::OneCycle { max_rate: 0.05, momentum: true }, "1cycle:0.05,momentum"),
        (
            "1CYCLE:1e-10,Momentum",
            ScheduleSpec::OneCycle { max_rate: 1e-10, momentum: true },
            "1cycle:0.0000000001,momentum",
        ),
        ("1cycle:10", ScheduleSpec::OneCycle { max_rate: 10.0, momentum: false }, "1cycle:10"),
        ("plateau", ScheduleSpec::Plateau { factor: 0.1, patience: 10 }, "plateau"),
        ("plateau:0.1@10", ScheduleSpec::Plateau { factor: 0.1, patience: 10 }, "plateau"),
        ("plateau:0.5@5", ScheduleSpec::Plateau { factor: 0.5, patience: 5 }, "plateau:0.5@5"),
        (
            "plateau:0.999@1000000",
            ScheduleSpec::Plateau { factor: 0.999, patience: 1_000_000 },
            "plateau:0.999@1000000",
        ),
    ];
    for (input, expected, shown) in cases {
        let spec = ScheduleSpec::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(&spec, expected, "{input}");
        assert_eq!(spec.to_string(), *shown, "{input}");
        assert_eq!(ScheduleSpec::parse(&spec.to_string()).unwrap(), spec, "{input} does not round-trip");
        assert_eq!(input.parse::<ScheduleSpec>().unwrap(), spec, "FromStr of {input}");
    }
    assert_eq!(ScheduleSpec::default(), ScheduleSpec::Constant);
    assert!(ScheduleSpec::parse("1cycle:0.05,momentum").unwrap().cycles_momentum());
    assert!(!ScheduleSpec::parse("1cycle:0.05").unwrap().cycles_momentum());

    // Odd f32 values and many boundaries round-trip too.
    let changes: Vec<(u64, f32)> = (1..=1000).map(|i| (i * 7, 1.0 / (i as f32 * 3.0))).collect();
    let spec = ScheduleSpec::Piecewise { changes };
    assert_eq!(ScheduleSpec::parse(&spec.to_string()).unwrap(), spec);
    for rate in [1e-10f32, 3.3333333e-7, 0.1 + 0.2, 9.999999, std::f32::consts::PI] {
        let spec = ScheduleSpec::OneCycle { max_rate: rate, momentum: false };
        assert_eq!(ScheduleSpec::parse(&spec.to_string()).unwrap(), spec, "{rate}");
    }
}

/// `s` must be rejected with a message naming `--schedule` (a panic fails the test too).
fn rejected(s: &str) {
    match ScheduleSpec::parse(s) {
        Ok(spec) => panic!("`{s}` parsed as {spec:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("--schedule"), "`{s}`: message `{msg}` does not name --schedule");
            assert!(msg.contains("1cycle:MAX_RATE"), "`{s}`: message `{msg}` does not say what is accepted");
            assert!(msg.len() < 600, "`{s}`: message is {} bytes long", msg.len());
        }
    }
}

#[test]
fn garbage_is_rejected_naming_the_flag() {
    let bad = [
        "",
        "1cycle",
        "1cycle:",
        "1cycle:-1",
        "1cycle:nan",
        "1cycle:NaN",
        "1cycle:inf",
        "1cycle:0",
        "1cycle:1e40",
        "1cycle:11",
        "1cycle:1e-11",
        "1cycle:0.05,",
        "1cycle:0.05,momentum,",
        "1cycle:0.05,momentumx",
        "1cycle:0.05,mömentum",
        "1cycle:0.05 ",
        "1cycle:０.05",
        "1cycle:0x10",
        " constant",
        "constant:",
        "constant:1",
        "constant ",
        "ＣＯＮＳＴＡＮＴ",
        "exponential",
        "exponential:",
        "exponential:0.1",
        "exponential:0@5",
        "exponential:-0.1@5",
        "exponential:2@5",
        "exponential:0.1@0",
        "exponential:0.1@-5",
        "exponential:0.1@5.5",
        "exponential:0.1@20x",
        "exponential:0.1@20@3",
        "exponential:0.1@1000001",
        "exponential:0.1@99999999999999999999999",
        "exponential:@",
        "piecewise",
        "piecewise:",
        "piecewise:5=",
        "piecewise:=1e-3",
        "piecewise:5",
        "piecewise:5=1e-3,3=1e-4",
        "piecewise:5=1e-3,5=1e-4",
        "piecewise:5=1e-3,",
        "piecewise:,5=1e-3",
        "piecewise:0=1e-3",
        "piecewise:5=1e-3=2",
        "piecewise:5=0",
        "piecewise:5=100",
        "piecewise:5=1e-3;15=1e-4",
        "plateau:",
        "plateau:2@3",
        "plateau:1@3",
        "plateau:0@3",
        "plateau:0.5",
        "plateau:0.5@0",
        "plateau:0.5@",
        "plateau:@5",
        "plateau:nan@5",
        "foo",
        "1cycle0.05",
        ":",
        "::",
        "\0",
        "é:1",
        "🚀",
        "1cycle:0.05\n",
    ];
    for s in bad {
        rejected(s);
    }
    // Very long values.
    rejected(&"a".repeat(100_000));
    rejected(&format!("1cycle:{}", "9".repeat(10_000)));
    rejected(&format!("1cycle:0.{}", "0".repeat(20_000)));
    rejected(&format!("piecewise:{}", "1=1e-3,".repeat(3000)));
    let too_many: Vec<String> = (1..=1001).map(|i| format!("{i}=1e-3")).collect();
    rejected(&format!("piecewise:{}", too_many.join(",")));
    rejected(&"é".repeat(5000));
}

/// A few thousand deterministic random strings over the syntax's alphabet: parsing never
/// panics, and whatever parses round-trips through `Display`.
#[test]
fn random_strings_never_panic_and_accepted_ones_round_trip() {
    const PIECES: &[&str] = &[
        "constant",
        "exponential",
        "piecewise",
        "1cycle",
        "plateau",
        "momentum",
        ":",
        "@",
        ",",
        "=",
        "0",
        "1",
        "5",
        "9",
        ".",
        "e",
        "-",
        "+",
        "1e-3",
        "0.1",
        "nan",
        "inf",
        "é",
        " ",
        "x",
    ];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut accepted = 0;
    for _ in 0..20_000 {
        let len = 1 + next() % 8;
        let s: String = (0..len).map(|_| PIECES[(next() % PIECES.len() as u64) as usize]).collect();
        match ScheduleSpec::parse(&s) {
            Ok(spec) => {
                accepted += 1;
                assert_eq!(ScheduleSpec::parse(&spec.to_string()).unwrap(), spec, "`{s}`");
            }
            Err(e) => assert!(e.to_string().contains("--schedule"), "`{s}`: {e}"),
        }
    }
    assert!(accepted > 0, "the random search should hit some valid values");
}

// ---------------------------------------------------------------------------------------------
// LR range test

#[test]
fn range_test_finds_the_divergence_of_a_quadratic() {
    // f(w) = 0.5 a w^2, gradient descent w -= lr a w: diverges for lr > 2 / a = 0.5.
    let a = 4.0f64;
    let (min, max, steps) = (1e-5f32, 10.0f32, 200usize);
    let mut test = LrRangeTest::new(min, max, steps).unwrap();
    assert_eq!(test.steps(), steps);
    let mut w = 1.0f64;
    let mut step = 0;
    loop {
        assert_eq!(test.next_rate(), Some(test.rate(step)));
        w -= test.rate(step) as f64 * a * w;
        step += 1;
        if !test.record(0.5 * a * w * w) {
            break;
        }
    }
    assert!(test.is_finished());
    assert_eq!(test.next_rate(), None);
    let points = test.points();
    assert_eq!(points.len(), step);
    assert!(step < steps, "divergence not detected: all {steps} steps were taken");
    // It stopped for divergence: the last rate diverges, and the smoothed loss exceeds 4x its best.
    let (last_rate, _, last_smoothed) = *points.last().unwrap();
    let best = points.iter().map(|p| p.2).fold(f64::INFINITY, f64::min);
    assert!(last_rate > 0.5, "stopped at rate {last_rate}, which does not diverge");
    assert!(last_smoothed > 4.0 * best);

    let Suggestions { steepest, min_over_10 } = test.suggestions().unwrap();
    for (name, rate) in [("steepest", steepest), ("min_over_10", min_over_10)] {
        assert!(rate > 1e-5 && rate < 0.5, "{name} = {rate}, outside (1e-5, 0.5)");
    }
    assert!(steepest <= min_over_10 * 10.0, "the steepest descent comes before the minimum");

    // Exponentially spaced: a constant ratio between consecutive rates, from min to max.
    assert_eq!(test.rate(0), min);
    assert_eq!(test.rate(steps - 1), max);
    assert_eq!(test.rate(steps + 5), max);
    let ratio = (max as f64 / min as f64).powf(1.0 / (steps - 1) as f64);
    for i in 0..steps - 1 {
        let r = test.rate(i + 1) as f64 / test.rate(i) as f64;
        assert!((r - ratio).abs() < 1e-5 * ratio, "rate({}) / rate({i}) = {r}, expected {ratio}", i + 1);
    }
    for (i, p) in points.iter().enumerate() {
        assert_eq!(p.0, test.rate(i));
    }
}

#[test]
fn range_test_smooths_as_fastai() {
    let losses = [2.0, 1.5, 1.7, 1.2, 1.0, 0.9];
    let mut test = LrRangeTest::new(1e-3, 1.0, 100).unwrap();
    let mut avg = 0.0f64;
    for (i, &loss) in losses.iter().enumerate() {
        assert!(test.record(loss));
        avg = 0.98 * avg + 0.02 * loss;
        let expected = avg / (1.0 - 0.98f64.powi(i as i32 + 1));
        let (_, raw, smoothed) = test.points()[i];
        assert_eq!(raw, loss);
        assert!((smoothed - expected).abs() < 1e-12, "point {i}: smoothed {smoothed}, expected {expected}");
    }
    assert_eq!(test.points()[0].2, 2.0, "bias correction makes the first smoothed loss the loss itself");
    // The minimum is the last point: min_over_10 is its rate / 10.
    let s = test.suggestions().unwrap();
    assert_eq!(s.min_over_10, test.rate(5) / 10.0);
}

#[test]
fn range_test_stops_on_non_finite_loss_and_after_the_last_step() {
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut test = LrRangeTest::new(1e-7, 10.0, 100).unwrap();
        assert!(test.record(1.0));
        assert!(!test.record(bad), "{bad} must stop the test");
        assert_eq!(test.points().len(), 1, "a non-finite loss is not recorded");
        assert!(!test.record(1.0), "a stopped test stays stopped");
        assert_eq!(test.points().len(), 1);
    }
    // A flat loss runs all steps and stops at the last.
    let mut test = LrRangeTest::new(1e-3, 1.0, 10).unwrap();
    for i in 0..9 {
        assert!(test.record(1.0), "step {i}");
    }
    assert!(!test.record(1.0));
    assert_eq!(test.points().len(), 10);
    assert!(test.suggestions().is_some());
    // A jump above 4x the best smoothed loss stops it.
    let mut test = LrRangeTest::new(1e-3, 1.0, 100).unwrap();
    assert!(test.record(1.0));
    assert!(test.record(1.0));
    assert!(!test.record(1000.0));
}

#[test]
fn range_test_needs_valid_settings_and_enough_points() {
    for (min, max, steps, name) in [
        (0.0, 10.0, 100, "min_lr"),
        (-1.0, 10.0, 100, "min_lr"),
        (f32::NAN, 10.0, 100, "min_lr"),
        (1e-5, 1e-5, 100, "max_lr"),
        (1e-5, 1e-6, 100, "max_lr"),
        (1e-5, f32::INFINITY, 100, "max_lr"),
        (1e-5, f32::NAN, 100, "max_lr"),
        (1e-5, 10.0, 1, "steps"),
        (1e-5, 10.0, 0, "steps"),
    ] {
        let e = LrRangeTest::new(min, max, steps).unwrap_err().to_string();
        assert!(e.contains(name), "({min}, {max}, {steps}): `{e}` does not name {name}");
    }
    let two = LrRangeTest::new(1e-7, 10.0, 2).unwrap();
    assert_eq!((two.rate(0), two.rate(1)), (1e-7, 10.0));

    let mut test = LrRangeTest::new(1e-7, 10.0, 100).unwrap();
    for i in 0..4 {
        assert!(test.suggestions().is_none(), "{i} points");
        test.record(1.0 - i as f64 * 0.1);
    }
    assert!(test.suggestions().is_none(), "4 points");
    test.record(0.5);
    assert!(test.suggestions().is_some(), "5 points");
}
