//! Mixed-precision GEMM: `C = act(alpha * op(A) op(B) + beta * C + bias)` with A and B
//! rounded to bf16 (nearest even) as they are packed, and every sum in f32. Where the CPU has
//! AVX-512 BF16, one `vdpbf16ps` does 32 multiply-adds where an f32 FMA does 16, at the same
//! rate (one 512-bit instruction per cycle on Zen 4, measured for both). Training uses it for
//! every dense product with `--precision bf16` ([`Precision`]).
//!
//! The arithmetic, which the scalar twin [`reference::gemm_bf16`](super::reference::gemm_bf16)
//! repeats: the depth is taken in pairs `(2p, 2p + 1)`, an odd last depth paired with zero, and
//! each element of C sums them in one f32 accumulator from 0 in `vdpbf16ps`'s order,
//! `acc = (acc + a(i, 2p+1) b(2p+1, j)) + a(i, 2p) b(2p, j)` (a product of two bf16 values is
//! exact in f32); then `x = alpha acc`, `x = beta C + x` (fused; C is not read when beta is 0)
//! and `act(x + bias)`, as the f32 GEMM stores its tiles. The whole depth is one pass (no k
//! blocking), so the result depends on nothing but the operands. `vdpbf16ps` flushes
//! subnormal inputs and results to zero and the portable kernel keeps them: the two agree bit
//! for bit on normal numbers.
//!
//! Layout: a word holds a pair of bf16 values, the even depth in its low half. B is packed into
//! `NR`-column panels, word `(p, j)` at `p NR + j`, so one 16-word vector meets one broadcast
//! word of A. A is packed once per call: a row-major A row by row (`(i, p)` at `i pairs + p`),
//! any other view pair by pair (`(i, p)` at `p m + i`; vectorised along m when A's columns are
//! contiguous, as in the weight gradient's `x^T`). A transposed B is staged as rows of words and
//! transposed into its panels. Either operand may come already rounded ([`Bf16Ref`], row-major:
//! a trainer's weights, rounded once per step by its optimiser): packing it moves bits without
//! rounding, and an A's rows are its words as they lie. Serial: callers split work across
//! threads.

use wide::{f32x16, u32x16};

use super::bf16::{Bf16Kernel, round_bits};
use super::gemm::{
    Blocking, Epilogue, MatMut, MatRef, NARROW_COLS, NARROW_VECTORS, NarrowStore, check_shapes, gemm_with,
    store_narrow_block, store_tile, with_scratch,
};
use super::quant::bf16_from_f32;
use super::simd::{LANES, load_partial};
use super::transpose::transpose_strided;

/// Rows of C per tile.
const MR: usize = 8;
/// Vectors per tile row.
const NV: usize = 2;
/// Columns of C per tile, and of a packed B panel.
const NR: usize = NV * LANES;
/// Columns of B packed at a time: for a depth of 1024, 256 columns are 512 KiB of words (L2).
const NC: usize = 256;

/// The arithmetic of a product's multiplications.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f32 operands: the f32 GEMM.
    #[default]
    F32,
    /// Operands rounded to bf16, sums in f32: [`gemm_bf16`].
    Bf16,
}

impl Precision {
    pub const NAMES: &'static str = "f32, bf16";

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "f32" => Some(Precision::F32),
            "bf16" => Some(Precision::Bf16),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }

    /// `C = act(alpha * A B + beta * C + bias)` in this precision: f32 with `blocking`
    /// ([`Blocking::DEFAULT`] splits large products across rayon's threads,
    /// [`Blocking::SERIAL`] keeps them on the calling thread), bf16 on the calling thread.
    ///
    /// # Panics
    /// As [`gemm_with`] and [`gemm_bf16`], and if an f32 product is given an operand already
    /// rounded to bf16 (a programming error).
    #[allow(clippy::too_many_arguments)]
    pub fn gemm<'a>(
        self,
        blocking: &Blocking,
        alpha: f32,
        a: impl Into<Operand<'a>>,
        b: impl Into<Operand<'a>>,
        beta: f32,
        c: MatMut<'_>,
        epi: Epilogue<'_>,
    ) {
        match self {
            Precision::F32 => gemm_with(blocking, alpha, a.into().f32(), b.into().f32(), beta, c, epi),
            Precision::Bf16 => gemm_bf16(alpha, a, b, beta, c, epi),
        }
    }
}

