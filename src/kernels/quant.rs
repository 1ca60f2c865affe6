//! Weight quantisation for deployment: bf16 (the top half of an f32, rounded to nearest
//! even) and int8 with one symmetric scale per output channel (per column of a dense
//! layer's `[n_in, n_out]` weights), as TensorFlow Lite and PyTorch quantise weights.

#[cfg(feature = "alloc")]
use alloc::vec::Vec;

/// f32 to bf16 bits, rounding to nearest even (NaN stays NaN).
pub fn bf16_from_f32(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

/// bf16 bits to f32 (exact).
pub fn f32_from_bf16(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// Per-column symmetric int8: `w[i][j] ~= q[i][j] * scale[j]` with `scale[j] = max_i
/// |w[i][j]| / 127` (a zero column gets scale 1 and zeros). Returns `(scales, q)`.
#[cfg(feature = "alloc")]
pub fn quantize_per_column(w: &[f32], n_in: usize, n_out: usize) -> (Vec<f32>, Vec<i8>) {
    assert_eq!(w.len(), n_in * n_out, "quantize: weights are not {n_in} x {n_out}");
    let mut max = alloc::vec![0f32; n_out];
    for row in w.chunks_exact(n_out) {
        for (m, &v) in max.iter_mut().zip(row) {
            *m = m.max(v.abs());
        }
    }
    let scales: Vec<f32> = max.iter().map(|&m| if m > 0.0 && m.is_finite() { m / 127.0 } else { 1.0 }).collect();
    let q = w
        .chunks_exact(n_out)
        .flat_map(|row| row.iter().zip(&scales).map(|(&v, &s)| libm::roundf(v / s).clamp(-127.0, 127.0) as i8))
        .collect();
    (scales, q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounds_to_nearest_even_and_back_exactly() {
        for x in [0.0f32, 1.0, -2.5, 1.0 + 1.0 / 256.0, 1.234_567_8, 1e-30, -1e30] {
            let back = f32_from_bf16(bf16_from_f32(x));
            assert!((back - x).abs() <= x.abs() / 256.0, "{x} -> {back}");
            assert_eq!(f32_from_bf16(bf16_from_f32(back)), back, "representable values round-trip");
        }
        // 1 + 2^-8 is halfway between two bf16 values: ties go to the even one, 1.
        assert_eq!(f32_from_bf16(bf16_from_f32(1.0 + 1.0 / 256.0)), 1.0);
        assert!(f32_from_bf16(bf16_from_f32(f32::NAN)).is_nan());
    }

    #[test]
    fn int8_columns_are_within_half_a_step() {
        let (n_in, n_out) = (7, 5);
        let w: Vec<f32> =
            (0..n_in * n_out).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.01 * (1 + i % n_out) as f32).collect();
        let (scales, q) = quantize_per_column(&w, n_in, n_out);
        for i in 0..n_in {
            for j in 0..n_out {
                let err = (q[i * n_out + j] as f32 * scales[j] - w[i * n_out + j]).abs();
                assert!(err <= scales[j] / 2.0 + 1e-7, "({i}, {j}): error {err}, step {}", scales[j]);
            }
        }
        let (zero_scales, zeros) = quantize_per_column(&[0.0; 6], 3, 2);
        assert_eq!((zero_scales, zeros), (alloc::vec![1.0, 1.0], alloc::vec![0; 6]));
    }
}
