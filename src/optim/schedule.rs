//! Learning-rate (and momentum) schedules: the per-step [`Schedule`] (constant, Keras's
//! exponential and piecewise-constant decay, the notebook's 1cycle), the per-epoch
//! [`ReduceOnPlateau`] (Keras's `ReduceLROnPlateau`), and [`ScheduleSpec`], the parsed
//! `--schedule` flag. Owns only this logic: it imports `core`, `alloc`, `libm` and
//! `crate::error`, and knows nothing of models, data or the training loop (the trainer asks
//! for a rate before every step and, for plateau scheduling, reports each epoch's
//! validation loss).
//!
//! # The `--schedule` syntax
//!
//! Names are case-insensitive; numbers are decimal (`0.001`, `1e-3`); no spaces.
//!
//! - `constant`: the base rate (`--lr`) throughout (the default).
//! - `exponential:FACTOR@EPOCHS`: `lr * FACTOR^(step / (EPOCHS * steps_per_epoch))`, continuous
//!   (Keras's `ExponentialDecay`); `exponential:0.1@20` divides the rate by 10 every 20 epochs.
//!   FACTOR in (0, 1], EPOCHS a whole number from 1 to 1000000.
//! - `piecewise:EPOCH=LR,EPOCH=LR,...`: the base rate until the first EPOCH, then each LR from
//!   its EPOCH on. EPOCHs are 0-based (`5=1e-3` switches at the start of the sixth epoch),
//!   strictly increasing whole numbers from 1 to 1000000, at most 1000 of them; LRs in
//!   [1e-10, 10].
//! - `1cycle:MAX_RATE`: the notebook's `OneCycleScheduler` over all the run's steps (see
//!   [`OneCycle`]); the base rate is not used. MAX_RATE in [1e-10, 10].
//! - `1cycle:MAX_RATE,momentum`: the same, also cycling SGD's momentum 0.95 -> 0.85 -> 0.95.
//! - `plateau` or `plateau:FACTOR@PATIENCE`: Keras's `ReduceLROnPlateau` on the validation
//!   loss: multiply the rate by FACTOR (default 0.1, in (0, 1)) after PATIENCE (default 10, a
//!   whole number from 1 to 1000000) epochs without improvement (by more than 1e-4).
//!
//! [`ScheduleSpec::parse`] reads these (rejecting anything else with an error naming
//! `--schedule` and listing the accepted forms, never panicking), `Display` writes them back,
//! and [`ScheduleSpec::resolve`] turns epochs into steps.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::error::{Error, Result};

/// The flag every parse error names.
const FLAG: &str = "--schedule";

/// The accepted forms, quoted in every parse error.
pub const SYNTAX: &str = "constant | exponential:FACTOR@EPOCHS | piecewise:EPOCH=LR,EPOCH=LR,... | \
     1cycle:MAX_RATE[,momentum] | plateau[:FACTOR@PATIENCE]";

/// Largest epoch count (or patience) accepted in a spec.
pub const MAX_SPEC_EPOCHS: u64 = 1_000_000;
/// Most boundaries a piecewise spec may have.
pub const MAX_BOUNDARIES: usize = 1000;
/// Learning rates in a spec lie in `[MIN_SPEC_RATE, MAX_SPEC_RATE]`.
pub const MIN_SPEC_RATE: f32 = 1e-10;
/// Learning rates in a spec lie in `[MIN_SPEC_RATE, MAX_SPEC_RATE]`: no optimiser here trains
/// above 10 (the LR range test's default upper end).
pub const MAX_SPEC_RATE: f32 = 10.0;
/// Longest `--schedule` string accepted, in bytes.
pub const MAX_SPEC_LEN: usize = 64 * 1024;

/// Default high and low momentum of 1cycle's momentum cycling (Smith 2018; fastai's `moms`).
pub const ONE_CYCLE_MOMENTUM: (f32, f32) = (0.95, 0.85);