/// A row-major matrix whose values are already rounded to bf16 (their bits, rows `ld` apart),
/// which [`gemm_bf16`] reads without rounding them again. A trainer keeps its weights so,
/// rounded once per step by the optimiser, instead of rounding them in every product.
#[derive(Clone, Copy, Debug)]
pub struct Bf16Ref<'a> {
    bits: &'a [u16],
    rows: usize,
    cols: usize,
    ld: usize,
}

impl<'a> Bf16Ref<'a> {
    /// A contiguous row-major `rows x cols` matrix; panics if it does not fit in `bits` (a
    /// programming error).
    pub fn new(bits: &'a [u16], rows: usize, cols: usize) -> Self {
        assert!(
            rows.checked_mul(cols).is_some_and(|len| len <= bits.len()),
            "Bf16Ref {rows}x{cols} does not fit in {} values",
            bits.len()
        );
        Bf16Ref { bits, rows, cols, ld: cols }
    }

    /// Row `i`.
    fn row(&self, i: usize) -> &'a [u16] {
        &self.bits[i * self.ld..][..self.cols]
    }

    /// Columns `c0..c0 + cols`.
    fn columns(&self, c0: usize, cols: usize) -> Self {
        debug_assert!(c0 + cols <= self.cols);
        let offset = if self.rows > 0 && cols > 0 { c0 } else { 0 };
        Bf16Ref { bits: &self.bits[offset..], cols, ..*self }
    }
}

/// An operand of a product: f32 values (a bf16 product rounds them as it packs them), or
/// values already rounded to bf16.
#[derive(Clone, Copy, Debug)]
pub enum Operand<'a> {
    F32(MatRef<'a>),
    Bf16(Bf16Ref<'a>),
}

impl<'a> From<MatRef<'a>> for Operand<'a> {
    fn from(m: MatRef<'a>) -> Self {
        Operand::F32(m)
    }
}

impl<'a> From<Bf16Ref<'a>> for Operand<'a> {
    fn from(m: Bf16Ref<'a>) -> Self {
        Operand::Bf16(m)
    }
}

impl<'a> Operand<'a> {
    /// `(rows, cols)`.
    pub(crate) fn shape(&self) -> (usize, usize) {
        match self {
            Operand::F32(m) => (m.rows, m.cols),
            Operand::Bf16(m) => (m.rows, m.cols),
        }
    }

    /// The f32 view; panics for rounded values, which an f32 product cannot take.
    fn f32(self) -> MatRef<'a> {
        match self {
            Operand::F32(m) => m,
            Operand::Bf16(_) => panic!("an f32 product was given an operand rounded to bf16"),
        }
    }
}

/// `C = act(alpha * A B + beta * C + bias)` for views `a` (`m x k`), `b` (`k x n`) and a
/// row-major `c` (`m x n`), A and B rounded to bf16, with the fastest kernel of this CPU.
///
/// # Panics
/// If the shapes do not agree or `bias` is not `n` long (programming errors).
pub fn gemm_bf16<'a>(
    alpha: f32,
    a: impl Into<Operand<'a>>,
    b: impl Into<Operand<'a>>,
    beta: f32,
    c: MatMut<'_>,
    epi: Epilogue<'_>,
) {
    gemm_bf16_with(Bf16Kernel::detect(), alpha, a, b, beta, c, epi)
}

