//! The bf16 inference kernel: `y = x W` with the input `x` rounded to bf16 and the weights
//! stored as bf16, `[n_in, n_out]` row-major, little-endian (the model file's layout).
//!
//! A product of two bf16 values is exact in f32, so the only rounding is in the sums. They
//! follow `vdpbf16ps`: per pair of inputs `(2p, 2p + 1)` and output `j`,
//! `y[j] = (y[j] + x[2p+1] w[2p+1][j]) + x[2p] w[2p][j]` in f32, from `y = 0`; an odd last
//! input is paired with a zero. Two implementations, chosen at run time: AVX-512 BF16 (one
//! `vdpbf16ps` per 32 multiply-adds, the two weight rows interleaved with `vpermt2w`) and a
//! portable `wide` one; both equal the scalar twin
//! [`reference::gemv_bf16`](super::reference::gemv_bf16) bit for bit on normal numbers
//! (`vdpbf16ps` flushes subnormal inputs and results to zero; the others keep them).

use wide::{f32x16, u16x16, u32x16};

use super::quant::f32_from_bf16;
use super::simd::{LANES, for_each_gemv_block};

/// Outputs per vector.
const TILE: usize = LANES;

/// How [`gemv_bf16`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// `wide` vectors: the bf16 values widened to f32, two fused multiply-adds per pair
    /// (exact products, so fusing rounds as `vdpbf16ps` does).
    Portable,
    /// AVX-512 BF16 `vdpbf16ps`.
    Avx512Bf16,
}

impl Bf16Kernel {
    /// The fastest kernel this CPU runs (detected at run time with `std`; without `std`, the
    /// features the build targets).
    pub fn detect() -> Self {
        if Self::Avx512Bf16.available() { Self::Avx512Bf16 } else { Self::Portable }
    }

    pub fn available(self) -> bool {
        match self {
            Bf16Kernel::Portable => true,
            Bf16Kernel::Avx512Bf16 => avx512::available(),
        }
    }
}

/// Rounds `x` to bf16 bits (nearest even; NaN stays NaN), 16 lanes at a time.
pub fn round_to_bf16(x: &[f32], out: &mut [u16]) {
    assert_eq!(x.len(), out.len(), "round_to_bf16: {} values into {} slots", x.len(), out.len());
    let mut xs = x.chunks_exact(TILE);
    let mut os = out.chunks_exact_mut(TILE);
    for (c, o) in (&mut xs).zip(&mut os) {
        let halves = round_bits(f32x16::new(c.try_into().expect("16 lanes"))).to_array();
        for (o, h) in o.iter_mut().zip(halves) {
            *o = h as u16;
        }
    }
    for (o, &v) in os.into_remainder().iter_mut().zip(xs.remainder()) {
        *o = super::quant::bf16_from_f32(v);
    }
}

/// Rounds `x` to bf16 bits as `kernel`'s products read them: as [`round_to_bf16`] for the
/// portable kernel; with AVX-512 BF16, by `vcvtneps2bf16` (16 values in one instruction where
/// the portable rounding takes eleven operations), which flushes subnormals to zero as
/// `vdpbf16ps` reads them anyway: either way, a product of the kernel sees the same values.
///
/// # Panics
/// If the lengths differ, or `kernel` does not run on this CPU.
pub fn round_to_bf16_with(kernel: Bf16Kernel, x: &[f32], out: &mut [u16]) {
    assert_eq!(x.len(), out.len(), "round_to_bf16: {} values into {} slots", x.len(), out.len());
    match kernel {
        Bf16Kernel::Portable => round_to_bf16(x, out),
        Bf16Kernel::Avx512Bf16 => {
            assert!(avx512::available(), "the AVX-512 BF16 kernel needs AVX-512 BF16");
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has the features (checked above); the lengths agree.
            unsafe {
                avx512::round(x, out)
            }
        }
    }
}

/// Each lane rounded to bf16 (nearest even; NaN stays NaN), its bits in the low half.
#[inline(always)]
pub(super) fn round_bits(x: f32x16) -> u32x16 {
    let bits: u32x16 = wide::bytemuck::cast(x);
    // Adding 0x7FFF plus the lowest kept bit rounds to nearest, ties to even; NaN keeps its
    // top bits with the quiet bit set.
    let rounded: u32x16 = (bits + u32x16::splat(0x7FFF) + ((bits >> 16) & u32x16::splat(1))) >> 16;
    let nan: u32x16 = (bits & u32x16::splat(0x7FFF_FFFF)).simd_gt(u32x16::splat(0x7F80_0000));
    nan.select((bits >> 16) | u32x16::splat(0x40), rounded)
}

