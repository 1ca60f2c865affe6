//! Small vectorised helpers used across layers: the fused activation-derivative + bias
//! gradient of the dense backward pass, a dot product, and byte-to-float conversion for
//! input batches.

use wide::f32x16;

use super::activation::Activation;
use super::simd::{LANES, load_partial, store_partial};

/// For each `n`-wide row: `dy *= f'(y)` (in place, giving the pre-activation gradient `dz`)
/// and `bias_grad += dz` (column sums). One pass over the batch instead of two.
pub fn activation_backward_with_bias_grad(
    act: Activation,
    ys: &[f32],
    dys: &mut [f32],
    n: usize,
    bias_grad: &mut [f32],
) {
    assert!(
        ys.len() == dys.len() && bias_grad.len() == n && dys.len().is_multiple_of(n.max(1)),
        "activation backward: shapes disagree"
    );
    let full = n - n % LANES;
    for (y_row, dy_row) in ys.chunks_exact(n).zip(dys.chunks_exact_mut(n)) {
        let chunks = y_row[..full].chunks_exact(LANES).zip(dy_row[..full].chunks_exact_mut(LANES));
        for ((y, dy), db) in chunks.zip(bias_grad[..full].chunks_exact_mut(LANES)) {
            let y = f32x16::new(y.try_into().expect("16 lanes"));
            let dz = f32x16::new((&*dy).try_into().expect("16 lanes")) * act.derivative_from_output_vec(y);
            dy.copy_from_slice(&dz.to_array());
            let sum = f32x16::new((&*db).try_into().expect("16 lanes")) + dz;
            db.copy_from_slice(&sum.to_array());
        }
        if full < n {
            let dz =
                load_partial(&dy_row[full..], 0.0) * act.derivative_from_output_vec(load_partial(&y_row[full..], 0.0));
            store_partial(&mut dy_row[full..], dz);
            let sum = load_partial(&bias_grad[full..], 0.0) + dz;
            store_partial(&mut bias_grad[full..], sum);
        }
    }
}

/// `sum_i a[i] b[i]`: 16 partial sums (element `i` in lane `i % 16`, the last partial
/// vector zero-padded), then the lanes added, always in the same order.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: lengths differ");
    let full = a.len() - a.len() % LANES;
    let mut sum = f32x16::ZERO;
    for (a, b) in a[..full].chunks_exact(LANES).zip(b[..full].chunks_exact(LANES)) {
        let (a, b) = (f32x16::new(a.try_into().expect("16 lanes")), f32x16::new(b.try_into().expect("16 lanes")));
        sum = a.mul_add(b, sum);
    }
    if full < a.len() {
        sum = load_partial(&a[full..], 0.0).mul_add(load_partial(&b[full..], 0.0), sum);
    }
    sum.reduce_add()
}

/// `dst[i] = src[i] as f32 * scale` (pixels to [0, 1] with scale 1/255).
pub fn bytes_to_f32_scaled(src: &[u8], dst: &mut [f32], scale: f32) {
    assert_eq!(src.len(), dst.len(), "byte conversion: lengths differ");
    let mut s = src.chunks_exact(LANES);
    let mut d = dst.chunks_exact_mut(LANES);
    for (s, d) in (&mut s).zip(&mut d) {
        let v = f32x16::new(core::array::from_fn(|i| s[i] as f32));
        d.copy_from_slice(&(v * f32x16::splat(scale)).to_array());
    }
    for (s, d) in s.remainder().iter().zip(d.into_remainder()) {
        *d = *s as f32 * scale;
    }
}

/// `dst[i] = (src[i] as f32 - mean[i]) * inv_std[i]` (per-feature standardisation).
pub fn bytes_to_f32_standardised(src: &[u8], dst: &mut [f32], mean: &[f32], inv_std: &[f32]) {
    assert!(
        src.len() == dst.len() && mean.len() == dst.len() && inv_std.len() == dst.len(),
        "standardisation: lengths differ"
    );
    // Same two roundings per element as the scalar form, 16 lanes at a time.
    let mut d = dst.chunks_exact_mut(LANES);
    let (mut s, mut m, mut is) = (src.chunks_exact(LANES), mean.chunks_exact(LANES), inv_std.chunks_exact(LANES));
    for (((d, s), m), is) in (&mut d).zip(&mut s).zip(&mut m).zip(&mut is) {
        let v = f32x16::new(core::array::from_fn(|i| s[i] as f32));
        let (m, is) = (f32x16::new(m.try_into().expect("16 lanes")), f32x16::new(is.try_into().expect("16 lanes")));
        d.copy_from_slice(&((v - m) * is).to_array());
    }
    let tails = d.into_remainder().iter_mut().zip(s.remainder()).zip(m.remainder()).zip(is.remainder());
    for (((d, &s), &m), &is) in tails {
        *d = (s as f32 - m) * is;
    }
}