/// [`gemm_bf16`] with a chosen kernel.
///
/// # Panics
/// As [`gemm_bf16`], and if `kernel` does not run on this CPU.
pub fn gemm_bf16_with<'a>(
    kernel: Bf16Kernel,
    alpha: f32,
    a: impl Into<Operand<'a>>,
    b: impl Into<Operand<'a>>,
    beta: f32,
    c: MatMut<'_>,
    epi: Epilogue<'_>,
) {
    let (a, b) = (a.into(), b.into());
    let (m, n) = check_shapes("gemm_bf16", a.shape(), b.shape(), &c, &epi);
    let k = a.shape().1;
    assert!(kernel.available(), "the {kernel:?} bf16 kernel does not run on this CPU");
    if m == 0 || n == 0 {
        return;
    }
    let pairs = k.div_ceil(2);
    let panel_len = pairs * NR;
    let staging_len = if matches!(&b, Operand::F32(b) if staged(b)) { NC.min(n) * pairs } else { 0 };
    with_scratch(|scratch| {
        let (a_buf, b_buf, staging) = scratch.get_staged(m * pairs, NC.min(n).div_ceil(NR) * panel_len, staging_len);
        let a_words: &mut [u32] = wide::bytemuck::cast_slice_mut(a_buf);
        let b_words: &mut [u32] = wide::bytemuck::cast_slice_mut(b_buf);
        let a_packed = pack_a(kernel, a, pairs, a_words);
        for jc in (0..n).step_by(NC) {
            let cols = NC.min(n - jc);
            let block = match b {
                Operand::F32(b) => Operand::F32(b.sub(0, jc, k, cols)),
                Operand::Bf16(b) => Operand::Bf16(b.columns(jc, cols)),
            };
            pack_b_panels(kernel, block, pairs, b_words, staging);
            for jr in (0..cols).step_by(NR) {
                let panel = &b_words[jr / NR * panel_len..][..panel_len];
                let width = NR.min(cols - jr);
                if width <= NARROW_COLS && matches!(a_packed.layout, ALayout::PairMajor) {
                    let store = NarrowStore {
                        // SAFETY: column jc + jr < n of row 0 lies inside C.
                        c: unsafe { c.data.as_mut_ptr().add(jc + jr) },
                        ldc: c.ld,
                        alpha,
                        beta,
                        epi: Some(&epi).filter(|e| !e.is_none()),
                        col0: jc + jr,
                    };
                    // SAFETY: the m x width rectangle of C from `store.c` is inside the C
                    // borrowed mutably here; the bias, if any, holds n >= col0 + width values.
                    unsafe { narrow_panel_by_rows(kernel, a_packed, panel, width, &store) };
                    continue;
                }
                for ir in (0..m).step_by(MR) {
                    let tile = Tile { a: a_packed, first_row: ir, rows: MR.min(m - ir), b: panel, pairs };
                    let store = TileStore {
                        // SAFETY: row ir, column jc + jr lie inside C (ir < m, jc + jr < n).
                        c: unsafe { c.data.as_mut_ptr().add(ir * c.ld + jc + jr) },
                        ldc: c.ld,
                        cols: NR.min(cols - jr),
                        alpha,
                        beta,
                        epi: &epi,
                        col0: jc + jr,
                    };
                    // SAFETY: the tile's rows x cols rectangle of C starts at `store.c`, inside
                    // the C borrowed mutably here; the bias, if any, holds n >= col0 + cols values.
                    unsafe { run_tile(kernel, &tile, &store) };
                }
            }
        }
    })
}

/// A last panel of at most 4 columns against a pair-major A (the weight gradients' `x^T`):
/// vectors along m, 16 rows of one column each, fed by 16 words of A at a time and one
/// broadcast word of B per column, in blocks of 64 rows x 4 columns (16 accumulators). A
/// whole-width tile would spend 16 lanes on these few columns (100-wide layers: 4 of 100
/// columns, 14 % of the first layer's weight-gradient call). The sums are the tile's, bit for
/// bit.
///
/// # Safety
/// `store.c` must start a writable `a.m x width` rectangle of C (rows `store.ldc` apart);
/// the bias, if any, must hold `store.col0 + width` values; `kernel` must run on this CPU.
unsafe fn narrow_panel_by_rows(kernel: Bf16Kernel, a: PackedA<'_>, panel: &[u32], width: usize, store: &NarrowStore) {
    const BLOCK_ROWS: usize = NARROW_VECTORS * LANES;
    let m = a.m;
    let full = m - m % BLOCK_ROWS;
    for i0 in (0..full).step_by(BLOCK_ROWS) {
        let acc = narrow_sums::<NARROW_VECTORS>(kernel, a, panel, i0, BLOCK_ROWS);
        // SAFETY: rows i0..i0+64 < m and columns 0..width of the caller's rectangle.
        unsafe { store_narrow_block(&acc, i0, BLOCK_ROWS, 0, width, store) };
    }
    for i0 in (full..m).step_by(LANES) {
        let rows = LANES.min(m - i0);
        let acc = narrow_sums::<1>(kernel, a, panel, i0, rows);
        // SAFETY: as above, for the last rows.
        unsafe { store_narrow_block(&acc, i0, rows, 0, width, store) };
    }
}

