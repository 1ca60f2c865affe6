//! `gemm_with` against the scalar twin `reference::gemm` over small shapes, transposes,
//! row padding, alpha/beta, bias, every activation, tiny block sizes and packing modes.
//!
//! Row padding of A, B and C is filled with NaN: a kernel that reads outside its views
//! poisons the result, and one that writes outside C's view changes the padding.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use simdnn::kernels::gemm::{Blocking, Epilogue, MR, MatMut, MatRef, NR, Packing, gemm_with};
use simdnn::kernels::{Activation, reference};
use simdnn::rng::{Xoshiro, normal, seeded};

#[derive(Arbitrary, Debug)]
struct Input {
    /// Shapes: each taken mod 71 (0..=70).
    m: u8,
    k: u8,
    n: u8,
    /// A stored `k x m` and read through `.t()`; likewise B stored `n x k`.
    transpose_a: bool,
    transpose_b: bool,
    /// Extra floats at the end of each stored row (mod 4), filled with NaN.
    pad_a: u8,
    pad_b: u8,
    pad_c: u8,
    /// Indices into `SCALARS`.
    alpha: u8,
    beta: u8,
    /// Index into `ACTIVATIONS`.
    activation: u8,
    bias: bool,
    /// mc = MR * (1 + mc % 4), kc = 1 + kc % 40, nc = NR * (1 + nc % 3).
    mc: u8,
    kc: u8,
    nc: u8,
    /// Indices into `PACKINGS`.
    pack_a: u8,
    pack_b: u8,
    /// Let the driver split C across rayon's threads (`parallel_min_flops = 0`).
    parallel: bool,
    /// Magnitude of the entries: `MAGNITUDES[magnitude % 4]` times a standard normal.
    magnitude: u8,
    seed: u64,
}

const SCALARS: [f32; 4] = [0.0, 1.0, 0.5, -2.0];
const MAGNITUDES: [f32; 4] = [1.0, 0.01, 8.0, 100.0];
const PACKINGS: [Packing; 3] = [Packing::Auto, Packing::Always, Packing::Never];
const ACTIVATIONS: [Activation; 9] = [
    Activation::Identity,
    Activation::Relu,
    Activation::LeakyRelu { alpha: 0.2 },
    Activation::ELU,
    Activation::Elu { alpha: 0.5 },
    Activation::Selu,
    Activation::Tanh,
    Activation::Logistic,
    // Row-wise: passes through the GEMM epilogue unchanged.
    Activation::Softmax,
];

/// A bound on |f(x) - f(y)| / |x - y| (the slope of SELU's negative branch is at most
/// scale * alpha = 1.76; ELU's is at most its alpha).
fn lipschitz(act: Activation) -> f64 {
    match act {
        Activation::Selu => 1.76,
        Activation::Elu { alpha } | Activation::LeakyRelu { alpha } => (alpha as f64).max(1.0),
        _ => 1.0,
    }
}

fuzz_target!(|input: Input| {
    let (m, k, n) = (input.m as usize % 71, input.k as usize % 71, input.n as usize % 71);
    let (pad_a, pad_b, pad_c) = (input.pad_a as usize % 4, input.pad_b as usize % 4, input.pad_c as usize % 4);
    let alpha = SCALARS[input.alpha as usize % SCALARS.len()];
    let beta = SCALARS[input.beta as usize % SCALARS.len()];
    let act = ACTIVATIONS[input.activation as usize % ACTIVATIONS.len()];
    let magnitude = MAGNITUDES[input.magnitude as usize % MAGNITUDES.len()];
    let blocking = Blocking {
        mc: MR * (1 + input.mc as usize % 4),
        kc: 1 + input.kc as usize % 40,
        nc: NR * (1 + input.nc as usize % 3),
        pack_a: PACKINGS[input.pack_a as usize % 3],
        pack_b: PACKINGS[input.pack_b as usize % 3],
        parallel_min_flops: if input.parallel { 0 } else { usize::MAX },
    };

    let mut rng = seeded(input.seed, 0);
    // `rows x cols` stored with `pad` NaNs after each row.
    let fill = |rows: usize, cols: usize, pad: usize, rng: &mut Xoshiro| -> Vec<f32> {
        let mut v = vec![f32::NAN; rows * (cols + pad)];
        for r in 0..rows {
            for x in &mut v[r * (cols + pad)..r * (cols + pad) + cols] {
                *x = magnitude * normal(rng) as f32;
            }
        }
        v
    };
    let a_data = if input.transpose_a { fill(k, m, pad_a, &mut rng) } else { fill(m, k, pad_a, &mut rng) };
    let b_data = if input.transpose_b { fill(n, k, pad_b, &mut rng) } else { fill(k, n, pad_b, &mut rng) };
    let a = if input.transpose_a {
        MatRef::strided(&a_data, k, m, m + pad_a, 1).t()
    } else {
        MatRef::strided(&a_data, m, k, k + pad_a, 1)
    };
    let b = if input.transpose_b {
        MatRef::strided(&b_data, n, k, k + pad_b, 1).t()
    } else {
        MatRef::strided(&b_data, k, n, n + pad_b, 1)
    };
    let bias_data: Vec<f32> = (0..n).map(|_| magnitude * normal(&mut rng) as f32).collect();
    let bias = input.bias.then_some(&bias_data[..]);
    let ldc = n + pad_c;
    // beta == 0: C is write-only, so its NaNs must not reach the result.
    let mut c0 = fill(m, n, pad_c, &mut rng);
    if beta == 0.0 {
        c0.fill(f32::NAN);
    }

    let mut expected = c0.clone();
    reference::gemm(alpha, a, b, beta, &mut MatMut::strided(&mut expected, m, n, ldc), bias, act);
    let mut got = c0.clone();
    gemm_with(&blocking, alpha, a, b, beta, MatMut::strided(&mut got, m, n, ldc), Epilogue { bias, activation: act });

    let eps = f32::EPSILON as f64;
    for i in 0..m {
        // The padding after each row of C is not C's: it must be left alone.
        for j in n..ldc {
            assert!(
                got[i * ldc + j].to_bits() == c0[i * ldc + j].to_bits(),
                "C's padding at ({i}, {j}) was overwritten: {}",
                got[i * ldc + j]
            );
        }
        for j in 0..n {
            let abs: f64 = (0..k).map(|p| (a.at(i, p) as f64 * b.at(p, j) as f64).abs()).sum();
            let c_term = if beta == 0.0 { 0.0 } else { (beta as f64 * c0[i * ldc + j] as f64).abs() };
            let bias_term = bias.map_or(0.0, |b| b[j].abs() as f64);
            let scale = alpha.abs() as f64 * abs + c_term + bias_term + 1.0;
            let (e, g) = (expected[i * ldc + j], got[i * ldc + j]);
            // The product's rounding, carried through the activation, plus the activation's
            // own error (4 ULP or 1e-7, as tests/kernels.rs allows).
            let tol = lipschitz(act) * 4.0 * (k as f64 + 2.0) * eps * scale + 4.0 * eps * (e as f64).abs() + 1e-7;
            assert!(
                (e as f64 - g as f64).abs() <= tol,
                "C[{i},{j}] = {g}, reference {e} (|err| {} > tol {tol}); m={m} k={k} n={n} alpha={alpha} \
                 beta={beta} {act} bias={} {blocking:?}",
                (e as f64 - g as f64).abs(),
                input.bias
            );
        }
    }
});
