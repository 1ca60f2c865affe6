//! Integer inference kernels: u8 activations times int8 weights, accumulated exactly in i32
//! (the `vpdpbusd` contract), and the quantisation of f32 activations to u8.
//!
//! Weights are stored in *groups of four inputs*: byte `(g * n_out + j) * 4 + r` holds
//! `q[4g + r][j]` (zero past the last input), so four consecutive bytes are one output's
//! weights for four consecutive inputs: what one 32-bit lane of `vpdpbusd` multiplies with a
//! broadcast of four input bytes. [`pack_groups_of_4`] builds the layout from `[n_in, n_out]`
//! row-major weights.
//!
//! Two implementations of [`gemv_u8_i8`], chosen at run time: AVX-512 VNNI (one instruction
//! per 64 multiply-adds) where the CPU has it, and a portable `wide` one (widen to i16, then
//! `pmaddwd`). Both are exact, so both equal the scalar twin
//! [`super::reference::gemv_u8_i8`] bit for bit.

#[cfg(feature = "alloc")]
use alloc::vec::Vec;

use wide::{f32x16, i8x32, i16x32, i32x16};

use super::reference;
use super::simd::{LANES, for_each_gemv_block};

/// Inputs per group in the packed layout.
pub const GROUP: usize = 4;
/// Outputs per vector of accumulators.
const TILE: usize = LANES;
/// The widest input an int8 layer may have: `n_in * 255 * 127`, and that minus the
/// zero-point correction, must stay inside an i32.
pub const MAX_INPUTS: usize = 32_768;

/// Bytes of packed weights for an `n_in x n_out` layer.
pub fn packed_len(n_in: usize, n_out: usize) -> Option<usize> {
    n_in.div_ceil(GROUP).checked_mul(n_out)?.checked_mul(GROUP)
}

/// `[n_in, n_out]` row-major int8 weights in groups of four inputs (see the module docs).
#[cfg(feature = "alloc")]
pub fn pack_groups_of_4(q: &[i8], n_in: usize, n_out: usize) -> Vec<i8> {
    assert_eq!(q.len(), n_in * n_out, "pack: weights are not {n_in} x {n_out}");
    let mut packed = alloc::vec![0i8; n_in.div_ceil(GROUP) * n_out * GROUP];
    for (i, row) in q.chunks_exact(n_out).enumerate() {
        let (g, r) = (i / GROUP, i % GROUP);
        for (j, &v) in row.iter().enumerate() {
            packed[(g * n_out + j) * GROUP + r] = v;
        }
    }
    packed
}

/// The inverse of [`pack_groups_of_4`].
#[cfg(feature = "alloc")]
pub fn unpack_groups_of_4(packed: &[i8], n_in: usize, n_out: usize) -> Vec<i8> {
    assert_eq!(Some(packed.len()), packed_len(n_in, n_out), "unpack: not {n_in} x {n_out} packed weights");
    (0..n_in * n_out).map(|k| packed[((k / n_out) / GROUP * n_out + k % n_out) * GROUP + (k / n_out) % GROUP]).collect()
}

/// Output `j`'s weights summed over every input (and padding) of packed weights: what the
/// zero point of the inputs costs each output. Allocation-free (the loader checks files with it).
pub fn packed_column_sum(packed: &[i8], n_out: usize, j: usize) -> i32 {
    packed
        .chunks_exact(n_out * GROUP)
        .map(|group| group[j * GROUP..(j + 1) * GROUP].iter().map(|&v| v as i32).sum::<i32>())
        .sum()
}

/// Whether the padding after the last input of packed weights is zero, as the layout requires.
pub fn packed_padding_is_zero(packed: &[i8], n_in: usize, n_out: usize) -> bool {
    let used = n_in % GROUP;
    used == 0
        || packed[packed.len() - n_out * GROUP..].chunks_exact(GROUP).all(|lanes| lanes[used..].iter().all(|&v| v == 0))
}

/// How [`gemv_u8_i8`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int8Kernel {
    /// `wide` vectors: i16 products summed in pairs (`pmaddwd`), any CPU.
    Portable,
    /// AVX-512 VNNI `vpdpbusd`: four u8 x i8 products per 32-bit lane per instruction.
    Vnni,
}