/// The sums of rows `i0..i0 + rows` (at most `16 RV`; lanes past them are zero) for the
/// first 4 columns of a B panel.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] // `kernel` picks x86 kernels
fn narrow_sums<const RV: usize>(
    kernel: Bf16Kernel,
    a: PackedA<'_>,
    panel: &[u32],
    i0: usize,
    rows: usize,
) -> [[f32x16; NARROW_COLS]; RV] {
    #[cfg(target_arch = "x86_64")]
    if kernel == Bf16Kernel::Avx512Bf16 {
        // SAFETY: the caller checked that the kernel runs on this CPU.
        return unsafe { avx512::narrow_sums::<RV>(a, panel, i0, rows) };
    }
    let mut acc = [[f32x16::ZERO; NARROW_COLS]; RV];
    for p in 0..a.pairs {
        let column = &a.words[p * a.m + i0..][..rows];
        let av: [(f32x16, f32x16); RV] = core::array::from_fn(|v| {
            let words = column.get(v * LANES..).unwrap_or(&[]);
            let lanes: [u32; LANES] = core::array::from_fn(|l| words.get(l).copied().unwrap_or(0));
            widen(u32x16::new(lanes))
        });
        for (j, &word) in panel[p * NR..][..NARROW_COLS].iter().enumerate() {
            let b = splat_word(word);
            for (acc, &a) in acc.iter_mut().zip(&av) {
                acc[j] = pair_dot(acc[j], a, b);
            }
        }
    }
    acc
}

/// The values each word of `w` stands for, `(even, odd)` (a bf16 is the top half of an f32).
#[inline(always)]
fn widen(w: u32x16) -> (f32x16, f32x16) {
    (wide::bytemuck::cast(w << 16), wide::bytemuck::cast(w & u32x16::splat(0xFFFF_0000)))
}

/// One word's two values, `(even, odd)`, each in every lane.
#[inline(always)]
fn splat_word(word: u32) -> (f32x16, f32x16) {
    (f32x16::splat(f32::from_bits(word << 16)), f32x16::splat(f32::from_bits(word & 0xFFFF_0000)))
}

/// `(acc + a_odd b_odd) + a_even b_even`, `vdpbf16ps`'s order (the products are exact, so
/// fusing rounds as the instruction does).
#[inline(always)]
fn pair_dot(acc: f32x16, (a_even, a_odd): (f32x16, f32x16), (b_even, b_odd): (f32x16, f32x16)) -> f32x16 {
    a_even.mul_add(b_even, a_odd.mul_add(b_odd, acc))
}

/// How the packed A addresses word `(i, p)`.
#[derive(Clone, Copy)]
enum ALayout {
    /// At `i pairs + p`.
    RowMajor,
    /// At `p m + i`.
    PairMajor,
}

#[derive(Clone, Copy)]
struct PackedA<'a> {
    words: &'a [u32],
    layout: ALayout,
    m: usize,
    pairs: usize,
}

impl PackedA<'_> {
    fn index(&self, i: usize, p: usize) -> usize {
        match self.layout {
            ALayout::RowMajor => i * self.pairs + p,
            ALayout::PairMajor => p * self.m + i,
        }
    }
}

/// A pair of bf16 values in one word: `even` in the low half.
fn pair_word(even: f32, odd: f32) -> u32 {
    u32::from(bf16_from_f32(even)) | u32::from(bf16_from_f32(odd)) << 16
}

/// `out[j] = pair_word(even[j], odd[j])`, 16 words at a time; values past the end of `even` or
/// `odd` (all of `odd` when there is none: an odd depth's last pair) count as zero.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] // `kernel` picks x86 kernels
fn pair_words(kernel: Bf16Kernel, even: &[f32], odd: Option<&[f32]>, out: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if kernel == Bf16Kernel::Avx512Bf16 {
        // SAFETY: the caller checked that the kernel runs on this CPU.
        return unsafe { avx512::pair_words(even, odd, out) };
    }
    for (v, chunk) in out.chunks_mut(LANES).enumerate() {
        let lanes = |run: &[f32]| {
            let run = run.get(v * LANES..).unwrap_or(&[]);
            round_bits(load_partial(&run[..run.len().min(LANES)], 0.0))
        };
        let low = lanes(even);
        let high = odd.map_or(u32x16::ZERO, lanes);
        let high: u32x16 = high << 16;
        let words = (low | high).to_array();
        chunk.copy_from_slice(&words[..chunk.len()]);
    }
}