/// `y[j] = sum_i x[i] w[i][j]` for bf16 inputs `x` and the little-endian bf16 weights `w` of
/// an `x.len() x n_out` layer, with the fastest kernel of this CPU.
pub fn gemv_bf16(x: &[u16], w: &[u8], n_out: usize, y: &mut [f32]) {
    gemv_bf16_with(Bf16Kernel::detect(), x, w, n_out, y)
}

/// [`gemv_bf16`] with a chosen kernel.
///
/// # Panics
/// If `w` or `y` does not fit the shape, or `kernel` is not available on this CPU.
pub fn gemv_bf16_with(kernel: Bf16Kernel, x: &[u16], w: &[u8], n_out: usize, y: &mut [f32]) {
    assert_eq!(w.len(), 2 * x.len() * n_out, "gemv_bf16: {} weight bytes for {} x {n_out}", w.len(), x.len());
    assert_eq!(y.len(), n_out, "gemv_bf16: {} outputs for {n_out}", y.len());
    match kernel {
        Bf16Kernel::Portable => portable(x, w, n_out, y),
        Bf16Kernel::Avx512Bf16 => {
            assert!(avx512::available(), "the AVX-512 BF16 kernel needs AVX-512 BF16");
            // SAFETY: the CPU has the features (checked above) and the shapes were checked.
            unsafe { avx512::gemv(x, w, n_out, y) }
        }
    }
}

fn portable(x: &[u16], w: &[u8], n_out: usize, y: &mut [f32]) {
    for_each_gemv_block!(n_out, j0 => portable_block(x, w, n_out, j0, y));
}

/// Row `i`'s weights for outputs `j0..end`, as bf16 bits.
#[inline(always)]
fn row(w: &[u8], n_out: usize, i: usize, j0: usize, end: usize) -> &[u8] {
    &w[2 * (i * n_out + j0)..2 * (i * n_out + end)]
}

/// Tile `t` (16 outputs, zero past the row's end) of a [`row`], widened to f32.
#[inline(always)]
fn tile(row: &[u8], t: usize) -> f32x16 {
    let halves = match row.get(2 * TILE * t..2 * TILE * (t + 1)) {
        Some(full) => {
            let full: &[u8; 2 * TILE] = full.try_into().expect("32 bytes");
            u16x16::new(core::array::from_fn(|k| u16::from_le_bytes([full[2 * k], full[2 * k + 1]])))
        }
        None => u16x16::new(core::array::from_fn(|k| {
            row.get(2 * TILE * t + 2 * k..2 * TILE * t + 2 * k + 2).map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
        })),
    };
    // Widened into the top half of 32 bits: the f32 each bf16 stands for.
    wide::bytemuck::cast(u32x16::from(halves) << 16)
}

#[inline(always)]
fn portable_block<const T: usize>(x: &[u16], w: &[u8], n_out: usize, j0: usize, y: &mut [f32]) {
    let end = (j0 + T * TILE).min(n_out);
    let mut sums = [f32x16::ZERO; T];
    for (p, pair) in x.chunks(2).enumerate() {
        let x_even = f32x16::splat(f32_from_bf16(pair[0]));
        let even = row(w, n_out, 2 * p, j0, end);
        if let [_, odd_x] = *pair {
            let (x_odd, odd) = (f32x16::splat(f32_from_bf16(odd_x)), row(w, n_out, 2 * p + 1, j0, end));
            for (t, s) in sums.iter_mut().enumerate() {
                *s = x_even.mul_add(tile(even, t), x_odd.mul_add(tile(odd, t), *s));
            }
        } else {
            // The odd input past the end counts as 0 x 0, added first as vdpbf16ps does.
            for (t, s) in sums.iter_mut().enumerate() {
                *s = x_even.mul_add(tile(even, t), *s + f32x16::ZERO);
            }
        }
    }
    for (t, s) in sums.iter().enumerate() {
        let j = j0 + t * TILE;
        let out = &mut y[j..(j + TILE).min(end)];
        let n = out.len();
        out.copy_from_slice(&s.to_array()[..n]);
    }
}

