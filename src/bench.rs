//! Timing for `simdnn bench`: medians over repeated calls, so the numbers mean the same thing
//! as criterion's and survive a noisy shared machine.

use std::hint::spin_loop;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::kernels::Precision;
use crate::kernels::gemm::{Blocking, Epilogue, MatMut, MatRef};
use crate::rng::{normal, seeded};

/// The median time of one call and the rate it implies.
#[derive(Clone, Copy, Debug)]
pub struct GemmTiming {
    pub gflops: f64,
    pub us_per_call: f64,
}

/// Times `C = A B` for row-major `A` (`m x k`) and `B` (`k x n`), `op` transposing either,
/// in `precision` (f32 on the current rayon pool, bf16 on the calling thread). Runs batches
/// of calls for about `seconds` and reports the median batch.
pub fn gemm_timing(
    m: usize,
    k: usize,
    n: usize,
    transpose_a: bool,
    transpose_b: bool,
    precision: Precision,
    seconds: f64,
) -> GemmTiming {
    let mut rng = seeded(0, 0);
    let a: Vec<f32> = (0..m * k).map(|_| normal(&mut rng) as f32).collect();
    let b: Vec<f32> = (0..k * n).map(|_| normal(&mut rng) as f32).collect();
    let mut c = vec![0f32; m * n];
    let a_view = if transpose_a { MatRef::new(&a, k, m).t() } else { MatRef::new(&a, m, k) };
    let b_view = if transpose_b { MatRef::new(&b, n, k).t() } else { MatRef::new(&b, k, n) };
    let mut call =
        || precision.gemm(&Blocking::DEFAULT, 1.0, a_view, b_view, 0.0, MatMut::new(&mut c, m, n), Epilogue::NONE);
    // Size a batch to about 2 ms so timer overhead is negligible.
    let start = Instant::now();
    call();
    let mut reps = 1usize;
    while start.elapsed().as_secs_f64() < 0.002 {
        call();
        reps += 1;
    }
    let batch = reps.max(1);
    let median = median_sample(seconds, || {
        let t = Instant::now();
        for _ in 0..batch {
            call();
        }
        t.elapsed().as_secs_f64() / batch as f64
    });
    GemmTiming { gflops: 2.0 * (m * n * k) as f64 / median / 1e9, us_per_call: median * 1e6 }
}

/// The median time for one cache line to travel from one thread to another and back, each
/// thread spinning until the other has written it: the latency every fork, join and shared
/// gradient of a training step pays. On the project's 2-vCPU VMs it is about 50 ns while the
/// host keeps both vCPUs on one die and 300 ns or more while it places them on different dies,
/// where training runs up to 1.5 x slower (BENCHMARKS.md, Zen 4 section); it changes within
/// seconds, so measure it next to the runs it explains. Runs for about `seconds`, at least
/// five samples of [`ROUND_TRIPS`].
pub fn core_round_trip_ns(seconds: f64) -> f64 {
    /// The line the threads hand back and forth, alone in its cache line (and the next, which
    /// adjacent-line prefetchers pull in with it).
    #[repr(align(128))]
    struct Line(AtomicU64);
    /// Ends the echoing thread.
    const STOP: u64 = u64::MAX;
    let line = Line(AtomicU64::new(0));
    std::thread::scope(|scope| {
        // Answers every odd value with the next even one.
        scope.spawn(|| {
            let mut seen = 0;
            loop {
                let v = wait_for_change(&line.0, seen);
                if v == STOP {
                    return;
                }
                line.0.store(v + 1, Ordering::Release);
                seen = v + 1;
            }
        });
        let mut sent = 0u64;
        let median = median_sample(seconds, || {
            let t = Instant::now();
            for _ in 0..ROUND_TRIPS {
                line.0.store(sent + 1, Ordering::Release);
                sent = wait_for_change(&line.0, sent + 1);
            }
            t.elapsed().as_secs_f64() * 1e9 / ROUND_TRIPS as f64
        });
        line.0.store(STOP, Ordering::Release);
        median
    })
}

/// The median of `sample()` taken for about `seconds`: at least 5 samples, at most 1000.
fn median_sample(seconds: f64, mut sample: impl FnMut() -> f64) -> f64 {
    let mut samples = Vec::new();
    let begin = Instant::now();
    while samples.len() < 5 || (begin.elapsed().as_secs_f64() < seconds && samples.len() < 1000) {
        samples.push(sample());
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Round trips per sample of [`core_round_trip_ns`].
pub const ROUND_TRIPS: usize = 20_000;

/// Spins until `line` holds something other than `old`, and returns it. Yields the core to
/// the OS after a while, so that the other thread gets to run on a machine with one core.
fn wait_for_change(line: &AtomicU64, old: u64) -> u64 {
    let mut spins = 0u32;
    loop {
        let v = line.load(Ordering::Acquire);
        if v != old {
            return v;
        }
        spins += 1;
        if spins < 1_000 {
            spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}