/// Packs A (`m x k`) into `buf` (`m pairs` words).
fn pack_a<'w>(kernel: Bf16Kernel, a: Operand<'_>, pairs: usize, buf: &'w mut [u32]) -> PackedA<'w> {
    let (m, k) = a.shape();
    let buf = &mut buf[..m * pairs];
    let a = match a {
        Operand::F32(a) => a,
        Operand::Bf16(a) => {
            if pairs > 0 {
                for (i, words) in buf.chunks_exact_mut(pairs).enumerate() {
                    row_words(a.row(i), words);
                }
            }
            return PackedA { words: buf, layout: ALayout::RowMajor, m, pairs };
        }
    };
    let layout = if a.cs == 1 {
        if pairs > 0 {
            for (i, words) in buf.chunks_exact_mut(pairs).enumerate() {
                pack_row_pairs(kernel, &a.data[i * a.rs..][..k], words);
            }
        }
        ALayout::RowMajor
    } else {
        for (p, words) in buf.chunks_exact_mut(m).enumerate() {
            let (even, odd) = (2 * p, 2 * p + 1);
            if a.rs == 1 {
                let column = |kk: usize| &a.data[kk * a.cs..][..m];
                pair_words(kernel, column(even), (odd < k).then(|| column(odd)), words);
            } else {
                for (i, word) in words.iter_mut().enumerate() {
                    *word = pair_word(a.at(i, even), if odd < k { a.at(i, odd) } else { 0.0 });
                }
            }
        }
        ALayout::PairMajor
    };
    PackedA { words: buf, layout, m, pairs }
}

/// One row's consecutive values as pair words (`words.len() = row.len().div_ceil(2)`), 16
/// values rounded at a time.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))] // `kernel` picks x86 kernels
fn pack_row_pairs(kernel: Bf16Kernel, row: &[f32], words: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if kernel == Bf16Kernel::Avx512Bf16 {
        // SAFETY: the caller checked that the kernel runs on this CPU.
        return unsafe { avx512::row_pairs(row, words) };
    }
    for (chunk, out) in row.chunks(LANES).zip(words.chunks_mut(LANES / 2)) {
        let bits = round_bits(load_partial(chunk, 0.0)).to_array();
        for (word, pair) in out.iter_mut().zip(bits.chunks_exact(2)) {
            *word = pair[0] | pair[1] << 16;
        }
    }
}

/// One row of rounded values as pair words (`words.len() = row.len().div_ceil(2)`): the row's
/// bytes (the even value low, as on every target the crate builds for: little-endian).
fn row_words(row: &[u16], words: &mut [u32]) {
    let halves: &mut [u16] = wide::bytemuck::cast_slice_mut(words);
    halves[..row.len()].copy_from_slice(row);
    halves[row.len()..].fill(0);
}

/// `out[j] = even[j] | odd[j] << 16` for rounded values; past the end of `even` or `odd` (all
/// of `odd` when there is none), zero.
fn pair_bits(even: &[u16], odd: Option<&[u16]>, out: &mut [u32]) {
    let width = even.len();
    match odd {
        Some(odd) => {
            for ((word, &e), &o) in out.iter_mut().zip(even).zip(odd) {
                *word = u32::from(e) | u32::from(o) << 16;
            }
        }
        None => out.iter_mut().zip(even).for_each(|(word, &e)| *word = u32::from(e)),
    }
    out[width..].fill(0);
}

/// Whether B is a transposed matrix (columns contiguous), which [`pack_b_panels`] stages as
/// rows of words and transposes.
fn staged(b: &MatRef<'_>) -> bool {
    b.cs != 1 && b.rs == 1
}