/// A learning-rate schedule, queried once per optimisation step.
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    /// The base rate at every step.
    Constant,
    /// Keras's ExponentialDecay: lr0 * factor^(step / steps), continuous. `steps == 0` is
    /// treated as 1 (no division by zero).
    Exponential { factor: f32, steps: u64 },
    /// Piecewise constant: boundaries in steps (ascending) and one more value than boundaries;
    /// `values[i]` applies while `step < boundaries[i]`, the last value from the last boundary
    /// on. (Keras's `PiecewiseConstantDecay` switches one step later: it keeps `values[i]` while
    /// `step <= boundaries[i]`. Here a boundary is the first step of an epoch, which gets the
    /// new value.) Malformed vectors never panic: a missing value repeats the last one, and an
    /// empty `values` gives the base rate.
    Piecewise { boundaries: Vec<u64>, values: Vec<f32> },
    /// The notebook's OneCycleScheduler (Géron, chapter 11): see [`OneCycle`]. Ignores the base
    /// rate.
    OneCycle(OneCycle),
}

impl Schedule {
    /// The rate for optimisation step `step` (counted from 0 over the whole run), given the base
    /// rate `base_lr` (`--lr`, or the rate [`ReduceOnPlateau`] has reduced it to).
    pub fn lr(&self, base_lr: f32, step: u64) -> f32 {
        match self {
            Schedule::Constant => base_lr,
            Schedule::Exponential { factor, steps } => {
                let exponent = step as f64 / (*steps).max(1) as f64;
                (base_lr as f64 * libm::pow(*factor as f64, exponent)) as f32
            }
            Schedule::Piecewise { boundaries, values } => {
                let i = boundaries.iter().position(|&b| step < b).unwrap_or(boundaries.len());
                values.get(i).or(values.last()).copied().unwrap_or(base_lr)
            }
            Schedule::OneCycle(one) => one.lr(step),
        }
    }

    /// SGD's momentum for step `step`, when the schedule cycles it (1cycle with momentum);
    /// `None` means: keep the optimiser's own momentum.
    pub fn momentum(&self, step: u64) -> Option<f32> {
        match self {
            Schedule::OneCycle(one) => one.momentum(step),
            _ => None,
        }
    }
}

/// The notebook's `OneCycleScheduler` (Géron, *Hands-On Machine Learning*, chapter 11), per
/// optimisation step `iteration` counted from 0, all integer divisions flooring:
///
/// ```text
/// half_iteration = (iterations - last_iterations) // 2
/// iteration < half_iteration:      rate = interpolate(0, half_iteration, start_rate, max_rate)
/// iteration < 2 * half_iteration:  rate = interpolate(half_iteration, 2 * half_iteration, max_rate, start_rate)
/// otherwise:                       rate = interpolate(2 * half_iteration, iterations, start_rate, last_rate)
/// interpolate(i1, i2, r1, r2) = (r2 - r1) * (iteration - i1) / (i2 - i1) + r1
/// ```
///
/// computed in f64. Defaults ([`OneCycle::new`]): `start_rate = max_rate / 10`,
/// `last_rate = start_rate / 1000`, `last_iterations = iterations // 10 + 1`.
///
/// Edge cases, where the notebook would divide by zero or extrapolate:
/// - `half_iteration == 0` (fewer than about 3 iterations, or `last_iterations >= iterations - 1`):
///   there is no warm-up and no cool-down, only the final phase, `start_rate -> last_rate` over
///   all iterations (exactly what the notebook's formula gives then). `last_iterations` larger
///   than `iterations` counts as `iterations`.
/// - an empty final phase (`iterations == 2 * half_iteration`, possible only with
///   `last_iterations == 0`, or with `iterations == 0`), and any step at or past `iterations`:
///   `last_rate`. (The notebook never runs past its iterations; extrapolating would drive the
///   rate below zero.)
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OneCycle {
    /// Total optimisation steps: epochs * ceil(train_size / batch_size).
    pub iterations: u64,
    pub max_rate: f32,
    pub start_rate: f32,
    pub last_rate: f32,
    /// Length of the final annealing phase, in steps.
    pub last_iterations: u64,
    /// `(high, low)`: when set, SGD's momentum goes linearly from high down to low over the
    /// first phase, back up to high over the second, and stays at high over the final phase
    /// (opposite to the rate, as in Smith 2018 and fastai). Usually [`ONE_CYCLE_MOMENTUM`].
    pub momentum: Option<(f32, f32)>,
}

