//! Scalar twins of every kernel: the specification. Written for clarity, not speed; tests,
//! benches and fuzz targets compare the SIMD kernels against these.

use super::activation::{Activation, SELU_ALPHA, SELU_SCALE};
#[cfg(feature = "alloc")]
use super::gemm::{MatMut, MatRef};
use super::int8::U8Quant;

/// `f(x)` for one value.
pub fn activation(act: Activation, x: f32) -> f32 {
    match act {
        Activation::Identity | Activation::Softmax => x,
        Activation::Relu => x.max(0.0),
        Activation::LeakyRelu { alpha } => {
            if x < 0.0 {
                alpha * x
            } else {
                x
            }
        }
        Activation::Elu { alpha } => {
            if x < 0.0 {
                alpha * libm::expm1f(x)
            } else {
                x
            }
        }
        Activation::Selu => SELU_SCALE * if x < 0.0 { SELU_ALPHA * libm::expm1f(x) } else { x },
        Activation::Tanh => libm::tanhf(x),
        Activation::Logistic => 1.0 / (1.0 + libm::expf(-x)),
    }
}

/// `f'(x)` computed from `y = f(x)`.
pub fn activation_derivative_from_output(act: Activation, y: f32) -> f32 {
    match act {
        Activation::Identity | Activation::Softmax => 1.0,
        Activation::Relu => {
            if y > 0.0 {
                1.0
            } else {
                0.0
            }
        }
        Activation::LeakyRelu { alpha } => {
            if y < 0.0 {
                alpha
            } else {
                1.0
            }
        }
        Activation::Elu { alpha } => {
            if y < 0.0 {
                y + alpha
            } else {
                1.0
            }
        }
        Activation::Selu => {
            if y < 0.0 {
                y + SELU_SCALE * SELU_ALPHA
            } else {
                SELU_SCALE
            }
        }
        Activation::Tanh => 1.0 - y * y,
        Activation::Logistic => y * (1.0 - y),
    }
}

/// The twin of [`dot`](super::vector::dot), in f64.
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// `C = act(alpha * op(A) op(B) + beta * C + bias)`, by the textbook triple loop with an f64
/// accumulator. With `beta == 0`, C is not read (NaN in C does not leak).
#[cfg(feature = "alloc")]
pub fn gemm(
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: &mut MatMut<'_>,
    bias: Option<&[f32]>,
    act: Activation,
) {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    assert_eq!(b.rows(), k, "reference gemm: inner dimensions differ");
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f64;
            for p in 0..k {
                acc += a.at(i, p) as f64 * b.at(p, j) as f64;
            }
            let mut v = alpha * acc as f32;
            if beta != 0.0 {
                v += beta * c.at(i, j);
            }
            if let Some(bias) = bias {
                v += bias[j];
            }
            *c.at_mut(i, j) = activation(act, v);
        }
    }
}

/// The twin of [`gemm_bf16`](super::gemm_bf16::gemm_bf16): A and B rounded to bf16, each
/// element summed in one f32 accumulator over pairs of depths, `acc = (acc + a(i, 2p+1)
/// b(2p+1, j)) + a(i, 2p) b(2p, j)` (an odd last depth paired with zero), then
/// `act(beta C + alpha acc + bias)` with `beta C` fused into the sum. C is not read when
/// `beta == 0`.
#[cfg(feature = "alloc")]
pub fn gemm_bf16(
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: &mut MatMut<'_>,
    bias: Option<&[f32]>,
    act: Activation,
) {
    let (m, k, n) = (a.rows(), a.cols(), b.cols());
    assert_eq!(b.rows(), k, "reference gemm_bf16: inner dimensions differ");
    let bf16 = |x: f32| super::quant::f32_from_bf16(super::quant::bf16_from_f32(x));
    // The operands rounded once, row-major (the fuzz target runs this on every input).
    let a_bf16: alloc::vec::Vec<f32> = (0..m * k).map(|e| bf16(a.at(e / k, e % k))).collect();
    let b_bf16: alloc::vec::Vec<f32> = (0..k * n).map(|e| bf16(b.at(e / n, e % n))).collect();
    for i in 0..m {
        for j in 0..n {
            let (a, b) = (|p: usize| a_bf16[i * k + p], |p: usize| b_bf16[p * n + j]);
            let mut acc = 0f32;
            for p in 0..k.div_ceil(2) {
                let (even, odd) = (2 * p, 2 * p + 1);
                if odd < k {
                    acc += a(odd) * b(odd);
                }
                acc += a(even) * b(even);
            }
            let mut v = alpha * acc;
            if beta != 0.0 {
                v = libm::fmaf(beta, c.at(i, j), v);
            }
            if let Some(bias) = bias {
                v += bias[j];
            }
            *c.at_mut(i, j) = activation(act, v);
        }
    }
}

