//! f32 GEMM throughput at the shapes the 8a model runs (CIFAR-10, 3072 -> 20 x 100 ELU ->
//! 10, batch 32), plus one large square product. Every group reports `2 m n k` elements per
//! iteration, so criterion's "elem/s" is the flop rate. Record the numbers (and OpenBLAS's
//! at the same shapes) in BENCHMARKS.md.
//!
//! Groups and the question each answers (products are `C (m x n) = A (m x k) B (k x n)`):
//! - `gemm/l1_fwd_32x3072x100`: the first layer's forward `x W` (batch 32, 3072 inputs,
//!   100 units). How close to OpenBLAS is the kernel on a short, deep product where B (1.2 MB)
//!   is streamed once?
//! - `gemm/l1_wgrad_3072x32x100_at`: the first layer's weight gradient `x^T dz`, A read
//!   transposed in place (`MatRef::new(&x, 32, 3072).t()`). Does the strided A path cost
//!   much against a plain one of the same flops (compare with `l1_fwd`)?
//! - `gemm/hidden_32x100x100`: a hidden layer's forward. How much does the call overhead and
//!   blocking cost on a product of only 640 kflop, and how far ahead of the scalar twin
//!   (`reference_scalar`, the textbook triple loop) is the SIMD kernel?
//! - `gemm/l1_dgrad_32x100x3072_bt`: an input gradient `dz W^T` with B read transposed (so
//!   packed). What does packing a transposed B cost at the widest layer shape?
//! - `gemm/square_1024`: 1024^3, where the blocking and packing pay off fully. What is the
//!   kernel's peak, and how well does it scale from one thread to two?
//!
//! Inside each group, `simd_default_pool` runs on rayon's global pool (one thread per
//! core), `simd_1_thread` and `simd_2_threads` inside dedicated pools (`pool.install`): the
//! ratio of the last two is the parallel speed-up (products under
//! `Blocking::DEFAULT.parallel_min_flops` run on one thread whatever the pool).
//! `bf16_1_thread` is the mixed-precision GEMM (`gemm_bf16`, operands rounded to bf16 as
//! they are packed, f32 sums; serial) on the same operands, for the shapes whose B is read in
//! place: against `simd_1_thread`, what do `vdpbf16ps`'s 32 multiply-adds per instruction
//! gain once the rounding pass is paid?
//!
//! Times default to a 1 s warm-up and 3 s of measurement per benchmark (about 1.5 min for
//! the file); the command line's `--warm-up-time`, `--measurement-time` and `--sample-size`
//! override them.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use simdnn::kernels::Activation;
use simdnn::kernels::gemm::{Epilogue, MatMut, MatRef, gemm};
use simdnn::kernels::gemm_bf16::gemm_bf16;
use simdnn::kernels::reference;
use simdnn::rng::{normal, seeded};

fn random(len: usize, stream: u64) -> Vec<f32> {
    let mut rng = seeded(7, stream);
    (0..len).map(|_| normal(&mut rng) as f32).collect()
}

/// One benchmarked product: shape, and which operand is read transposed.
struct Shape {
    name: &'static str,
    m: usize,
    k: usize,
    n: usize,
    /// A is stored `k x m` and read through `.t()`.
    transpose_a: bool,
    /// B is stored `n x k` and read through `.t()`.
    transpose_b: bool,
    /// Also time the scalar reference (slow: only for small shapes).
    with_reference: bool,
    /// Samples per benchmark; `None` keeps criterion's default (100).
    sample_size: Option<usize>,
}

const SHAPES: [Shape; 5] = [
    Shape {
        name: "l1_fwd_32x3072x100",
        m: 32,
        k: 3072,
        n: 100,
        transpose_a: false,
        transpose_b: false,
        with_reference: false,
        sample_size: None,
    },
    Shape {
        name: "l1_wgrad_3072x32x100_at",
        m: 3072,
        k: 32,
        n: 100,
        transpose_a: true,
        transpose_b: false,
        with_reference: false,
        sample_size: None,
    },
    Shape {
        name: "hidden_32x100x100",
        m: 32,
        k: 100,
        n: 100,
        transpose_a: false,
        transpose_b: false,
        with_reference: true,
        sample_size: None,
    },
    Shape {
        name: "l1_dgrad_32x100x3072_bt",
        m: 32,
        k: 100,
        n: 3072,
        transpose_a: false,
        transpose_b: true,
        with_reference: false,
        sample_size: None,
    },
    Shape {
        name: "square_1024",
        m: 1024,
        k: 1024,
        n: 1024,
        transpose_a: false,
        transpose_b: false,
        with_reference: false,
        // About 2 Gflop per call: 10 samples keep the group within its time budget.
        sample_size: Some(10),
    },
];

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap_or_else(|e| panic!("cannot build a {threads}-thread rayon pool: {e}"))
}

fn bench_gemm(c: &mut Criterion) {
    let pools = [("simd_1_thread", pool(1)), ("simd_2_threads", pool(2))];
    for shape in &SHAPES {
        let Shape { m, k, n, transpose_a, transpose_b, .. } = *shape;
        let a_data = random(m * k, 1);
        let b_data = random(k * n, 2);
        let a = if transpose_a { MatRef::new(&a_data, k, m).t() } else { MatRef::new(&a_data, m, k) };
        let b = if transpose_b { MatRef::new(&b_data, n, k).t() } else { MatRef::new(&b_data, k, n) };
        let mut c_data = vec![0f32; m * n];

        let mut group = c.benchmark_group(format!("gemm/{}", shape.name));
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        if let Some(samples) = shape.sample_size {
            group.sample_size(samples);
        }
        group.bench_function("simd_default_pool", |bench| {
            bench.iter(|| {
                gemm(1.0, black_box(a), black_box(b), 0.0, MatMut::new(&mut c_data, m, n), Epilogue::NONE);
                black_box(&mut c_data);
            })
        });
        for (name, pool) in &pools {
            group.bench_function(*name, |bench| {
                pool.install(|| {
                    bench.iter(|| {
                        gemm(1.0, black_box(a), black_box(b), 0.0, MatMut::new(&mut c_data, m, n), Epilogue::NONE);
                        black_box(&mut c_data);
                    })
                })
            });
        }
        if !transpose_b {
            group.bench_function("bf16_1_thread", |bench| {
                bench.iter(|| {
                    gemm_bf16(1.0, black_box(a), black_box(b), 0.0, MatMut::new(&mut c_data, m, n), Epilogue::NONE);
                    black_box(&mut c_data);
                })
            });
        }
        if shape.with_reference {
            group.bench_function("reference_scalar", |bench| {
                bench.iter(|| {
                    let mut c_view = MatMut::new(&mut c_data, m, n);
                    reference::gemm(1.0, black_box(a), black_box(b), 0.0, &mut c_view, None, Activation::Identity);
                    black_box(&mut c_data);
                })
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench_gemm
}
criterion_main!(benches);