impl OneCycle {
    /// The notebook's defaults: `start_rate = max_rate / 10`, `last_rate = start_rate / 1000`,
    /// `last_iterations = iterations // 10 + 1`, no momentum cycling.
    pub fn new(iterations: u64, max_rate: f32) -> Self {
        let start_rate = max_rate / 10.0;
        OneCycle {
            iterations,
            max_rate,
            start_rate,
            last_rate: start_rate / 1000.0,
            last_iterations: iterations / 10 + 1,
            momentum: None,
        }
    }

    /// The same schedule, also cycling momentum between 0.95 and 0.85.
    pub fn with_momentum(mut self) -> Self {
        self.momentum = Some(ONE_CYCLE_MOMENTUM);
        self
    }

    /// `half_iteration`, clamped at 0 (see the type's documentation).
    pub fn half_iteration(&self) -> u64 {
        self.iterations.saturating_sub(self.last_iterations) / 2
    }

    /// The three phases' values `(at 0, at half, at 2 * half, at iterations)` interpolated at
    /// `step`.
    fn phase(&self, step: u64, start: f64, peak: f64, end: f64) -> f64 {
        let half = self.half_iteration();
        if step >= self.iterations {
            end
        } else if step < half {
            interpolate(step, 0, half, start, peak)
        } else if step < 2 * half {
            interpolate(step, half, 2 * half, peak, start)
        } else {
            interpolate(step, 2 * half, self.iterations, start, end)
        }
    }

    /// The rate at step `step` (from 0).
    pub fn lr(&self, step: u64) -> f32 {
        self.phase(step, self.start_rate as f64, self.max_rate as f64, self.last_rate as f64) as f32
    }

    /// The momentum at step `step` (from 0), when momentum cycling is on.
    pub fn momentum(&self, step: u64) -> Option<f32> {
        let (high, low) = self.momentum?;
        Some(self.phase(step, high as f64, low as f64, high as f64) as f32)
    }
}

/// The notebook's `_interpolate`, with the same order of operations; an empty interval gives
/// `r2` instead of dividing by zero.
fn interpolate(step: u64, i1: u64, i2: u64, r1: f64, r2: f64) -> f64 {
    if i2 <= i1 {
        return r2;
    }
    (r2 - r1) * step.saturating_sub(i1) as f64 / (i2 - i1) as f64 + r1
}

/// Keras's `ReduceLROnPlateau` in `"min"` mode on the validation loss, without cooldown:
/// queried once per epoch with [`ReduceOnPlateau::update`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReduceOnPlateau {
    /// Multiplies the rate on a plateau (Keras default 0.1).
    pub factor: f32,
    /// Epochs without improvement before a reduction (Keras default 10).
    pub patience: u32,
    /// The rate is never reduced below this (Keras default 0).
    pub min_lr: f32,
    /// An improvement means `val_loss < best - min_delta` (Keras default 1e-4).
    pub min_delta: f64,
    /// Best validation loss so far (starts at +infinity).
    pub best: f64,
    /// Epochs since the last improvement or reduction.
    pub wait: u32,
}

impl Default for ReduceOnPlateau {
    /// Keras's defaults: factor 0.1, patience 10, min_lr 0, min_delta 1e-4.
    fn default() -> Self {
        ReduceOnPlateau::new(0.1, 10)
    }
}