/// Row-wise softmax of `logits` (`rows x n`) fused with sparse cross-entropy, the twin of
/// `softmax::softmax_cross_entropy`: writes the probabilities into `probs` and returns the
/// summed loss and how many rows' arg-max equals their label. In f64 for a precise reference.
///
/// A row's arg-max is the index of its first largest value; NaN never wins, and a row with no
/// value above -inf has arg-max 0. Its loss is `log(sum exp(x - max)) + (max - x[label])`:
/// written this way, a large common offset of the logits (1e30, say) cancels exactly instead
/// of swallowing the `log`.
///
/// Non-finite logits: -inf is a masked class (probability 0; an infinite loss if it is the
/// label); a row holding NaN or +inf, or only -inf, has NaN probabilities and a NaN loss.
pub fn softmax_cross_entropy(logits: &[f32], n: usize, labels: &[u8], probs: &mut [f32]) -> (f64, usize) {
    let mut total = 0f64;
    let mut correct = 0;
    for (r, (row, out)) in logits.chunks_exact(n).zip(probs.chunks_exact_mut(n)).enumerate() {
        let (mut max, mut argmax) = (f32::NEG_INFINITY, 0);
        for (j, &x) in row.iter().enumerate() {
            if x > max {
                (max, argmax) = (x, j);
            }
        }
        let label = labels[r] as usize;
        if argmax == label {
            correct += 1;
        }
        let max = max as f64;
        let sum: f64 = row.iter().map(|&x| libm::exp(x as f64 - max)).sum();
        for (o, &x) in out.iter_mut().zip(row) {
            *o = (libm::exp(x as f64 - max) / sum) as f32;
        }
        total += libm::log(sum) + (max - row[label] as f64);
    }
    (total, correct)
}

/// `acc[j] = sum_i x[i] * q[i][j]` for `[x.len(), n_out]` row-major int8 weights (not
/// packed), in i64 and then checked to fit an i32.
#[cfg(feature = "alloc")]
pub fn gemv_u8_i8(x: &[u8], q: &[i8], n_out: usize) -> alloc::vec::Vec<i32> {
    (0..n_out)
        .map(|j| {
            let sum: i64 = x.iter().enumerate().map(|(i, &xi)| xi as i64 * q[i * n_out + j] as i64).sum();
            i32::try_from(sum).expect("the reference sum fits an i32")
        })
        .collect()
}

/// `q = clamp(round_ties_even(x * (1 / scale) + zero_point), 0, 255)`, NaN to 0, with the
/// f32 operations in this order (no fused multiply-add).
pub fn quantize_u8(x: &[f32], quant: U8Quant, out: &mut [u8]) {
    let inv = 1.0 / quant.scale;
    for (o, &x) in out.iter_mut().zip(x) {
        let v = x * inv + quant.zero_point as f32;
        let v = if v >= 0.0 { v.min(255.0) } else { 0.0 };
        *o = libm::rintf(v) as u8;
    }
}

/// `y[j] = sum_i x[i] w[i][j]` for bf16 bits `x` and row-major bf16 bits `w`, summed as
/// `vdpbf16ps` does: per pair of inputs, `y = (y + x[2p+1] w[2p+1][j]) + x[2p] w[2p][j]` in
/// f32 (each product is exact), an odd last input paired with zero.
#[cfg(feature = "alloc")]
pub fn gemv_bf16(x: &[u16], w: &[u16], n_out: usize) -> alloc::vec::Vec<f32> {
    let f = super::quant::f32_from_bf16;
    (0..n_out)
        .map(|j| {
            let mut acc = 0f32;
            for p in 0..x.len().div_ceil(2) {
                let (even, odd) = (2 * p, 2 * p + 1);
                let (x_odd, w_odd) = if odd < x.len() { (f(x[odd]), f(w[odd * n_out + j])) } else { (0.0, 0.0) };
                acc += x_odd * w_odd;
                acc += f(x[even]) * f(w[even * n_out + j]);
            }
            acc
        })
        .collect()
}