impl Int8Kernel {
    /// The fastest kernel this CPU runs (detected at run time with `std`; without `std`, the
    /// features the build targets).
    pub fn detect() -> Self {
        if Self::Vnni.available() { Self::Vnni } else { Self::Portable }
    }

    pub fn available(self) -> bool {
        match self {
            Int8Kernel::Portable => true,
            Int8Kernel::Vnni => vnni::available(),
        }
    }
}

/// `acc[j] = sum_i x[i] * q[i][j]` for the packed weights `w` of an `x.len() x n_out` layer,
/// with the fastest kernel of this CPU.
pub fn gemv_u8_i8(x: &[u8], w: &[i8], n_out: usize, acc: &mut [i32]) {
    gemv_u8_i8_with(Int8Kernel::detect(), x, w, n_out, acc)
}

/// [`gemv_u8_i8`] with a chosen kernel (tests and benches compare them).
///
/// # Panics
/// If `w` or `acc` does not fit the shape, `x` is longer than [`MAX_INPUTS`], or `kernel`
/// is not available on this CPU.
pub fn gemv_u8_i8_with(kernel: Int8Kernel, x: &[u8], w: &[i8], n_out: usize, acc: &mut [i32]) {
    assert_eq!(
        Some(w.len()),
        packed_len(x.len(), n_out),
        "gemv_u8_i8: {} packed weights for {} x {n_out}",
        w.len(),
        x.len()
    );
    assert_eq!(acc.len(), n_out, "gemv_u8_i8: {} accumulators for {n_out} outputs", acc.len());
    assert!(x.len() <= MAX_INPUTS, "gemv_u8_i8: {} inputs could overflow i32 (at most {MAX_INPUTS})", x.len());
    match kernel {
        Int8Kernel::Portable => portable(x, w, n_out, acc),
        Int8Kernel::Vnni => {
            assert!(vnni::available(), "the VNNI kernel needs AVX-512 VNNI");
            // SAFETY: the CPU has the features (checked above) and the shapes were checked.
            unsafe { vnni::gemv(x, w, n_out, acc) }
        }
    }
}

/// Group `g`'s four input bytes as the little-endian i32 `vpdpbusd` broadcasts, zero past
/// the end of `x`.
#[inline(always)]
fn group_word(x: &[u8], g: usize) -> i32 {
    let start = g * GROUP;
    match x.get(start..start + GROUP) {
        Some(b) => i32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        None => {
            let mut b = [0u8; GROUP];
            b[..x.len() - start].copy_from_slice(&x[start..]);
            i32::from_le_bytes(b)
        }
    }
}

fn portable(x: &[u8], w: &[i8], n_out: usize, acc: &mut [i32]) {
    for_each_gemv_block!(n_out, j0 => portable_block(x, w, n_out, j0, acc));
}

/// Outputs `j0..j0 + 16 T` (fewer in the layer's last tile), accumulators in registers
/// (a constant `T` lets the compiler keep them there).
#[inline(always)]
fn portable_block<const T: usize>(x: &[u8], w: &[i8], n_out: usize, j0: usize, acc: &mut [i32]) {
    let end = (j0 + T * TILE).min(n_out);
    // Per tile, two vectors of i32 pairs: outputs j0..j0+8 (2 lanes each), then j0+8..j0+16.
    let mut sums = [[i32x16::ZERO; 2]; T];
    for g in 0..x.len().div_ceil(GROUP) {
        // The four inputs widened to i16, repeated along the vector: one 64-bit broadcast.
        let xb = group_word(x, g).to_le_bytes();
        let four = u64::from_le_bytes(core::array::from_fn(|k| if k % 2 == 0 { xb[k / 2] } else { 0 }));
        let xv: i16x32 = wide::bytemuck::cast(wide::u64x8::splat(four));
        let row = &w[(g * n_out + j0) * GROUP..(g * n_out + end) * GROUP];
        for (t, s) in sums.iter_mut().enumerate() {
            let bytes = &row[(t * TILE * GROUP).min(row.len())..((t + 1) * TILE * GROUP).min(row.len())];
            let lanes: [i8; TILE * GROUP] = match bytes.try_into() {
                Ok(full) => full,
                Err(_) => {
                    let mut padded = [0i8; TILE * GROUP];
                    padded[..bytes.len()].copy_from_slice(bytes);
                    padded
                }
            };
            let [lo, hi]: [i8x32; 2] = wide::bytemuck::cast(lanes);
            s[0] += xv.dot(i16x32::from(lo));
            s[1] += xv.dot(i16x32::from(hi));
        }
    }
    for (t, s) in sums.iter().enumerate() {
        let j = j0 + t * TILE;
        let (lo, hi) = (s[0].to_array(), s[1].to_array());
        for (k, out) in acc[j.min(end)..(j + TILE).min(end)].iter_mut().enumerate() {
            let pairs = if k < 8 { &lo } else { &hi };
            *out = pairs[2 * (k % 8)] + pairs[2 * (k % 8) + 1];
        }
    }
}