impl ReduceOnPlateau {
    /// `factor` and `patience`, Keras's defaults for the rest (min_lr 0, min_delta 1e-4).
    pub fn new(factor: f32, patience: u32) -> Self {
        ReduceOnPlateau { factor, patience, min_lr: 0.0, min_delta: 1e-4, best: f64::INFINITY, wait: 0 }
    }

    /// Reports the epoch's validation loss while training at rate `lr`; returns the rate for
    /// the next epoch. As Keras: an improvement (`val_loss < best - min_delta`) records the new
    /// best and resets the count; otherwise the count grows, and when it reaches `patience`
    /// and `lr > min_lr`, the rate becomes `max(lr * factor, min_lr)` and the count restarts.
    /// A NaN loss is never an improvement.
    pub fn update(&mut self, val_loss: f64, lr: f32) -> f32 {
        if val_loss < self.best - self.min_delta {
            self.best = val_loss;
            self.wait = 0;
            return lr;
        }
        self.wait = self.wait.saturating_add(1);
        if self.wait >= self.patience && lr > self.min_lr {
            self.wait = 0;
            return (lr * self.factor).max(self.min_lr);
        }
        lr
    }
}

/// The `--schedule` flag as parsed, before the run's length is known (see the module
/// documentation for the syntax).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum ScheduleSpec {
    /// `constant`
    #[default]
    Constant,
    /// `exponential:FACTOR@EPOCHS`
    Exponential { factor: f32, epochs: u64 },
    /// `piecewise:EPOCH=LR,...`: from each 0-based epoch on, its rate (strictly increasing
    /// epochs); the base rate before the first.
    Piecewise { changes: Vec<(u64, f32)> },
    /// `1cycle:MAX_RATE[,momentum]`
    OneCycle { max_rate: f32, momentum: bool },
    /// `plateau[:FACTOR@PATIENCE]`
    Plateau { factor: f32, patience: u32 },
}

impl ScheduleSpec {
    /// Parses a `--schedule` value. Never panics; every error names `--schedule`, quotes (the
    /// start of) the input and says what is accepted.
    pub fn parse(s: &str) -> Result<ScheduleSpec> {
        if s.is_empty() {
            return Err(bad(s, "it is empty"));
        }
        if s.len() > MAX_SPEC_LEN {
            return Err(bad(s, &alloc::format!("it is longer than {MAX_SPEC_LEN} bytes")));
        }
        let (name, args) = match s.split_once(':') {
            Some((name, args)) => (name, Some(args)),
            None => (s, None),
        };
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if is("constant") {
            match args {
                None => Ok(ScheduleSpec::Constant),
                Some(_) => Err(bad(s, "`constant` takes no arguments")),
            }
        } else if is("exponential") {
            let Some(args) = args else {
                return Err(bad(s, "`exponential` needs FACTOR@EPOCHS, e.g. exponential:0.1@20"));
            };
            let Some((factor, epochs)) = args.split_once('@') else {
                return Err(bad(s, "`exponential` needs FACTOR@EPOCHS, e.g. exponential:0.1@20"));
            };
            let factor = parse_f32(s, "FACTOR", factor, |v| v > 0.0 && v <= 1.0, "a number in (0, 1]")?;
            let epochs = parse_count(s, "EPOCHS", epochs)?;
            Ok(ScheduleSpec::Exponential { factor, epochs })
        } else if is("piecewise") {
            let Some(args) = args.filter(|a| !a.is_empty()) else {
                return Err(bad(s, "`piecewise` needs EPOCH=LR pairs, e.g. piecewise:5=1e-3,15=1e-4"));
            };
            let mut changes: Vec<(u64, f32)> = Vec::new();
            for pair in args.split(',') {
                if changes.len() == MAX_BOUNDARIES {
                    return Err(bad(s, &alloc::format!("more than {MAX_BOUNDARIES} EPOCH=LR pairs")));
                }
                let Some((epoch, rate)) = pair.split_once('=') else {
                    return Err(bad(s, &alloc::format!("`{}` is not EPOCH=LR", excerpt(pair))));
                };
                let epoch = parse_count(s, "EPOCH", epoch)?;
                let rate = parse_rate(s, "LR", rate)?;
                match changes.last() {
                    Some(&(previous, _)) if epoch <= previous => {
                        return Err(bad(
                            s,
                            &alloc::format!("EPOCHs must be strictly increasing, but {epoch} follows {previous}"),
                        ));
                    }
                    _ => {}
                }
                changes.push((epoch, rate));
            }
            Ok(ScheduleSpec::Piecewise { changes })
        } else if is("1cycle") {
            let Some(args) = args else { return Err(bad(s, "`1cycle` needs MAX_RATE, e.g. 1cycle:0.05")) };
            let (rate, option) = match args.split_once(',') {
                Some((rate, option)) => (rate, Some(option)),
                None => (args, None),
            };
            let max_rate = parse_rate(s, "MAX_RATE", rate)?;
            let momentum = match option {
                None => false,
                Some(o) if o.eq_ignore_ascii_case("momentum") => true,
                Some(o) => {
                    return Err(bad(
                        s,
                        &alloc::format!("after MAX_RATE only `,momentum` is accepted, not `,{}`", excerpt(o)),
                    ));
                }
            };
            Ok(ScheduleSpec::OneCycle { max_rate, momentum })
        } else if is("plateau") {
            let Some(args) = args else {
                let d = ReduceOnPlateau::default();
                return Ok(ScheduleSpec::Plateau { factor: d.factor, patience: d.patience });
            };
            let Some((factor, patience)) = args.split_once('@') else {
                return Err(bad(s, "`plateau` takes nothing or FACTOR@PATIENCE, e.g. plateau:0.5@5"));
            };
            let factor = parse_f32(s, "FACTOR", factor, |v| v > 0.0 && v < 1.0, "a number in (0, 1)")?;
            let patience = parse_count(s, "PATIENCE", patience)? as u32;
            Ok(ScheduleSpec::Plateau { factor, patience })
        } else {
            Err(bad(s, &alloc::format!("unknown schedule `{}`", excerpt(name))))
        }
    }

