//! Every activation's SIMD `forward` and `backward` against the scalar twins, over arbitrary
//! f32 slices (any length, so the vector tail is exercised; NaN, infinities, subnormals).
//!
//! Input: byte 0 picks the activation, byte 1 the alpha of leaky ReLU / ELU, and the rest is
//! read as little-endian `(x, dy)` f32 pairs.
//!
//! Nothing may panic. Where the input and the twin's result are finite, the kernels must agree
//! with the twins within the bounds of `tests/kernels.rs`: forward within 4 ULP or 1e-7
//! absolute, backward (`dy * f'(y)`) within 1e-6 relative to max(|twin|, 1).
#![no_main]

use libfuzzer_sys::fuzz_target;
use simdnn::kernels::{Activation, reference};

/// ULP distance between two floats (as in tests/kernels.rs).
fn ulps(a: f32, b: f32) -> u32 {
    let key = |x: f32| {
        let i = x.to_bits() as i32;
        if i < 0 { i32::MIN.wrapping_sub(i) } else { i }
    };
    (key(a) as i64 - key(b) as i64).unsigned_abs().min(u32::MAX as u64) as u32
}

fn check_backward(act: Activation, ys: &[f32], dys: &[f32]) {
    let mut got = dys.to_vec();
    act.backward(ys, &mut got);
    for ((&y, &dy), &g) in ys.iter().zip(dys).zip(&got) {
        let twin = dy * reference::activation_derivative_from_output(act, y);
        if y.is_finite() && dy.is_finite() && twin.is_finite() {
            assert!(
                (g - twin).abs() <= 1e-6 * twin.abs().max(1.0),
                "{act} backward: y = {y:e}, dy = {dy:e}: {g:e}, twin {twin:e}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [which, alpha, rest @ ..] = data else { return };
    // Positive, finite alphas in (0, 4], as `Activation::parse` and the model file accept.
    let alpha = (*alpha as f32 + 1.0) / 64.0;
    let act = match which % 8 {
        0 => Activation::Identity,
        1 => Activation::Relu,
        2 => Activation::LeakyRelu { alpha },
        3 => Activation::Elu { alpha },
        4 => Activation::Selu,
        5 => Activation::Tanh,
        6 => Activation::Logistic,
        _ => Activation::Softmax,
    };
    let floats: Vec<f32> = rest.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let xs: Vec<f32> = floats.iter().step_by(2).copied().collect();
    let dys: Vec<f32> =
        floats.iter().skip(1).step_by(2).copied().chain(core::iter::repeat(1.0)).take(xs.len()).collect();

    let mut ys = xs.clone();
    act.forward(&mut ys);
    for (&x, &y) in xs.iter().zip(&ys) {
        let r = reference::activation(act, x);
        if x.is_finite() && r.is_finite() {
            let u = ulps(y, r);
            assert!(u <= 4 || (y - r).abs() <= 1e-7, "{act}({x:e}) = {y:e}, reference {r:e} ({u} ulp)");
        }
    }
    // Derivatives at the outputs the forward pass produced, and at arbitrary "outputs".
    check_backward(act, &ys, &dys);
    check_backward(act, &xs, &dys);
});
