//! Unaligned loads and stores of `f32x16` vectors: the only raw-pointer helpers outside the
//! GEMM microkernel. Kept tiny so every caller's `// SAFETY:` argument is about bounds only.

use wide::f32x16;

pub(crate) const LANES: usize = 16;

/// Loads 16 lanes from `p`.
///
/// # Safety
/// `p..p+16` must be readable `f32`s.
#[inline(always)]
pub(crate) unsafe fn load(p: *const f32) -> f32x16 {
    // SAFETY: the caller guarantees 16 readable f32s; read_unaligned has no alignment needs.
    f32x16::new(unsafe { core::ptr::read_unaligned(p as *const [f32; LANES]) })
}

/// Stores 16 lanes at `p`.
///
/// # Safety
/// `p..p+16` must be writable `f32`s.
#[inline(always)]
pub(crate) unsafe fn store(p: *mut f32, v: f32x16) {
    // SAFETY: the caller guarantees 16 writable f32s; write_unaligned has no alignment needs.
    unsafe { core::ptr::write_unaligned(p as *mut [f32; LANES], v.to_array()) }
}

/// Loads `xs` (at most 16 values) into the low lanes, `fill` in the others.
#[inline(always)]
pub(crate) fn load_partial(xs: &[f32], fill: f32) -> f32x16 {
    let mut lanes = [fill; LANES];
    lanes[..xs.len()].copy_from_slice(xs);
    f32x16::new(lanes)
}

/// Stores the low `out.len()` (at most 16) lanes of `v`.
#[inline(always)]
pub(crate) fn store_partial(out: &mut [f32], v: f32x16) {
    let n = out.len();
    out.copy_from_slice(&v.to_array()[..n]);
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
