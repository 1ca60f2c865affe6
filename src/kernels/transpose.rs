//! Matrix transpose: `dst[j][i] = src[i][j]`, in 16 x 16 blocks through AVX-512 registers
//! where the CPU has them (detected at run time with `std`, at compile time without), the
//! edges as partial blocks read and written with masks; element by element elsewhere. The
//! GEMM packs its transposed B operands (the weights, in every input gradient) with it:
//! element by element, packing `W^T` took as long as the product.

/// Transposes `src` (`rows x cols`, row-major) into `dst` (`cols x rows`, row-major).
///
/// # Panics
/// If the slices are not `rows * cols` long.
pub fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    assert!(
        src.len() == rows * cols && dst.len() == rows * cols,
        "transpose: {rows}x{cols} needs {} values",
        rows * cols
    );
    transpose_strided(src, cols, rows, cols, dst, rows);
}

/// `dst[j * ldd + i] = src[i * lds + j]` for `i < rows`, `j < cols`: the transpose of a
/// strided `rows x cols` view (the GEMM packs transposed operands with it).
///
/// # Panics
/// If either view does not fit in its slice.
pub fn transpose_strided(src: &[f32], lds: usize, rows: usize, cols: usize, dst: &mut [f32], ldd: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(cols <= lds && rows <= ldd, "transpose: leading dimensions too small");
    assert!(
        (rows - 1) * lds + cols <= src.len() && (cols - 1) * ldd + rows <= dst.len(),
        "transpose: views do not fit"
    );
    if avx512::available() {
        // 16 x 16 blocks, the edges as partial blocks (masked loads and stores).
        for i in (0..rows).step_by(16) {
            for j in (0..cols).step_by(16) {
                let (h, w) = (16.min(rows - i), 16.min(cols - j));
                // SAFETY: AVX-512F is available (checked above); the h x w block at (i, j)
                // lies inside the source view and at (j, i) inside the destination view, both
                // checked to fit in their slices.
                unsafe {
                    avx512::block(src.as_ptr().add(i * lds + j), lds, dst.as_mut_ptr().add(j * ldd + i), ldd, h, w)
                };
            }
        }
        return;
    }
    for i in 0..rows {
        for j in 0..cols {
            dst[j * ldd + i] = src[i * lds + j];
        }
    }
}

mod avx512 {
    /// Whether the 16 x 16 block kernel can run on this CPU.
    pub(super) fn available() -> bool {
        #[cfg(all(target_arch = "x86_64", feature = "std"))]
        return std::arch::is_x86_feature_detected!("avx512f");
        #[cfg(all(target_arch = "x86_64", not(feature = "std"), target_feature = "avx512f"))]
        return true;
        #[allow(unreachable_code)]
        false
    }

    /// Transposes one block of `h x w` (at most 16 x 16): four rounds of shuffles (pairs,
    /// 4 x 4 blocks within 128-bit lanes, then lanes across registers) on a 16 x 16 block
    /// whose missing rows and columns are zero, read and written with masks.
    ///
    /// # Safety
    /// AVX-512F must be available; `h` rows of `w` floats must be readable at `src` (rows
    /// `lds` apart) and `w` rows of `h` floats writable at `dst` (rows `ldd` apart).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block(src: *const f32, lds: usize, dst: *mut f32, ldd: usize, h: usize, w: usize) {
        use core::arch::x86_64::*;
        let (in_mask, out_mask) = (((1u32 << w) - 1) as u16, ((1u32 << h) - 1) as u16);
        // SAFETY: the caller guarantees w readable floats in each of the first h rows; the
        // masked-off lanes are not accessed.
        let r: [__m512; 16] = core::array::from_fn(|i| {
            if i < h { unsafe { _mm512_maskz_loadu_ps(in_mask, src.add(i * lds)) } } else { _mm512_setzero_ps() }
        });
        let t: [__m512; 16] = core::array::from_fn(|i| {
            let (a, b) = (r[i & !1], r[i | 1]);
            if i % 2 == 0 { _mm512_unpacklo_ps(a, b) } else { _mm512_unpackhi_ps(a, b) }
        });
        // Within each group of four: (t0,t2) lo/hi halves, (t1,t3) lo/hi halves.
        let u: [__m512; 16] = core::array::from_fn(|i| {
            let base = i & !3;
            let (a, b) = (t[base + (i % 4) / 2], t[base + (i % 4) / 2 + 2]);
            if i % 2 == 0 { _mm512_shuffle_ps::<0x44>(a, b) } else { _mm512_shuffle_ps::<0xEE>(a, b) }
        });
        // 128-bit lanes: pair register i with i + 4 within each half of eight.
        let v: [__m512; 16] = core::array::from_fn(|i| {
            let half = i & 8;
            let (a, b) = (u[half + i % 4], u[half + i % 4 + 4]);
            if i % 8 < 4 { _mm512_shuffle_f32x4::<0x88>(a, b) } else { _mm512_shuffle_f32x4::<0xDD>(a, b) }
        });
        let out: [__m512; 16] = core::array::from_fn(|i| {
            let (a, b) = (v[i % 8], v[i % 8 + 8]);
            if i < 8 { _mm512_shuffle_f32x4::<0x88>(a, b) } else { _mm512_shuffle_f32x4::<0xDD>(a, b) }
        });
        for (i, row) in out.iter().enumerate().take(w) {
            // SAFETY: the caller guarantees h writable floats in each of the first w rows.
            unsafe { _mm512_mask_storeu_ps(dst.add(i * ldd), out_mask, *row) };
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) unsafe fn block(_: *const f32, _: usize, _: *mut f32, _: usize, _: usize, _: usize) {
        unreachable!("available() is false off x86_64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_views_transpose_into_strided_views() {
        let (rows, cols, lds, ldd) = (33, 20, 25, 40);
        let src: alloc::vec::Vec<f32> = (0..rows * lds).map(|v| v as f32).collect();
        let mut dst = alloc::vec![-1.0; cols * ldd];
        transpose_strided(&src, lds, rows, cols, &mut dst, ldd);
        for i in 0..rows {
            for j in 0..cols {
                assert_eq!(dst[j * ldd + i], src[i * lds + j]);
            }
        }
        // Outside the view nothing is written.
        assert!(dst.chunks(ldd).all(|row| row[rows..].iter().all(|&v| v == -1.0)));
    }

    #[test]
    fn matches_the_definition_over_awkward_shapes() {
        for (rows, cols) in [(0, 0), (1, 1), (1, 17), (16, 16), (17, 15), (100, 100), (32, 48), (33, 100), (100, 3)] {
            let src: alloc::vec::Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
            let mut dst = alloc::vec![f32::NAN; rows * cols];
            transpose(&src, rows, cols, &mut dst);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(dst[j * rows + i], src[i * cols + j], "{rows}x{cols} at ({i}, {j})");
                }
            }
        }
    }
}
