//! Unaligned loads and stores of `f32x16` vectors: the only raw-pointer helpers outside the
//! GEMM microkernel. Kept tiny so every caller's `// SAFETY:` argument is about bounds only.

use wide::f32x16;

pub(crate) const LANES: usize = 16;

/// Loads 16 lanes from `p`.
///
/// # Safety
/// `p..p+16` must be readable `f32`s.
#[cfg(feature = "alloc")] // the GEMM's
#[inline(always)]
pub(crate) unsafe fn load(p: *const f32) -> f32x16 {
    // SAFETY: the caller guarantees 16 readable f32s; read_unaligned has no alignment needs.
    f32x16::new(unsafe { core::ptr::read_unaligned(p as *const [f32; LANES]) })
}

/// Stores 16 lanes at `p`.
///
/// # Safety
/// `p..p+16` must be writable `f32`s.
#[cfg(feature = "alloc")] // the GEMM's
#[inline(always)]
pub(crate) unsafe fn store(p: *mut f32, v: f32x16) {
    // SAFETY: the caller guarantees 16 writable f32s; write_unaligned has no alignment needs.
    unsafe { core::ptr::write_unaligned(p as *mut [f32; LANES], v.to_array()) }
}

/// Loads `xs` (at most 16 values) into the low lanes, `fill` in the others. Builds with
/// AVX-512 use one masked load (otherwise a variable-length copy, which is a call to memcpy
/// on every tile edge).
#[inline(always)]
pub(crate) fn load_partial(xs: &[f32], fill: f32) -> f32x16 {
    assert!(xs.len() <= LANES, "load_partial takes at most {LANES} values");
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    // SAFETY: AVX-512F is enabled at compile time; the mask covers exactly the `xs.len()`
    // readable values (masked-off lanes are not accessed); __m512 and f32x16 are both 16 f32s.
    unsafe {
        use core::arch::x86_64::{__m512, _mm512_mask_loadu_ps, _mm512_set1_ps};
        let mask = ((1u32 << xs.len()) - 1) as u16;
        let v = _mm512_mask_loadu_ps(_mm512_set1_ps(fill), mask, xs.as_ptr());
        core::mem::transmute::<__m512, f32x16>(v)
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
    {
        let mut lanes = [fill; LANES];
        lanes[..xs.len()].copy_from_slice(xs);
        f32x16::new(lanes)
    }
}

/// Stores the low `out.len()` (at most 16) lanes of `v` (one masked store with AVX-512).
#[inline(always)]
pub(crate) fn store_partial(out: &mut [f32], v: f32x16) {
    assert!(out.len() <= LANES, "store_partial takes at most {LANES} values");
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    // SAFETY: AVX-512F is enabled at compile time; the mask covers exactly the `out.len()`
    // writable values (masked-off lanes are not accessed).
    unsafe {
        use core::arch::x86_64::{__m512, _mm512_mask_storeu_ps};
        let mask = ((1u32 << out.len()) - 1) as u16;
        _mm512_mask_storeu_ps(out.as_mut_ptr(), mask, core::mem::transmute::<f32x16, __m512>(v));
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
    {
        let n = out.len();
        out.copy_from_slice(&v.to_array()[..n]);
    }
}

/// Applies `f` to `xs` 16 lanes at a time, the tail through a padded vector.
#[inline(always)]
pub(crate) fn map_in_place(xs: &mut [f32], f: impl Fn(f32x16) -> f32x16) {
    let mut chunks = xs.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        let v = f32x16::new(chunk.try_into().expect("chunks_exact gives 16 lanes"));
        chunk.copy_from_slice(&f(v).to_array());
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        store_partial(tail, f(load_partial(tail, 0.0)));
    }
}

/// Applies `f(x, y)` to pairs from `xs` and `ys`, writing into `xs`.
#[inline(always)]
pub(crate) fn zip_in_place(xs: &mut [f32], ys: &[f32], f: impl Fn(f32x16, f32x16) -> f32x16) {
    assert_eq!(xs.len(), ys.len(), "zip_in_place needs equal lengths");
    let mut xc = xs.chunks_exact_mut(LANES);
    let mut yc = ys.chunks_exact(LANES);
    for (x, y) in (&mut xc).zip(&mut yc) {
        let xv = f32x16::new(x.try_into().expect("16 lanes"));
        let yv = f32x16::new(y.try_into().expect("16 lanes"));
        x.copy_from_slice(&f(xv, yv).to_array());
    }
    let (xt, yt) = (xc.into_remainder(), yc.remainder());
    if !xt.is_empty() {
        store_partial(xt, f(load_partial(xt, 0.0), load_partial(yt, 0.0)));
    }
}

/// Vectors of 16 accumulators the narrow-type GEMVs (`int8`, `bf16`) keep in registers per
/// pass over their inputs: 128 outputs.
pub(crate) const GEMV_BLOCK: usize = 8;

/// For each block of at most [`GEMV_BLOCK`] tiles of 16 outputs of an `n_out`-output GEMV,
/// binds `j0` to the block's first output and calls `f::<T>(args)` with `T` the block's tile
/// count as a constant (which keeps the accumulators in registers).
macro_rules! for_each_gemv_block {
    ($n_out:expr, $j0:ident => $f:ident($($arg:expr),* $(,)?)) => {{
        let n_out: usize = $n_out;
        for $j0 in (0..n_out).step_by($crate::kernels::simd::LANES * $crate::kernels::simd::GEMV_BLOCK) {
            match (n_out - $j0).div_ceil($crate::kernels::simd::LANES) {
                1 => $f::<1>($($arg),*),
                2 => $f::<2>($($arg),*),
                3 => $f::<3>($($arg),*),
                4 => $f::<4>($($arg),*),
                5 => $f::<5>($($arg),*),
                6 => $f::<6>($($arg),*),
                7 => $f::<7>($($arg),*),
                _ => $f::<{ $crate::kernels::simd::GEMV_BLOCK }>($($arg),*),
            }
        }
    }};
}
pub(crate) use for_each_gemv_block;

/// For each of the `T` tiles of 16 outputs from `j0`, the mask of its lanes that are outputs
/// (below `n_out`): all 16 but in the last tile of the layer.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn tile_masks<const T: usize>(n_out: usize, j0: usize) -> [u16; T] {
    core::array::from_fn(|t| {
        let valid = n_out.saturating_sub(j0 + t * LANES).min(LANES);
        ((1u32 << valid) - 1) as u16
    })
}