    /// Whether this schedule sets SGD's momentum per step.
    pub fn cycles_momentum(&self) -> bool {
        matches!(self, ScheduleSpec::OneCycle { momentum: true, .. })
    }

    /// The per-step schedule and, for `plateau`, the per-epoch controller, for a run of `epochs`
    /// epochs of `steps_per_epoch` optimisation steps, at base rate `base_lr` (`--lr`; the first
    /// value of `piecewise`, not used by `1cycle`). Epochs become steps: `exponential`'s EPOCHS
    /// become EPOCHS * steps_per_epoch steps, a `piecewise` EPOCH becomes the step
    /// EPOCH * steps_per_epoch (boundaries at or past the run's end never take effect), and
    /// `1cycle` spans epochs * steps_per_epoch iterations. With `plateau`, the trainer passes
    /// the rate [`ReduceOnPlateau::update`] returned as the base rate.
    pub fn resolve(
        &self,
        base_lr: f32,
        epochs: u64,
        steps_per_epoch: u64,
    ) -> Result<(Schedule, Option<ReduceOnPlateau>)> {
        if !(base_lr.is_finite() && base_lr > 0.0) {
            return Err(Error::config("--lr", alloc::format!("must be a positive number, got {base_lr}")));
        }
        if steps_per_epoch == 0 {
            return Err(Error::config(FLAG, "needs at least one optimisation step per epoch"));
        }
        let to_steps = |epochs: u64| {
            epochs.checked_mul(steps_per_epoch).ok_or_else(|| {
                Error::config(FLAG, alloc::format!("{epochs} epochs of {steps_per_epoch} steps overflow a step count"))
            })
        };
        Ok(match self {
            ScheduleSpec::Constant => (Schedule::Constant, None),
            ScheduleSpec::Exponential { factor, epochs } => {
                (Schedule::Exponential { factor: *factor, steps: to_steps(*epochs)? }, None)
            }
            ScheduleSpec::Piecewise { changes } => {
                let mut boundaries = Vec::with_capacity(changes.len());
                let mut values = Vec::with_capacity(changes.len() + 1);
                values.push(base_lr);
                for &(epoch, rate) in changes {
                    boundaries.push(to_steps(epoch)?);
                    values.push(rate);
                }
                (Schedule::Piecewise { boundaries, values }, None)
            }
            ScheduleSpec::OneCycle { max_rate, momentum } => {
                if epochs == 0 {
                    return Err(Error::config(FLAG, "1cycle needs at least one epoch"));
                }
                let one = OneCycle::new(to_steps(epochs)?, *max_rate);
                (Schedule::OneCycle(if *momentum { one.with_momentum() } else { one }), None)
            }
            ScheduleSpec::Plateau { factor, patience } => {
                (Schedule::Constant, Some(ReduceOnPlateau::new(*factor, *patience)))
            }
        })
    }
}