/// Packs `block` (`k x n`) into `NR`-column panels of `pairs * NR` words; columns past `n`
/// are zero. A transposed block (columns contiguous: the input gradient's `W^T` or `dz^T`)
/// goes through `staging` (`n pairs` floats): each column packed as a row of words, then
/// the words transposed into the panels.
fn pack_b_panels(kernel: Bf16Kernel, block: Operand<'_>, pairs: usize, buf: &mut [u32], staging: &mut [f32]) {
    let (k, n) = block.shape();
    if pairs == 0 {
        return;
    }
    let block = match block {
        Operand::F32(block) => block,
        Operand::Bf16(block) => {
            for (panel_index, panel) in buf.chunks_exact_mut(pairs * NR).take(n.div_ceil(NR)).enumerate() {
                let j0 = panel_index * NR;
                let width = NR.min(n - j0);
                for (p, words) in panel.chunks_exact_mut(NR).enumerate() {
                    let row = |kk: usize| &block.row(kk)[j0..j0 + width];
                    pair_bits(row(2 * p), (2 * p + 1 < k).then(|| row(2 * p + 1)), words);
                }
            }
            return;
        }
    };
    if staged(&block) {
        let rows: &mut [u32] = wide::bytemuck::cast_slice_mut(&mut staging[..n * pairs]);
        for (j, words) in rows.chunks_exact_mut(pairs).enumerate() {
            pack_row_pairs(kernel, &block.data[j * block.cs..][..k], words);
        }
        // Words are moved as f32 bit patterns: the transpose does no arithmetic on them.
        let rows: &[f32] = wide::bytemuck::cast_slice(rows);
        for (panel_index, panel) in buf.chunks_exact_mut(pairs * NR).take(n.div_ceil(NR)).enumerate() {
            let j0 = panel_index * NR;
            let width = NR.min(n - j0);
            if width < NR {
                panel.fill(0);
            }
            let panel: &mut [f32] = wide::bytemuck::cast_slice_mut(panel);
            transpose_strided(&rows[j0 * pairs..], pairs, width, pairs, panel, NR);
        }
        return;
    }
    for (panel_index, panel) in buf.chunks_exact_mut(pairs * NR).take(n.div_ceil(NR)).enumerate() {
        let j0 = panel_index * NR;
        let width = NR.min(n - j0);
        for (p, words) in panel.chunks_exact_mut(NR).enumerate() {
            let (even, odd) = (2 * p, 2 * p + 1);
            if block.cs == 1 {
                let row = |kk: usize| &block.data[kk * block.rs + j0..][..width];
                pair_words(kernel, row(even), (odd < k).then(|| row(odd)), words);
            } else {
                for (j, word) in words.iter_mut().enumerate() {
                    *word = if j < width {
                        pair_word(block.at(even, j0 + j), if odd < k { block.at(odd, j0 + j) } else { 0.0 })
                    } else {
                        0
                    };
                }
            }
        }
    }
}

/// The operands of one tile: rows `first_row..first_row + rows` of the packed A against one
/// B panel.
struct Tile<'a> {
    a: PackedA<'a>,
    first_row: usize,
    rows: usize,
    b: &'a [u32],
    pairs: usize,
}

/// Where and how a tile is stored (see `gemm::store_tile`).
struct TileStore<'e, 'b> {
    c: *mut f32,
    ldc: usize,
    cols: usize,
    alpha: f32,
    beta: f32,
    epi: &'e Epilogue<'b>,
    col0: usize,
}

/// Rows the kernel computes for a tile of `rows`: the fewest of 1, 2, 4 and `MR`.
fn kernel_rows(rows: usize) -> usize {
    match rows {
        1 | 2 => rows,
        3 | 4 => 4,
        _ => MR,
    }
}

/// Runs the tile with `kernel`, at the kernel height and width the tile needs.
///
/// # Safety
/// `store.c` must address a writable `tile.rows x store.cols` rectangle with rows
/// `store.ldc` apart; the bias, if any, must hold `store.col0 + store.cols` values; `kernel`
/// must run on this CPU.
unsafe fn run_tile(kernel: Bf16Kernel, tile: &Tile<'_>, store: &TileStore<'_, '_>) {
    macro_rules! dispatch {
        ($kernel:ident) => {
            // SAFETY: forwarded from this function's contract.
            unsafe {
                match (store.cols > LANES, kernel_rows(tile.rows), tile.a.layout) {
                    (false, 1, ALayout::RowMajor) => $kernel::<1, 1, false>(tile, store),
                    (false, 2, ALayout::RowMajor) => $kernel::<1, 2, false>(tile, store),
                    (false, 4, ALayout::RowMajor) => $kernel::<1, 4, false>(tile, store),
                    (false, _, ALayout::RowMajor) => $kernel::<1, MR, false>(tile, store),
                    (true, 1, ALayout::RowMajor) => $kernel::<NV, 1, false>(tile, store),
                    (true, 2, ALayout::RowMajor) => $kernel::<NV, 2, false>(tile, store),
                    (true, 4, ALayout::RowMajor) => $kernel::<NV, 4, false>(tile, store),
                    (true, _, ALayout::RowMajor) => $kernel::<NV, MR, false>(tile, store),
                    (false, 1, ALayout::PairMajor) => $kernel::<1, 1, true>(tile, store),
                    (false, 2, ALayout::PairMajor) => $kernel::<1, 2, true>(tile, store),
                    (false, 4, ALayout::PairMajor) => $kernel::<1, 4, true>(tile, store),
                    (false, _, ALayout::PairMajor) => $kernel::<1, MR, true>(tile, store),
                    (true, 1, ALayout::PairMajor) => $kernel::<NV, 1, true>(tile, store),
                    (true, 2, ALayout::PairMajor) => $kernel::<NV, 2, true>(tile, store),
                    (true, 4, ALayout::PairMajor) => $kernel::<NV, 4, true>(tile, store),
                    (true, _, ALayout::PairMajor) => $kernel::<NV, MR, true>(tile, store),
                }
            }
        };
    }
    match kernel {
        Bf16Kernel::Portable => dispatch!(portable_tile),
        Bf16Kernel::Avx512Bf16 => dispatch!(avx512_tile),
    }
}