mod avx512 {
    pub(super) fn available() -> bool {
        #[cfg(all(target_arch = "x86_64", feature = "std"))]
        return std::arch::is_x86_feature_detected!("avx512bf16")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512f");
        #[cfg(all(
            target_arch = "x86_64",
            not(feature = "std"),
            target_feature = "avx512bf16",
            target_feature = "avx512bw",
            target_feature = "avx512vl"
        ))]
        return true;
        #[allow(unreachable_code)]
        false
    }

    /// `out[i] = bf16(x[i])` by `vcvtneps2bf16`, 16 at a time.
    ///
    /// # Safety
    /// AVX-512 F, BW, VL and BF16 must be available; `out` must be as long as `x`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn round(x: &[f32], out: &mut [u16]) {
        use core::arch::x86_64::*;
        for (x, out) in x.chunks(super::TILE).zip(out.chunks_mut(super::TILE)) {
            let mask = ((1u32 << x.len()) - 1) as __mmask16;
            // SAFETY: the mask covers the chunk's values (at most 16) in `x` and in `out`;
            // __m256bh and __m256i are both 32 bytes of vector register.
            unsafe {
                let halves = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, x.as_ptr()));
                let halves = core::mem::transmute::<__m256bh, __m256i>(halves);
                _mm256_mask_storeu_epi16(out.as_mut_ptr().cast(), mask, halves);
            }
        }
    }

    /// # Safety
    /// AVX-512 F, BW, VL and BF16 must be available; `w` must hold `2 x.len() n_out` bytes
    /// and `y` `n_out` values.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn gemv(x: &[u16], w: &[u8], n_out: usize, y: &mut [f32]) {
        use crate::kernels::simd::for_each_gemv_block;
        // SAFETY: forwarded from the caller; each block starts at an output j0 < n_out and
        // its tiles cover at most the outputs that remain.
        unsafe { for_each_gemv_block!(n_out, j0 => block(x, w, n_out, j0, y)) }
    }

    /// Outputs `j0..j0 + 16 T` (fewer in the layer's last tile): per pair of inputs, one
    /// broadcast, and per tile two row loads, one interleave and one `vdpbf16ps`.
    ///
    /// # Safety
    /// As [`gemv`], and `j0 + 16 (T - 1) < n_out`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    unsafe fn block<const T: usize>(x: &[u16], w: &[u8], n_out: usize, j0: usize, y: &mut [f32]) {
        use super::TILE;
        use crate::kernels::simd::tile_masks;
        use core::arch::x86_64::*;
        let masks: [__mmask16; T] = tile_masks(n_out, j0);
        // Lane 2j takes word j of the even row, lane 2j + 1 word j of the odd row.
        let interleave = _mm512_set_epi16(
            47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33,
            1, 32, 0,
        );
        let row = |i: usize| w.as_ptr().wrapping_add(2 * (i * n_out + j0)) as *const u16;
        let mut sums = [_mm512_setzero_ps(); T];
        for p in 0..x.len().div_ceil(2) {
            let (even, odd) = (2 * p, 2 * p + 1);
            let x_odd = x.get(odd).copied().unwrap_or(0);
            let pair = _mm512_set1_epi32((x[even] as u32 | (x_odd as u32) << 16) as i32);
            for t in 0..T {
                // SAFETY: the masked words are outputs j0 + 16t + k < n_out of rows `even`
                // and (when it exists) `odd`, inside `w`; masked-off words are not read.
                let (lo, hi) = unsafe {
                    let lo = _mm256_maskz_loadu_epi16(masks[t], row(even).add(t * TILE) as *const i16);
                    let hi = if odd < x.len() {
                        _mm256_maskz_loadu_epi16(masks[t], row(odd).add(t * TILE) as *const i16)
                    } else {
                        _mm256_setzero_si256()
                    };
                    (lo, hi)
                };
                let pairs =
                    _mm512_permutex2var_epi16(_mm512_castsi256_si512(lo), interleave, _mm512_castsi256_si512(hi));
                // SAFETY: __m512i and __m512bh are both 64 bytes of vector register.
                let (a, b) = unsafe {
                    (core::mem::transmute::<__m512i, __m512bh>(pair), core::mem::transmute::<__m512i, __m512bh>(pairs))
                };
                sums[t] = _mm512_dpbf16_ps(sums[t], a, b);
            }
        }
        for t in 0..T {
            // SAFETY: the masked lanes are outputs below n_out, inside `y`.
            unsafe { _mm512_mask_storeu_ps(y.as_mut_ptr().add(j0 + t * TILE), masks[t], sums[t]) };
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) unsafe fn gemv(_: &[u16], _: &[u8], _: usize, _: &mut [f32]) {
        unreachable!("available() is false off x86_64")
    }
}