impl core::str::FromStr for ScheduleSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        ScheduleSpec::parse(s)
    }
}

impl fmt::Display for ScheduleSpec {
    /// The `--schedule` syntax, which [`ScheduleSpec::parse`] reads back to an equal value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScheduleSpec::Constant => f.write_str("constant"),
            ScheduleSpec::Exponential { factor, epochs } => write!(f, "exponential:{factor}@{epochs}"),
            ScheduleSpec::Piecewise { changes } => {
                f.write_str("piecewise:")?;
                for (i, (epoch, rate)) in changes.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{epoch}={rate}")?;
                }
                Ok(())
            }
            ScheduleSpec::OneCycle { max_rate, momentum } => {
                write!(f, "1cycle:{max_rate}{}", if *momentum { ",momentum" } else { "" })
            }
            ScheduleSpec::Plateau { factor, patience } => {
                let d = ReduceOnPlateau::default();
                if *factor == d.factor && *patience == d.patience {
                    f.write_str("plateau")
                } else {
                    write!(f, "plateau:{factor}@{patience}")
                }
            }
        }
    }
}

/// At most 40 characters of `s`, for quoting user input in errors.
fn excerpt(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push_str("...");
    }
    out
}

/// An error about the whole `--schedule` value `s`.
fn bad(s: &str, reason: &str) -> Error {
    let quoted = if s.is_empty() { String::new() } else { alloc::format!("`{}`: ", excerpt(s)) };
    Error::config(FLAG, alloc::format!("{quoted}{reason}; accepted: {SYNTAX}"))
}

/// A number `text` (the spec's field `what`) accepted by `ok`, described as `accepted`.
fn parse_f32(s: &str, what: &str, text: &str, ok: impl Fn(f32) -> bool, accepted: &str) -> Result<f32> {
    match text.parse::<f32>() {
        Ok(v) if v.is_finite() && ok(v) => Ok(v),
        _ => Err(bad(s, &alloc::format!("{what} must be {accepted}, not `{}`", excerpt(text)))),
    }
}

/// A learning rate in `[MIN_SPEC_RATE, MAX_SPEC_RATE]`.
fn parse_rate(s: &str, what: &str, text: &str) -> Result<f32> {
    parse_f32(
        s,
        what,
        text,
        |v| (MIN_SPEC_RATE..=MAX_SPEC_RATE).contains(&v),
        &alloc::format!("a learning rate in [{MIN_SPEC_RATE:e}, {MAX_SPEC_RATE}]"),
    )
}

/// A whole number from 1 to `MAX_SPEC_EPOCHS`.
fn parse_count(s: &str, what: &str, text: &str) -> Result<u64> {
    match text.parse::<u64>() {
        Ok(v) if (1..=MAX_SPEC_EPOCHS).contains(&v) => Ok(v),
        _ => Err(bad(
            s,
            &alloc::format!("{what} must be a whole number from 1 to {MAX_SPEC_EPOCHS}, not `{}`", excerpt(text)),
        )),
    }
}
