//! Small vectorised helpers used across layers: the fused activation-derivative + bias
//! gradient of the dense backward pass, and byte-to-float conversion for input batches.

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
    for (y_row, dy_row) in ys.chunks_exact(n).zip(dys.chunks_exact_mut(n)) {
        for ((y, dy), db) in y_row.chunks(LANES).zip(dy_row.chunks_mut(LANES)).zip(bias_grad.chunks_mut(LANES)) {
            let dz = load_partial(dy, 0.0) * act.derivative_from_output_vec(load_partial(y, 0.0));
            store_partial(dy, dz);
            store_partial(db, load_partial(db, 0.0) + dz);
        }
    }
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
    for (((d, &s), &m), &is) in dst.iter_mut().zip(src).zip(mean).zip(inv_std) {
        *d = (s as f32 - m) * is;
    }
}