mod vnni {
    pub(super) fn available() -> bool {
        #[cfg(all(target_arch = "x86_64", feature = "std"))]
        return std::arch::is_x86_feature_detected!("avx512vnni")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512f");
        #[cfg(all(
            target_arch = "x86_64",
            not(feature = "std"),
            target_feature = "avx512vnni",
            target_feature = "avx512bw"
        ))]
        return true;
        #[allow(unreachable_code)]
        false
    }

    /// # Safety
    /// AVX-512 F, BW and VNNI must be available; `w` must hold the packed weights of an
    /// `x.len() x n_out` layer and `acc` `n_out` values.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn gemv(x: &[u8], w: &[i8], n_out: usize, acc: &mut [i32]) {
        use crate::kernels::simd::for_each_gemv_block;
        // SAFETY: forwarded from the caller; each block starts at an output j0 < n_out and
        // its tiles cover at most the outputs that remain.
        unsafe { for_each_gemv_block!(n_out, j0 => block(x, w, n_out, j0, acc)) }
    }

    /// Outputs `j0..j0 + 16 T` (fewer in the layer's last tile): per group of four inputs,
    /// one broadcast and `T` dot products into accumulators kept in registers.
    ///
    /// # Safety
    /// As [`gemv`], and `j0 + 16 (T - 1) < n_out`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn block<const T: usize>(x: &[u8], w: &[i8], n_out: usize, j0: usize, acc: &mut [i32]) {
        use super::{GROUP, TILE, group_word};
        use crate::kernels::simd::tile_masks;
        use core::arch::x86_64::*;
        // Lanes of each tile that are outputs: all 16 but in the last tile of the layer.
        let masks: [__mmask16; T] = tile_masks(n_out, j0);
        let mut sums = [_mm512_setzero_si512(); T];
        for g in 0..x.len().div_ceil(GROUP) {
            let xv = _mm512_set1_epi32(group_word(x, g));
            // SAFETY: group g's outputs j0.. start inside `w` (the caller checked its length).
            let row = unsafe { w.as_ptr().add((g * n_out + j0) * GROUP) };
            for t in 0..T {
                // SAFETY: the masked lanes are outputs j0 + 16t + k < n_out of group g,
                // inside `w`; masked-off lanes are not read.
                let wv = unsafe { _mm512_maskz_loadu_epi32(masks[t], row.add(t * TILE * GROUP) as *const i32) };
                sums[t] = _mm512_dpbusd_epi32(sums[t], xv, wv);
            }
        }
        for t in 0..T {
            // SAFETY: the masked lanes are outputs below n_out, inside `acc`.
            unsafe { _mm512_mask_storeu_epi32(acc.as_mut_ptr().add(j0 + t * TILE), masks[t], sums[t]) };
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) unsafe fn gemv(_: &[u8], _: &[i8], _: usize, _: &mut [i32]) {
        unreachable!("available() is false off x86_64")
    }
}

/// How f32 activations map to u8: `q = clamp(round_ties_even(x * inv_scale + zero_point), 0,
/// 255)`, standing for `(q - zero_point) * scale`. NaN maps to 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct U8Quant {
    pub scale: f32,
    pub zero_point: u8,
}