/// Stores a finished tile.
///
/// # Safety
/// As [`run_tile`].
#[inline(always)]
unsafe fn store<const V: usize, const R: usize>(acc: &[[f32x16; V]; R], tile: &Tile<'_>, to: &TileStore<'_, '_>) {
    let epi = Some(to.epi);
    // SAFETY: forwarded from the caller.
    unsafe { store_tile(acc, to.c, to.ldc, tile.rows, to.cols, to.alpha, to.beta, epi, to.col0) }
}

/// The portable kernel: each word widened to its two f32 values (a bf16 is the top half of
/// an f32), two fused multiply-adds per pair, the odd depth first as `vdpbf16ps` adds it.
///
/// # Safety
/// As [`run_tile`] (the operands are read through bounds-checked slices).
#[inline(never)]
unsafe fn portable_tile<const V: usize, const R: usize, const PAIR_MAJOR: bool>(
    tile: &Tile<'_>,
    to: &TileStore<'_, '_>,
) {
    // Rows past the tile's last repeat it: in bounds, never stored.
    let rows: [usize; R] = core::array::from_fn(|i| tile.first_row + i.min(tile.rows - 1));
    let mut acc = [[f32x16::ZERO; V]; R];
    for p in 0..tile.pairs {
        let b: [(f32x16, f32x16); V] = core::array::from_fn(|v| {
            let lanes: [u32; LANES] = tile.b[p * NR + v * LANES..][..LANES].try_into().expect("16 words");
            widen(u32x16::new(lanes))
        });
        for (acc_row, &i) in acc.iter_mut().zip(&rows) {
            let a = splat_word(tile.a.words[tile.a.index(i, p)]);
            for (acc, &b) in acc_row.iter_mut().zip(&b) {
                *acc = pair_dot(*acc, a, b);
            }
        }
    }
    // SAFETY: forwarded from this function's contract.
    unsafe { store(&acc, tile, to) }
}

#[cfg(target_arch = "x86_64")]
use avx512::tile as avx512_tile;