/// The 4 floats at `p` in each of the 4 128-bit lane groups (one `vbroadcastf32x4` with
/// AVX-512).
///
/// # Safety
/// `p..p+4` must be readable `f32`s.
#[cfg(feature = "alloc")] // the GEMM's
#[inline(always)]
pub(crate) unsafe fn broadcast4(p: *const f32) -> f32x16 {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    // SAFETY: AVX-512F is enabled at compile time; the caller guarantees 4 readable f32s.
    unsafe {
        use core::arch::x86_64::{__m512, _mm_loadu_ps, _mm512_broadcast_f32x4};
        core::mem::transmute::<__m512, f32x16>(_mm512_broadcast_f32x4(_mm_loadu_ps(p)))
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
    {
        // SAFETY: the caller guarantees 4 readable f32s.
        let x = unsafe { core::ptr::read_unaligned(p as *const [f32; 4]) };
        f32x16::new(core::array::from_fn(|i| x[i % 4]))
    }
}

/// [`broadcast4`] of fewer than 4 floats, zero-padded.
#[cfg(feature = "alloc")] // the GEMM's
#[inline(always)]
pub(crate) fn broadcast4_partial(xs: &[f32]) -> f32x16 {
    assert!(xs.len() <= 4, "broadcast4_partial takes at most 4 values");
    f32x16::new(core::array::from_fn(|i| xs.get(i % 4).copied().unwrap_or(0.0)))
}
