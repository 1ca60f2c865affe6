//! Timing for `simdnn bench`: medians over repeated calls, so the numbers mean the same thing
//! as criterion's and survive a noisy shared machine.

use std::time::Instant;

use crate::kernels::gemm::{Epilogue, MatMut, MatRef, gemm};
use crate::rng::{normal, seeded};

/// The median time of one call and the rate it implies.
#[derive(Clone, Copy, Debug)]
pub struct GemmTiming {
    pub gflops: f64,
    pub us_per_call: f64,
}

/// Times `C = A B` for row-major `A` (`m x k`) and `B` (`k x n`), `op` transposing either,
/// on the current rayon pool. Runs batches of calls for about `seconds` and reports the
/// median batch.
pub fn gemm_timing(m: usize, k: usize, n: usize, transpose_a: bool, transpose_b: bool, seconds: f64) -> GemmTiming {
    let mut rng = seeded(0, 0);
    let a: Vec<f32> = (0..m * k).map(|_| normal(&mut rng) as f32).collect();
    let b: Vec<f32> = (0..k * n).map(|_| normal(&mut rng) as f32).collect();
    let mut c = vec![0f32; m * n];
    let a_view = if transpose_a { MatRef::new(&a, k, m).t() } else { MatRef::new(&a, m, k) };
    let b_view = if transpose_b { MatRef::new(&b, n, k).t() } else { MatRef::new(&b, k, n) };
    let mut call = || gemm(1.0, a_view, b_view, 0.0, MatMut::new(&mut c, m, n), Epilogue::NONE);
    // Size a batch to about 2 ms so timer overhead is negligible.
    let start = Instant::now();
    call();
    let mut reps = 1usize;
    while start.elapsed().as_secs_f64() < 0.002 {
        call();
        reps += 1;
    }
    let batch = reps.max(1);
    let mut samples = Vec::new();
    let begin = Instant::now();
    while samples.len() < 5 || (begin.elapsed().as_secs_f64() < seconds && samples.len() < 1000) {
        let t = Instant::now();
        for _ in 0..batch {
            call();
        }
        samples.push(t.elapsed().as_secs_f64() / batch as f64);
    }
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    GemmTiming { gflops: 2.0 * (m * n * k) as f64 / median / 1e9, us_per_call: median * 1e6 }
}
