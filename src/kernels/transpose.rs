//! Matrix transpose: `dst[j][i] = src[i][j]`, in 16 x 16 blocks through AVX-512 registers
//! where the CPU has them (detected at run time with `std`, at compile time without), the
//! rest element by element. The GEMM packs its transposed B operands (the weights, in every
//! input gradient) with it: element by element, packing `W^T` took as long as the product.

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
    let (full_rows, full_cols) = (rows - rows % 16, cols - cols % 16);
    let blocked = avx512::available() && full_rows > 0 && full_cols > 0;
    if blocked {
        for i in (0..full_rows).step_by(16) {
            for j in (0..full_cols).step_by(16) {
                // SAFETY: AVX-512F is available (checked above); the 16 x 16 block at (i, j)
                // lies inside the source view and at (j, i) inside the destination view, both
                // checked to fit in their slices.
                unsafe { avx512::block(src.as_ptr().add(i * lds + j), lds, dst.as_mut_ptr().add(j * ldd + i), ldd) };
            }
        }
    }
    // Whatever the blocks did not cover: the right-hand columns and bottom rows (everything
    // when there are no blocks).
    let (done_rows, done_cols) = if blocked { (full_rows, full_cols) } else { (0, 0) };
    for i in 0..rows {
        let first_col = if i < done_rows { done_cols } else { 0 };
        for j in first_col..cols {
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

    /// Transposes one 16 x 16 block: four rounds of shuffles (pairs, 4 x 4 blocks within
    /// 128-bit lanes, then lanes across registers).
    ///
    /// # Safety
    /// AVX-512F must be available; 16 rows of 16 floats must be readable at `src` (rows
    /// `lds` apart) and writable at `dst` (rows `ldd` apart).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn block(src: *const f32, lds: usize, dst: *mut f32, ldd: usize) {
        use core::arch::x86_64::*;
        // SAFETY: the caller guarantees the 16 rows are readable.
        let r: [__m512; 16] = core::array::from_fn(|i| unsafe { _mm512_loadu_ps(src.add(i * lds)) });
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
        let w: [__m512; 16] = core::array::from_fn(|i| {
            let (a, b) = (v[i % 8], v[i % 8 + 8]);
            if i < 8 { _mm512_shuffle_f32x4::<0x88>(a, b) } else { _mm512_shuffle_f32x4::<0xDD>(a, b) }
        });
        for (i, row) in w.iter().enumerate() {
            // SAFETY: the caller guarantees the 16 rows are writable.
            unsafe { _mm512_storeu_ps(dst.add(i * ldd), *row) };
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) unsafe fn block(_: *const f32, _: usize, _: *mut f32, _: usize) {
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