/// Off x86-64 the AVX-512 kernel is never available (`Bf16Kernel::available`).
///
/// # Safety
/// Never called.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn avx512_tile<const V: usize, const R: usize, const PAIR_MAJOR: bool>(_: &Tile<'_>, _: &TileStore<'_, '_>) {
    unreachable!("the AVX-512 BF16 kernel is not available off x86_64")
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;
    use core::arch::x86_64::*;

    /// The low `n` (at most 16) lanes.
    fn mask(n: usize) -> __mmask16 {
        ((1u32 << n.min(LANES)) - 1) as __mmask16
    }

    /// `_mm512_cvtne2ps_pbh` rounds as [`round_bits`] does (nearest even, NaN kept), but
    /// flushes subnormals to zero, as `vdpbf16ps` would read them.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW, VL and BF16.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn pair_words(even: &[f32], odd: Option<&[f32]>, out: &mut [u32]) {
        // Word j takes bf16 j (from `even`) and bf16 16 + j (from `odd`) of the conversion.
        let interleave = _mm512_set_epi16(
            31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17,
            1, 16, 0,
        );
        for (v, chunk) in out.chunks_mut(LANES).enumerate() {
            let lanes = |run: &[f32]| {
                let start = (v * LANES).min(run.len());
                // SAFETY: the mask covers the values of `run` from `start`, at most 16.
                unsafe { _mm512_maskz_loadu_ps(mask(run.len() - start), run.as_ptr().add(start)) }
            };
            let low = lanes(even);
            let high = odd.map_or(_mm512_setzero_ps(), lanes);
            // SAFETY: __m512bh and __m512i are both 64 bytes of vector register.
            let halves = unsafe { core::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(high, low)) };
            let words = _mm512_permutexvar_epi16(interleave, halves);
            // SAFETY: the mask covers the chunk's words.
            unsafe { _mm512_mask_storeu_epi32(chunk.as_mut_ptr().cast(), mask(chunk.len()), words) };
        }
    }

    /// A row's consecutive values as words: the converted values in order, 32 at a time.
    ///
    /// # Safety
    /// As [`pair_words`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn row_pairs(row: &[f32], words: &mut [u32]) {
        for (chunk, out) in row.chunks(2 * LANES).zip(words.chunks_mut(LANES)) {
            let half = |lo: usize| {
                let n = chunk.len().saturating_sub(lo);
                // SAFETY: the mask covers the chunk's values from `lo` (none: no access).
                unsafe { _mm512_maskz_loadu_ps(mask(n), chunk.as_ptr().wrapping_add(lo)) }
            };
            // SAFETY: __m512bh and __m512i are both 64 bytes of vector register.
            let words = unsafe { core::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(half(LANES), half(0))) };
            // SAFETY: the mask covers the `out` words.
            unsafe { _mm512_mask_storeu_epi32(out.as_mut_ptr().cast(), mask(out.len()), words) };
        }
    }

    /// [`narrow_sums`](super::narrow_sums) with `vdpbf16ps`.
    ///
    /// # Safety
    /// The CPU must have AVX-512 F, BW, VL and BF16; rows `i0..i0 + rows` must lie in A.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn narrow_sums<const RV: usize>(
        a: PackedA<'_>,
        panel: &[u32],
        i0: usize,
        rows: usize,
    ) -> [[f32x16; NARROW_COLS]; RV] {
        let mut acc = [[_mm512_setzero_ps(); NARROW_COLS]; RV];
        for p in 0..a.pairs {
            let column = &a.words[p * a.m + i0..][..rows];
            // SAFETY: each mask covers the words of `column` from 16 v (none past its end:
            // no access); __m512i and __m512bh are both 64 bytes of vector register.
            let av: [__m512bh; RV] = core::array::from_fn(|v| unsafe {
                let start = (v * LANES).min(rows);
                let words = _mm512_maskz_loadu_epi32(mask(rows - start), column.as_ptr().add(start).cast());
                core::mem::transmute::<__m512i, __m512bh>(words)
            });
            for (j, &word) in panel[p * NR..][..NARROW_COLS].iter().enumerate() {
                // SAFETY: as above.
                let bj = unsafe { core::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(word as i32)) };
                for (acc, &av) in acc.iter_mut().zip(&av) {
                    acc[j] = _mm512_dpbf16_ps(acc[j], av, bj);
                }
            }
        }
        // SAFETY: __m512 and f32x16 are both 16 f32 lanes.
        unsafe { core::ptr::read((&raw const acc).cast()) }
    }

    /// Per pair: `V` loads of B, `R` broadcasts of A, `R V` `vdpbf16ps` (8 x 32 tiles keep 16
    /// accumulators, enough independent chains to cover the instruction's latency).
    ///
    /// # Safety
    /// As [`run_tile`](super::run_tile), and the CPU must have AVX-512 F, BW, VL and BF16.
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn tile<const V: usize, const R: usize, const PAIR_MAJOR: bool>(
        tile: &Tile<'_>,
        to: &TileStore<'_, '_>,
    ) {
        let a = tile.a;
        // Rows past the tile's last repeat it: in bounds, never stored.
        let rows: [*const u32; R] = core::array::from_fn(|i| {
            let row = tile.first_row + i.min(tile.rows - 1);
            a.words.as_ptr().wrapping_add(a.index(row, 0))
        });
        let b = tile.b.as_ptr();
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for p in 0..tile.pairs {
            // SAFETY: the panel holds `pairs` rows of NR words; V * 16 <= NR.
            let bv: [__m512bh; V] = core::array::from_fn(|v| unsafe {
                core::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(b.add(p * NR + v * LANES).cast()))
            });
            for (acc_row, &row) in acc.iter_mut().zip(&rows) {
                // SAFETY: word (row, p) lies in the packed A: `p` from the row's word 0 in
                // row-major order, `p m` in pair-major order.
                let word = unsafe { *row.add(if PAIR_MAJOR { p * a.m } else { p }) };
                // SAFETY: __m512i and __m512bh are both 64 bytes of vector register.
                let av = unsafe { core::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(word as i32)) };
                for (acc, &bv) in acc_row.iter_mut().zip(&bv) {
                    *acc = _mm512_dpbf16_ps(*acc, av, bv);
                }
            }
        }
        // SAFETY: __m512 and f32x16 are both 16 f32 lanes (`map` here was a call per tile).
        let acc: [[f32x16; V]; R] = unsafe { core::ptr::read((&raw const acc).cast()) };
        // SAFETY: forwarded from this function's contract.
        unsafe { store(&acc, tile, to) }
    }
}