impl U8Quant {
    /// The asymmetric quantisation covering `[min, max]` widened to include zero (so zero,
    /// and ReLU's floor, are exact). A degenerate or non-finite range gives scale 1.
    pub fn covering(min: f32, max: f32) -> Self {
        let (lo, hi) = (min.min(0.0), max.max(0.0));
        let scale = (hi - lo) / 255.0;
        if !(scale.is_finite() && scale > 0.0) {
            return U8Quant { scale: 1.0, zero_point: 0 };
        }
        let zero_point = libm::rintf(-lo / scale).clamp(0.0, 255.0) as u8;
        U8Quant { scale, zero_point }
    }
}

/// The minimum and maximum of `x` (NaN ignored; `(inf, -inf)` when empty or all NaN).
pub fn min_max(x: &[f32]) -> (f32, f32) {
    let mut chunks = x.chunks_exact(TILE);
    let (mut lo, mut hi) = (f32x16::splat(f32::INFINITY), f32x16::splat(f32::NEG_INFINITY));
    for c in &mut chunks {
        let v = f32x16::new(c.try_into().expect("16 lanes"));
        // A comparison with NaN is false, so NaN never replaces a bound. (Not `fast_min`: it
        // keeps or drops NaN as the target's instruction does, and NEON's keeps it.)
        lo = v.simd_lt(lo).select(v, lo);
        hi = v.simd_gt(hi).select(v, hi);
    }
    let (lo, hi) = (lo.to_array(), hi.to_array());
    let mut range =
        (lo.iter().fold(f32::INFINITY, |a, &b| a.min(b)), hi.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)));
    for &v in chunks.remainder() {
        range = (range.0.min(v), range.1.max(v));
    }
    range
}

/// Quantises `x` into `out` (same length) with `quant`.
pub fn quantize_u8(x: &[f32], quant: U8Quant, out: &mut [u8]) {
    assert_eq!(x.len(), out.len(), "quantize_u8: {} values into {} bytes", x.len(), out.len());
    let inv = 1.0 / quant.scale;
    let (inv_v, zp_v) = (f32x16::splat(inv), f32x16::splat(quant.zero_point as f32));
    let mut xs = x.chunks_exact(TILE);
    let mut os = out.chunks_exact_mut(TILE);
    for (c, o) in (&mut xs).zip(&mut os) {
        let v = f32x16::new(c.try_into().expect("16 lanes")) * inv_v + zp_v;
        // Not-NaN and at least 0, else 0; then at most 255; then round to nearest even
        // (`round_int` alone rounds halves away from zero where `wide` has no SIMD). Whole
        // numbers in [0, 255] convert the same on every target, so the fast conversion.
        let v = v.simd_ge(f32x16::ZERO).select(v, f32x16::ZERO).fast_min(f32x16::splat(255.0));
        let q = v.round_ties_even().fast_trunc_int().to_array();
        for (o, q) in o.iter_mut().zip(q) {
            *o = q as u8;
        }
    }
    reference::quantize_u8(xs.remainder(), quant, os.into_remainder());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_puts_four_inputs_of_one_output_together() {
        let (n_in, n_out) = (6, 3);
        let q: Vec<i8> = (0..18).map(|v| v as i8).collect();
        let p = pack_groups_of_4(&q, n_in, n_out);
        assert_eq!(p.len(), packed_len(n_in, n_out).unwrap());
        // Output 1, inputs 0..4, then inputs 4, 5 and two zeros.
        assert_eq!(&p[4..8], &[1, 4, 7, 10]);
        assert_eq!(&p[(3 + 1) * 4..(3 + 1) * 4 + 4], &[13, 16, 0, 0]);
    }

    #[test]
    fn ranges_include_zero_and_quantise_their_ends_exactly() {
        let q = U8Quant::covering(-1.0, 3.0);
        assert_eq!(q.zero_point, 64);
        let mut out = [0u8; 5];
        quantize_u8(&[-1.0, 0.0, 3.0, 100.0, f32::NAN], q, &mut out);
        assert_eq!(out, [0, 64, 255, 255, 0]);
        assert_eq!(U8Quant::covering(2.0, 5.0).zero_point, 0);
        assert_eq!(U8Quant::covering(0.0, 0.0), U8Quant { scale: 1.0, zero_point: 0 });
        assert_eq!(U8Quant::covering(f32::NEG_INFINITY, 1.0), U8Quant { scale: 1.0, zero_point: 0 });
        assert_eq!(min_max(&[f32::NAN, 2.0, -3.0]), (-3.0, 2.0));
    }
}
