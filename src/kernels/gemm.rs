//! f32 GEMM: `C = act(alpha * op(A) op(B) + beta * C + bias)`, cache-blocked in the BLIS
//! five-loop structure around a `wide::f32x16` microkernel, with the dense layer's bias and
//! activation applied on the register tile before it is stored (the "epilogue").
//!
//! Loops, outermost first (vocabulary of the BLIS papers):
//! - JC over n by `nc`: the B block (`kc x nc`) lives in L3.
//! - PC over k by `kc`: never parallel, every iteration writes the same C. Only the first
//!   applies the caller's `beta` (later ones accumulate) and only the last the epilogue.
//! - IC over m by `mc`: the A block (`mc x kc`) lives in L2.
//! - JR over n by `NR`: one B micro-panel (`kc x NR`), larger than L1 at the default `kc`,
//!   is streamed from L2 or L3 with software prefetches ahead of the microkernel.
//! - IR over m by `MR` (A read in place) or `A_PANEL_ROWS` (A packed): one microkernel call
//!   computes a tile of that many rows and `NR` columns in registers.
//!
//! Operands are strided views ([`MatRef`]), so transposes cost nothing to express. A is read
//! directly with its strides or, for large products, packed into `A_PANEL_ROWS`-row
//! micro-panels; B is read directly when its rows are contiguous (the small layer shapes,
//! where packing would cost as much as the arithmetic) or packed into `NR`-column
//! micro-panels (transposed B, or large m where the panels are reused many times). A last
//! panel narrower than one vector would waste most of each FMA's lanes, so it is computed
//! another way where the layout allows: along m (16 rows per vector) when A is transposed,
//! as dot products along k when A's rows are contiguous (up to 4 columns). Threads (with
//! `std`) split C into disjoint row or column ranges, only when a product is large enough to
//! gain; results do not depend on the thread count.
//!
//! Raw pointers stay inside this file; every `unsafe` block states why its accesses are in
//! bounds.

use alloc::vec::Vec;
use wide::f32x16;

use super::activation::Activation;
use super::simd::{LANES, broadcast4, broadcast4_partial, load, load_partial, store, store_partial};
use super::transpose::transpose_strided;

/// Rows of C per microkernel tile when A is read in place.
pub const MR: usize = 8;
/// Rows of a packed A micro-panel, the tallest tile: 24 accumulators, so each B row loaded
/// meets 12 broadcasts (against 8 for `MR`), for the large products that pack A.
pub const A_PANEL_ROWS: usize = 12;
/// Threads split C's rows at multiples of this (of both tile heights), so that every row
/// falls in the same tile, hence gets the same bits, whatever the thread count.
#[cfg(feature = "std")]
const SPLIT_ROWS: usize = 24;
/// `f32x16` vectors per tile row; `NR = NV * 16` columns of C per tile.
const NV: usize = 2;
/// Columns of C per microkernel tile.
pub const NR: usize = NV * LANES;

/// A read-only strided matrix view: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub(super) data: &'a [f32],
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) rs: usize,
    pub(super) cs: usize,
}

impl<'a> MatRef<'a> {
    /// A contiguous row-major `rows x cols` matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols, 1)
    }

    /// A general view; panics if any element would lie outside `data` (a programming error).
    pub fn strided(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        if rows > 0 && cols > 0 {
            let last =
                (rows - 1).checked_mul(rs).and_then(|r| (cols - 1).checked_mul(cs).and_then(|c| r.checked_add(c)));
            assert!(
                last.is_some_and(|l| l < data.len()),
                "MatRef {rows}x{cols} with strides ({rs}, {cs}) does not fit in {} elements",
                data.len()
            );
        }
        MatRef { data, rows, cols, rs, cs }
    }

    /// The transpose, as a view of the same data.
    pub fn t(self) -> Self {
        MatRef { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Element `(i, j)`.
    pub fn at(&self, i: usize, j: usize) -> f32 {
        assert!(i < self.rows && j < self.cols, "MatRef index ({i}, {j}) out of bounds");
        self.data[i * self.rs + j * self.cs]
    }

    /// The `rows x cols` sub-matrix starting at `(r0, c0)`.
    pub(super) fn sub(&self, r0: usize, c0: usize, rows: usize, cols: usize) -> Self {
        debug_assert!(r0 + rows <= self.rows && c0 + cols <= self.cols);
        let offset = if rows > 0 && cols > 0 { r0 * self.rs + c0 * self.cs } else { 0 };
        MatRef { data: &self.data[offset..], rows, cols, rs: self.rs, cs: self.cs }
    }
}

/// A mutable row-major matrix view with leading dimension `ld`.
#[derive(Debug)]
pub struct MatMut<'a> {
    pub(super) data: &'a mut [f32],
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) ld: usize,
}

impl<'a> MatMut<'a> {
    /// A contiguous row-major `rows x cols` matrix.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols)
    }

    /// Rows `ld` elements apart; panics if the view does not fit in `data`.
    pub fn strided(data: &'a mut [f32], rows: usize, cols: usize, ld: usize) -> Self {
        if rows > 0 && cols > 0 {
            assert!(cols <= ld, "MatMut: {cols} columns do not fit in leading dimension {ld}");
            let last = (rows - 1).checked_mul(ld).and_then(|r| r.checked_add(cols - 1));
            assert!(
                last.is_some_and(|l| l < data.len()),
                "MatMut {rows}x{cols} (ld {ld}) does not fit in {} elements",
                data.len()
            );
        }
        MatMut { data, rows, cols, ld }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn at(&self, i: usize, j: usize) -> f32 {
        assert!(i < self.rows && j < self.cols, "MatMut index ({i}, {j}) out of bounds");
        self.data[i * self.ld + j]
    }

    pub fn at_mut(&mut self, i: usize, j: usize) -> &mut f32 {
        assert!(i < self.rows && j < self.cols, "MatMut index ({i}, {j}) out of bounds");
        &mut self.data[i * self.ld + j]
    }
}

/// What happens to each element of the result before it is stored: `act(x + bias[j])`.
#[derive(Clone, Copy, Debug)]
pub struct Epilogue<'a> {
    /// One value per column of C.
    pub bias: Option<&'a [f32]>,
    /// Applied element-wise (softmax is row-wise and passes through).
    pub activation: Activation,
}

impl Epilogue<'_> {
    /// Store `alpha * AB + beta * C` as it is.
    pub const NONE: Epilogue<'static> = Epilogue { bias: None, activation: Activation::Identity };

    pub(super) fn is_none(&self) -> bool {
        self.bias.is_none() && self.activation == Activation::Identity
    }
}

/// Whether an operand is packed into micro-panels before the microkernel reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packing {
    /// Pack only where it pays (see [`Blocking::DEFAULT`]).
    Auto,
    Always,
    /// Read in place. B is still packed when its rows are not contiguous.
    Never,
}

/// Block sizes of the five loops, and when to pack. Injectable so that tests reach the
/// multi-block paths with small matrices.
#[derive(Clone, Copy, Debug)]
pub struct Blocking {
    /// Rows of the A block kept in L2 (a multiple of `MR`).
    pub mc: usize,
    /// Depth of the A and B blocks: `kc x NR` floats of B stay in L1.
    pub kc: usize,
    /// Columns of the B block kept in L3 (a multiple of `NR`).
    pub nc: usize,
    pub pack_a: Packing,
    pub pack_b: Packing,
    /// Products below this many flops (2mnk) run on one thread.
    pub parallel_min_flops: usize,
}

impl Blocking {
    /// For this project's machines (Zen 5 and Cascade Lake: 48 or 32 KiB L1d, 1 MiB L2 per
    /// core, 32 MiB or more L3): A block 96 x 1024 x 4 B = 384 KiB in L2; B micro-panels
    /// (1024 x 32 x 4 B = 128 KiB) streamed from L2 or L3 with software prefetches rather
    /// than kept in L1; B block 1024 x 1024 x 4 B = 4 MiB in L3. A deep kc loads and stores
    /// each C tile fewer times (C rows 4 KiB apart share an L1 set). On a Cascade Lake Xeon,
    /// 1024^3: kc 256 with A packed 92, kc 512 105, kc 1024 106-109 GFLOP/s; the first
    /// layer's forward (32, 3072, 100) is the same at kc 256 and 1024.
    pub const DEFAULT: Blocking = Blocking {
        mc: 96,
        kc: 1024,
        nc: 1024,
        pack_a: Packing::Auto,
        pack_b: Packing::Auto,
        parallel_min_flops: 4_000_000,
    };

    /// [`Blocking::DEFAULT`] on the calling thread only, for callers that split the work
    /// across threads themselves.
    pub const SERIAL: Blocking = Blocking { parallel_min_flops: usize::MAX, ..Blocking::DEFAULT };

    fn checked(self) -> Self {
        assert!(
            self.mc >= MR && self.mc.is_multiple_of(MR) && self.nc >= NR && self.nc.is_multiple_of(NR) && self.kc > 0,
            "Blocking {self:?}: mc must be a multiple of {MR}, nc of {NR}, kc positive"
        );
        self
    }
}

impl Default for Blocking {
    fn default() -> Self {
        Blocking::DEFAULT
    }
}

/// `C = act(alpha * A B + beta * C + bias)` for views `a` (`m x k`), `b` (`k x n`) and a
/// row-major `c` (`m x n`). With `beta == 0`, C is write-only: its old contents (even NaN)
/// never reach the result.
///
/// # Panics
/// If the shapes do not agree or `bias` is not `n` long (programming errors).
pub fn gemm(alpha: f32, a: MatRef<'_>, b: MatRef<'_>, beta: f32, c: MatMut<'_>, epi: Epilogue<'_>) {
    gemm_with(&Blocking::DEFAULT, alpha, a, b, beta, c, epi)
}

/// [`gemm`] with explicit block sizes.
pub fn gemm_with(
    blocking: &Blocking,
    alpha: f32,
    a: MatRef<'_>,
    b: MatRef<'_>,
    beta: f32,
    c: MatMut<'_>,
    epi: Epilogue<'_>,
) {
    let blocking = blocking.checked();
    let (m, n) = check_shapes("gemm", (a.rows, a.cols), (b.rows, b.cols), &c, &epi);
    if m == 0 || n == 0 {
        return;
    }
    let pack_a = packs_a(&blocking, &a, n);
    let product = Product { alpha, a, b, beta, c: Target { ptr: c.data.as_mut_ptr(), ld: c.ld }, epi, pack_a };
    #[cfg(feature = "std")]
    if parallel::run(&blocking, product) {
        return;
    }
    // SAFETY: the target covers exactly the m x n view `c`, which we borrow mutably.
    unsafe { gemm_serial(&blocking, product) }
}

/// Panics unless A (`m x k`), B (`k x n`), C (`m x n`) and the bias (`n`) agree; returns
/// `(m, n)`.
pub(super) fn check_shapes(
    name: &str,
    (m, k): (usize, usize),
    (b_rows, n): (usize, usize),
    c: &MatMut<'_>,
    epi: &Epilogue<'_>,
) -> (usize, usize) {
    assert_eq!(b_rows, k, "{name}: A is {m}x{k} but B has {b_rows} rows");
    assert!(c.rows == m && c.cols == n, "{name}: C is {}x{}, expected {m}x{n}", c.rows, c.cols);
    if let Some(bias) = epi.bias {
        assert_eq!(bias.len(), n, "{name}: bias has {} values for {n} columns", bias.len());
    }
    (m, n)
}

/// One product, `C = act(alpha * A B + beta * C + bias)`, as the levels below [`gemm_with`]
/// pass it down (a thread's part of it is again a `Product`).
#[derive(Clone, Copy)]
struct Product<'a> {
    alpha: f32,
    a: MatRef<'a>,
    b: MatRef<'a>,
    beta: f32,
    c: Target,
    epi: Epilogue<'a>,
    /// Whether A is packed: decided for the whole product, as it sets the tiles' heights.
    pack_a: bool,
}

/// Where C lives: row-major, `ld` apart. Raw so that threads can share disjoint parts.
#[derive(Clone, Copy)]
struct Target {
    ptr: *mut f32,
    ld: usize,
}

impl Target {
    /// The target starting `offset` elements further on.
    ///
    /// # Safety
    /// The offset must stay inside C.
    #[cfg(feature = "std")]
    unsafe fn offset(self, offset: usize) -> Target {
        // SAFETY: the caller keeps the offset inside C.
        Target { ptr: unsafe { self.ptr.add(offset) }, ld: self.ld }
    }
}

// SAFETY: threads receive Targets covering disjoint rectangles of one C (see `parallel`).
unsafe impl Send for Target {}
unsafe impl Sync for Target {}

#[cfg(feature = "std")]
mod parallel {
    use super::*;

    /// Splits C among rayon's threads when the product is large enough; returns false when it
    /// should run on this thread instead.
    pub(super) fn run(blocking: &Blocking, product: Product<'_>) -> bool {
        let Product { a, b, c, epi, .. } = product;
        let (m, k, n) = (a.rows, a.cols, b.cols);
        let threads = rayon::current_num_threads();
        let flops = 2usize.saturating_mul(m).saturating_mul(n).saturating_mul(k);
        if threads < 2 || flops < blocking.parallel_min_flops {
            return false;
        }
        // Rows when there are enough of them (each thread keeps all of B), else columns.
        let split_rows = m >= SPLIT_ROWS * threads || n < 2 * NR;
        let (len, unit) = if split_rows { (m, SPLIT_ROWS) } else { (n, NR) };
        let units = len.div_ceil(unit);
        let parts = threads.min(units);
        if parts < 2 {
            return false;
        }
        crate::parallel::map_parts((0..parts).collect(), |p| {
            let start = units * p / parts * unit;
            let end = (units * (p + 1) / parts * unit).min(len);
            let part = if split_rows {
                Product {
                    a: a.sub(start, 0, end - start, k),
                    // SAFETY: rows start..end of C, disjoint from the other parts' rows.
                    c: unsafe { c.offset(start * c.ld) },
                    ..product
                }
            } else {
                Product {
                    b: b.sub(0, start, k, end - start),
                    // SAFETY: columns start..end of C, disjoint from the other parts' columns.
                    c: unsafe { c.offset(start) },
                    epi: Epilogue { bias: epi.bias.map(|bias| &bias[start..end]), ..epi },
                    ..product
                }
            };
            // SAFETY: the part's C covers its views' rows x cols inside C, disjoint across parts.
            unsafe { gemm_serial(blocking, part) }
        });
        true
    }
}

/// One thread's GEMM over an `a.rows x b.cols` rectangle of C.
///
/// # Safety
/// `product.c` must address a writable `a.rows x b.cols` row-major rectangle that nothing
/// else accesses during the call.
unsafe fn gemm_serial(blocking: &Blocking, product: Product<'_>) {
    let Product { a, b, .. } = product;
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let Blocking { mc, kc, nc, .. } = *blocking;
    // Packing B pays when its panels are read by many microkernel calls (one per IR step,
    // m / MR of them), but B read in place is prefetched (`B_PREFETCH_ROWS`): on Zen 4 it
    // matched or beat packing up to 256 rows ((50,1536,100) 154 -> 141 us, (128,3072,100)
    // 738 -> 706 us, 1024^3 equal), so only products of more than 16 tiles pack it. Rows of
    // B must be contiguous to be read in place.
    let pack_b = b.cs != 1
        || match blocking.pack_b {
            Packing::Auto => m > 16 * MR,
            Packing::Always => true,
            Packing::Never => false,
        };
    let pack_a = product.pack_a;
    let restride_a = !pack_a && aliasing_columns(&a);
    with_scratch(|scratch| {
        let b_len = if pack_b { kc.min(k) * nc.min(n).next_multiple_of(NR) } else { kc.min(k) * NR };
        let a_len = if pack_a {
            (mc + 1).min(m).next_multiple_of(A_PANEL_ROWS) * kc.min(k)
        } else if restride_a {
            restrided_ld((mc + 1).min(m)) * kc.min(k)
        } else {
            0
        };
        let (a_buf, b_buf) = scratch.get(a_len, b_len);
        // SAFETY: forwarded from this function's contract.
        unsafe { gemm_blocks(blocking, restride_a, pack_b, a_buf, b_buf, product) }
    })
}

/// Whether to pack A (`m x k`, times B's `n` columns) into [`A_PANEL_ROWS`]-row
/// micro-panels: always when neither its rows nor its columns are contiguous; a row-major A
/// when it is large and many B panels reuse it (a tile's rows, often a multiple of 4 KiB
/// apart, share one L1 set, and the taller packed tile loads B less often). A transposed
/// view (the weight gradient's x^T) is read in place: packed, it was twice as slow.
/// Cascade Lake Xeon, packed against in place: 1024^3 108 / 100 GFLOP/s, 512^3 74 / 69;
/// but (256, 3072, 100) 80 / 99 and (256, 100, 100) 90 / 115, where only 4 panels share
/// the packing's cost.
fn packs_a(blocking: &Blocking, a: &MatRef<'_>, n: usize) -> bool {
    match blocking.pack_a {
        Packing::Auto => a.rs != 1 && (a.cs != 1 || (a.rows >= PACK_A_MIN_ROWS && n >= PACK_A_MIN_COLS)),
        Packing::Always => true,
        Packing::Never => false,
    }
}

/// Rows and columns of C from which a row-major A is packed (see [`packs_a`]).
const PACK_A_MIN_ROWS: usize = 128;
const PACK_A_MIN_COLS: usize = 256;

/// Packing buffers, kept per thread (with `std`) so that the many small products of a
/// training step do not allocate.
#[derive(Default)]
pub(super) struct Scratch {
    a: AlignedBuffer,
    b: AlignedBuffer,
    /// The bf16 GEMM's staging area for a transposed B.
    staging: AlignedBuffer,
}

impl Scratch {
    /// Buffers of at least the given lengths (packing overwrites every element it reads).
    pub(super) fn get(&mut self, a_len: usize, b_len: usize) -> (&mut [f32], &mut [f32]) {
        (self.a.get(a_len), self.b.get(b_len))
    }

    /// As [`Scratch::get`], and a third buffer.
    pub(super) fn get_staged(
        &mut self,
        a_len: usize,
        b_len: usize,
        staging_len: usize,
    ) -> (&mut [f32], &mut [f32], &mut [f32]) {
        (self.a.get(a_len), self.b.get(b_len), self.staging.get(staging_len))
    }
}

/// A reused buffer whose slice starts on a cache line, so that the rows of the packed
/// panels (`NR` floats, 128 bytes) are whole lines: on Intel cores a vector load that
/// straddles two lines costs a second one. On a Cascade Lake Xeon, 1024^3 took 12% and
/// (128,256,128) 18% longer with the 16-byte-aligned memory `Vec` gives.
#[derive(Default)]
struct AlignedBuffer(Vec<f32>);

impl AlignedBuffer {
    const LINE: usize = 64;

    fn get(&mut self, len: usize) -> &mut [f32] {
        let slack = Self::LINE / size_of::<f32>() - 1;
        if self.0.len() < len + slack {
            self.0.resize(len + slack, 0.0);
        }
        // The address is a multiple of 4, so the distance to the next line is whole floats.
        let skip = (self.0.as_ptr() as usize).wrapping_neg() % Self::LINE / size_of::<f32>();
        &mut self.0[skip..skip + len]
    }
}

pub(super) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    #[cfg(feature = "std")]
    {
        std::thread_local! {
            static SCRATCH: core::cell::RefCell<Scratch> = core::cell::RefCell::default();
        }
        // A thread never runs two GEMMs at once, but fall back to fresh buffers rather than
        // panic if it ever did.
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => f(&mut scratch),
            Err(_) => f(&mut Scratch::default()),
        })
    }
    #[cfg(not(feature = "std"))]
    f(&mut Scratch::default())
}

/// The five loops, with packing decided and buffers provided. `a_buf` holds the packed or
/// re-strided A block (`restride_a`: see [`aliasing_columns`]). `b_buf` holds the packed B
/// block, or (when B is read in place) the last partial B panel: reading past its columns
/// could leave the slice, so it is copied out with zero padding. A narrow last panel computed
/// as dot products reads B's edge columns packed in 4 x 4 blocks in `b_buf`.
///
/// # Safety
/// As [`gemm_serial`].
unsafe fn gemm_blocks(
    blocking: &Blocking,
    restride_a: bool,
    pack_b: bool,
    a_buf: &mut [f32],
    b_buf: &mut [f32],
    product: Product<'_>,
) {
    let Product { alpha, a, b, beta, c, epi, pack_a } = product;
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let Blocking { mc, kc, nc, .. } = *blocking;

    for jc in (0..n).step_by(nc) {
        let n_block = nc.min(n - jc);
        let mut pc = 0;
        loop {
            let k_block = kc.min(k - pc);
            let beta_block = if pc == 0 { beta } else { 1.0 };
            let last_k = pc + k_block >= k;
            let b_block = b.sub(pc, jc, k_block, n_block);
            let edge = n_block - n_block % NR;
            // A last panel of at most 4 columns, with A's rows contiguous along k, is computed
            // as dot products along k (`narrow_panel_by_dots`) from B's edge columns, packed
            // into 4 x 4 blocks after the packed full panels (b_buf has room for a whole
            // NR-wide panel there) or at the start when B is read in place.
            let dots = (1..=NARROW_COLS).contains(&(n_block - edge)) && k_block > 0 && !pack_a && a.cs == 1;
            let edge_quads = dots.then(|| {
                let at = if pack_b { edge * k_block } else { 0 };
                let quads = &mut b_buf[at..at + k_block.div_ceil(QUAD) * LANES];
                pack_edge_quads(quads, b_block.sub(0, edge, k_block, n_block - edge));
                quads.as_ptr()
            });
            if pack_b {
                // With dot products, the edge columns are the 4 x 4 blocks packed above.
                pack_b_panels(b_buf, if dots { b_block.sub(0, 0, k_block, edge) } else { b_block });
            } else if edge < n_block && !dots {
                pack_b_panels(&mut b_buf[..k_block * NR], b_block.sub(0, edge, k_block, n_block - edge));
            }
            for (ic, m_block) in row_blocks(m, mc) {
                let a_view = a.sub(ic, pc, m_block, k_block);
                if pack_a {
                    pack_a_panels(a_buf, a_view);
                } else if restride_a {
                    restride_columns(a_buf, a_view);
                }
                let a_block = if restride_a {
                    MatRef::strided(a_buf, m_block, k_block, 1, restrided_ld(m_block))
                } else {
                    a_view
                };
                for jr in (0..n_block).step_by(NR) {
                    let cols = NR.min(n_block - jr);
                    // B is prefetched ahead of the microkernel, read in place or packed (see
                    // `B_PREFETCH_ROWS` and `PACKED_B_PREFETCH_ROWS`); an edge panel is in L1.
                    let (b_ptr, b_step, b_ahead) = if pack_b {
                        (b_buf[jr * k_block..].as_ptr(), NR, PACKED_B_PREFETCH_ROWS * NR)
                    } else if cols < NR {
                        (b_buf.as_ptr(), NR, 0)
                    } else {
                        (b_block.data.as_ptr().wrapping_add(jr), b.rs, B_PREFETCH_ROWS * b.rs)
                    };
                    if let (Some(quads), true) = (edge_quads, jr == edge) {
                        let store = NarrowStore {
                            // SAFETY: row ic, column jc + jr of C.
                            c: unsafe { c.ptr.add(ic * c.ld + jc + jr) },
                            ldc: c.ld,
                            alpha,
                            beta: beta_block,
                            epi: if last_k { Some(&epi).filter(|e| !e.is_none()) } else { None },
                            col0: jc + jr,
                        };
                        // SAFETY: A: rows 0..m_block of a_block, each k_block contiguous floats
                        // (a.cs == 1); B: the k_block / 4 packed blocks in b_buf; C: rows ic..,
                        // columns jc+jr.. of C.
                        unsafe {
                            narrow_panel_by_dots(
                                a_block.data.as_ptr(),
                                a_block.rs,
                                m_block,
                                k_block,
                                quads,
                                cols,
                                &store,
                            )
                        };
                        continue;
                    }
                    if cols < LANES && !pack_a && a_block.rs == 1 {
                        // A narrow last panel of a transposed A (the weight gradient's
                        // x^T): vectorise along m instead, where A is contiguous.
                        let epi = if last_k { Some(&epi) } else { None };
                        let panel = NarrowPanel {
                            k: k_block,
                            a: a_block.data.as_ptr(),
                            a_step: a_block.cs,
                            b: b_ptr,
                            b_step,
                            cols,
                        };
                        // SAFETY: A: rows 0..m_block of a_block are contiguous from its data
                        // pointer at each kk (a.rs == 1); B: the zero-padded NR-wide panel in
                        // b_buf; C: rows ic.., columns jc+jr.. of C.
                        unsafe {
                            let out = c.ptr.add(ic * c.ld + jc + jr);
                            narrow_panel_by_rows(&panel, m_block, out, c.ld, alpha, beta_block, epi, jc + jr);
                        }
                        continue;
                    }
                    let mut ir = 0;
                    while ir < m_block {
                        // A last tile of MR + 1 rows (in place) instead of a full tile and a
                        // single row that would stream the B panel once more for little work.
                        let rows = if pack_a { A_PANEL_ROWS.min(m_block - ir) } else { block_rows(m_block - ir, MR) };
                        let (a_ptr, a_row_step, a_last_row, a_step) = if pack_a {
                            (a_buf[ir * k_block..].as_ptr(), 1, A_PANEL_ROWS - 1, A_PANEL_ROWS)
                        } else {
                            // Rows past the edge repeat the last row: in bounds, and their
                            // results are never stored.
                            (a_block.data.as_ptr().wrapping_add(ir * a_block.rs), a_block.rs, rows - 1, a_block.cs)
                        };
                        let tile =
                            Tile { k: k_block, a: a_ptr, a_row_step, a_last_row, a_step, b: b_ptr, b_step, b_ahead };
                        let epi = if last_k { Some(&epi) } else { None };
                        // Rows one float apart (packed A, or a transposed A away from the edge)
                        // let the microkernel address them from one pointer.
                        let layout = if (0..kernel_rows(rows)).all(|i| tile.a_offset(i) == i) {
                            A_ADJACENT
                        } else if a_step == 1 {
                            A_ROWS_CONTIGUOUS
                        } else {
                            A_ROWS_STRIDED
                        };
                        // SAFETY: A: a_offset(i) + (k_block-1) * a_step stay inside the a_block
                        // rows ir..ir+rows (packed: inside a_buf's panel). B: k_block rows of
                        // NR floats from b_ptr stay inside b_buf (packed block or edge panel) /
                        // the full-width panel of b_block. C: the tile (ic+ir.., jc+jr..) of
                        // rows x cols lies in C.
                        unsafe {
                            let out = c.ptr.add((ic + ir) * c.ld + jc + jr);
                            let args = (out, c.ld, rows, cols, alpha, beta_block, epi, jc + jr);
                            match (cols <= LANES, layout) {
                                (true, A_ADJACENT) => tile_kernel_rows::<1, A_ADJACENT>(&tile, args),
                                (true, A_ROWS_CONTIGUOUS) => tile_kernel_rows::<1, A_ROWS_CONTIGUOUS>(&tile, args),
                                (true, _) => tile_kernel_rows::<1, A_ROWS_STRIDED>(&tile, args),
                                (false, A_ADJACENT) => tile_kernel_rows::<NV, A_ADJACENT>(&tile, args),
                                (false, A_ROWS_CONTIGUOUS) => tile_kernel_rows::<NV, A_ROWS_CONTIGUOUS>(&tile, args),
                                (false, _) => tile_kernel_rows::<NV, A_ROWS_STRIDED>(&tile, args),
                            }
                        }
                        ir += rows;
                    }
                }
            }
            pc += k_block;
            if pc >= k {
                break;
            }
        }
    }
}

/// The `(first row, rows)` of each `mc`-row block of `m` rows. A single row left over joins
/// the last block, so that it ends in a tile of `MR + 1` rows (see `gemm_blocks`) however the
/// rows were split across threads: every row then gets the same tile, hence the same bits.
fn row_blocks(m: usize, mc: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut ic = 0;
    core::iter::from_fn(move || {
        let rows = block_rows(m - ic, mc);
        let block = (ic, rows);
        ic += rows;
        (rows > 0).then_some(block)
    })
}

/// The rows of the next block of at most `unit` rows, `left` rows remaining: all `unit + 1`
/// when exactly one row would be left over after it.
fn block_rows(left: usize, unit: usize) -> usize {
    if left == unit + 1 { unit + 1 } else { unit.min(left) }
}

/// Whether A is a transposed view (rows contiguous) whose columns lie a multiple of 4 KiB
/// apart (the first layer's x^T: 3072 floats): a row tile's depths then all fall into one of
/// L1's 64 sets, too few ways for them (50 depths at batch 50), and every microkernel call
/// reloads them from L2. Such blocks are copied with another stride first
/// ([`restride_columns`]): 78 -> 68 us for 1536 x 50 x 100. (Columns 6 KiB apart use two
/// sets, and copying them costs more than it saves.)
fn aliasing_columns(a: &MatRef<'_>) -> bool {
    a.rs == 1 && a.cols > 1 && a.cs.is_multiple_of(1024)
}

/// The column stride of a re-strided block of `rows` rows: 16 floats more than the rows.
fn restrided_ld(rows: usize) -> usize {
    rows.next_multiple_of(LANES) + LANES
}

/// Copies `block` (rows contiguous) into `buf` with columns [`restrided_ld`] apart.
fn restride_columns(buf: &mut [f32], block: MatRef<'_>) {
    let (rows, ld) = (block.rows, restrided_ld(block.rows));
    for (kk, column) in buf.chunks_exact_mut(ld).take(block.cols).enumerate() {
        let at = kk * block.cs;
        column[..rows].copy_from_slice(&block.data[at..at + rows]);
    }
}

/// Copies `block` (`k x n`) into `NR`-column micro-panels: panel `p` holds, for each row
/// `kk`, columns `p*NR .. p*NR+NR` contiguously; columns past `n` are zero.
fn pack_b_panels(buf: &mut [f32], block: MatRef<'_>) {
    let (k, n) = (block.rows, block.cols);
    if k == 0 {
        return;
    }
    for (p, panel) in buf.chunks_exact_mut(k * NR).take(n.div_ceil(NR)).enumerate() {
        let j0 = p * NR;
        let width = NR.min(n - j0);
        if block.cs == 1 {
            // Rows are contiguous: copy row segments.
            for (kk, row) in panel.chunks_exact_mut(NR).enumerate() {
                let start = kk * block.rs + j0;
                row[..width].copy_from_slice(&block.data[start..start + width]);
                row[width..].fill(0.0);
            }
        } else {
            if width < NR {
                panel.fill(0.0);
            }
            if block.rs == 1 {
                // A transposed matrix (the weights in the backward pass): its columns are
                // contiguous, so the panel is a transpose of `width` of them.
                let cols = &block.data[j0 * block.cs..];
                transpose_strided(cols, block.cs, width, k, panel, NR);
            } else {
                for j in 0..width {
                    let col = &block.data[(j0 + j) * block.cs..];
                    for kk in 0..k {
                        panel[kk * NR + j] = col[kk * block.rs];
                    }
                }
            }
        }
    }
}

/// Copies `block` (`m x k`) into `A_PANEL_ROWS`-row micro-panels: panel `p` holds, for each
/// `kk`, rows `p*A_PANEL_ROWS ..` contiguously; rows past `m` are zero.
fn pack_a_panels(buf: &mut [f32], block: MatRef<'_>) {
    const ROWS: usize = A_PANEL_ROWS;
    let (m, k) = (block.rows, block.cols);
    if k == 0 {
        return;
    }
    for (p, panel) in buf.chunks_exact_mut(k * ROWS).take(m.div_ceil(ROWS)).enumerate() {
        let i0 = p * ROWS;
        let height = ROWS.min(m - i0);
        if height < ROWS {
            panel.fill(0.0);
        }
        if block.cs == 1 && block.rs >= k {
            // A row-major A: the panel is the transpose of its `height` rows.
            transpose_strided(&block.data[i0 * block.rs..], block.rs, height, k, panel, ROWS);
        } else {
            for i in 0..height {
                let row = &block.data[(i0 + i) * block.rs..];
                for kk in 0..k {
                    panel[kk * ROWS + i] = row[kk * block.cs];
                }
            }
        }
    }
}

/// Rows of the largest tile: a last tile of A read in place may take one row more than MR.
const TILE_ROWS: usize = MR + 1;

/// How the microkernel addresses A's rows (see [`microkernel`]).
const A_ADJACENT: u8 = 0;
const A_ROWS_CONTIGUOUS: u8 = 1;
const A_ROWS_STRIDED: u8 = 2;

/// The operands of one microkernel call.
struct Tile {
    /// Depth.
    k: usize,
    /// Element `a(i, kk)` is `*a.add(a_offset(i) + kk * a_step)`. Rows are described by a
    /// step and a last row rather than an array of offsets: the array, written one offset
    /// at a time and copied with wide loads, stalled every tile on store forwarding (Intel).
    a: *const f32,
    a_row_step: usize,
    a_last_row: usize,
    a_step: usize,
    /// Row `kk` of the B micro-panel is the contiguous floats at `b.add(kk * b_step)`.
    b: *const f32,
    b_step: usize,
    /// How far ahead of row `kk` of B to prefetch, in floats. 0 when B is in cache: the
    /// prefetch then touches the row just loaded, one load slot and no traffic (a branch
    /// per depth would cost as much). Read on x86 only (elsewhere Rust has no stable prefetch).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    b_ahead: usize,
}

/// Rows of B ahead of the current one that the microkernel prefetches when it reads B in
/// place (small batches: the first layer's forward reads its 1.2 MB of weights straight
/// from L3, where rows 400 bytes apart defeat the hardware prefetcher). On a Cascade Lake
/// Xeon, (16, 3072, 100) with B out of L2: 377-380 -> 255-287 us; 12 to 32 rows all gain.
const B_PREFETCH_ROWS: usize = 24;

/// The same for packed B panels (rows `NR` floats apart), which a deep `kc` streams from L2
/// or L3 rather than keeping in L1. Cascade Lake, 1024^3 at kc 1024: 8 rows 92-105, 16 rows
/// 106-109, 32 rows 69-83 GFLOP/s.
const PACKED_B_PREFETCH_ROWS: usize = 16;

impl Tile {
    /// Where row `i` of the tile starts, from `a`; rows past the last repeat it.
    #[inline(always)]
    fn a_offset(&self, i: usize) -> usize {
        i.min(self.a_last_row) * self.a_row_step
    }
}

/// The microkernel: returns the `R x 16V` tile `sum over kk < k of a(i, kk) * b(kk, j)`.
/// `R = MR` (A read in place) or `A_PANEL_ROWS` (A packed) but for a last row tile of
/// another size: shorter ones cost what their rows need (1, 2, 4 or 8 rows), and a last tile
/// of `MR + 1` rows read in place is one tile, so a batch of 25 is 3 tiles, not 3 tiles and a
/// single row that streams the B panel once more.
/// `V = NV` for full panels; `V = 1` for a last panel of at most 16 columns, which then costs
/// half a full one.
/// `LAYOUT` says how rows are addressed: `A_ADJACENT` promises `a_offset(i) == i`, so every
/// row is addressed from one pointer; `A_ROWS_CONTIGUOUS` (`a_step == 1`) gives each row a
/// pointer and indexes all of them with one depth counter; `A_ROWS_STRIDED` advances each
/// row's pointer. (Offsets kept in an array, or a second set of pointers for the unrolled
/// iteration, would be spilled to the stack, adding a load to every FMA.)
///
/// Edge tiles are the caller's: it pads B panels and repeats A rows, and stores only the
/// valid part of the tile. The accumulators stay in registers (16 of the 32 zmm registers
/// for 8 x 32, 18 for 9 x 32, 24 for 12 x 32).
///
/// # Safety
/// Every address named in [`Tile`], for `kk < k`, must be readable.
#[inline(always)]
unsafe fn microkernel<const V: usize, const LAYOUT: u8, const R: usize>(t: &Tile) -> [[f32x16; V]; R] {
    let sets = accumulator_sets(R * V);
    let mut acc = [[[f32x16::ZERO; V]; R]; MAX_SETS];
    let mut b = t.b;
    // wrapping_add: after the last iteration the pointers may point past their buffers
    // without being read.
    let mut rows: [*const f32; R] = core::array::from_fn(|i| t.a.wrapping_add(t.a_offset(i)));
    let row_base = rows;
    let mut a = t.a;
    let mut kk = 0usize;
    let mut step = |acc: &mut [[f32x16; V]; R]| {
        // SAFETY: the caller guarantees V * 16 readable floats at b for this kk.
        let bv: [f32x16; V] = core::array::from_fn(|v| unsafe { load(b.add(v * LANES)) });
        #[cfg(target_arch = "x86_64")]
        for v in 0..V {
            // SAFETY: a prefetch never faults, whatever the address (past B's end here too).
            unsafe {
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                    b.wrapping_add(t.b_ahead + v * LANES).cast(),
                )
            };
        }
        for (i, acc_row) in acc.iter_mut().enumerate() {
            // SAFETY: the caller guarantees a(i, kk) is readable.
            let ai = f32x16::splat(unsafe {
                match LAYOUT {
                    A_ADJACENT => *a.add(i),
                    A_ROWS_CONTIGUOUS => *row_base[i].add(kk),
                    _ => *rows[i],
                }
            });
            for (acc, &bv) in acc_row.iter_mut().zip(&bv) {
                *acc = ai.mul_add(bv, *acc);
            }
        }
        match LAYOUT {
            A_ADJACENT => a = a.wrapping_add(t.a_step),
            A_ROWS_CONTIGUOUS => kk += 1,
            _ => rows = rows.map(|r| r.wrapping_add(t.a_step)),
        }
        b = b.wrapping_add(t.b_step);
    };
    sum_in_sets(
        &mut acc,
        sets,
        t.k,
        |set, _| step(set),
        |x, y| {
            for (row, other) in x.iter_mut().zip(y) {
                for (x, &y) in row.iter_mut().zip(other) {
                    *x += y;
                }
            }
        },
    );
    acc[0]
}

/// The most accumulator sets a tile spreads its depths over.
const MAX_SETS: usize = 8;

/// Accumulator sets for a tile of `chains` vectors: a small tile has too few FMA chains to
/// hide the FMA latency (two pipes x four cycles need eight), so it sums successive depths
/// into separate sets and adds them at the end. A full tile has sixteen chains: one set.
fn accumulator_sets(chains: usize) -> usize {
    (MAX_SETS / chains).clamp(1, MAX_SETS)
}

/// Runs `step(set, i)` for `i in 0..n` round-robin over the first `sets` of `acc` (the tail
/// into set 0), then adds the sets pairwise into `acc[0]` with `add`, in a fixed order: the
/// result depends on nothing but the shape.
#[inline(always)]
fn sum_in_sets<S: Copy>(
    acc: &mut [S; MAX_SETS],
    sets: usize,
    n: usize,
    mut step: impl FnMut(&mut S, usize),
    add: impl Fn(&mut S, &S),
) {
    let whole = n - n % sets;
    for i0 in (0..whole).step_by(sets) {
        for (s, set) in acc.iter_mut().take(sets).enumerate() {
            step(set, i0 + s);
        }
    }
    for i in whole..n {
        step(&mut acc[0], i);
    }
    let mut width = sets;
    while width > 1 {
        width /= 2;
        for s in 0..width {
            let other = acc[s + width];
            add(&mut acc[s], &other);
        }
    }
}

/// Where and how a tile is stored: `(c, ldc, rows, cols, alpha, beta, epilogue, col0)`, as
/// [`store_tile`] takes them.
type TileStore<'e, 'b> = (*mut f32, usize, usize, usize, f32, f32, Option<&'e Epilogue<'b>>, usize);

/// One microkernel call and the store of its tile. Not inlined: each instantiation then
/// gets the registers to itself, and its accumulators never touch the stack (inlined into
/// the block loops, they were spilled after every FMA).
///
/// # Safety
/// As [`microkernel`] and [`store_tile`].
#[inline(never)]
unsafe fn tile_kernel<const V: usize, const LAYOUT: u8, const R: usize>(t: &Tile, to: TileStore<'_, '_>) {
    let (c, ldc, rows, cols, alpha, beta, epi, col0) = to;
    // SAFETY: forwarded from this function's contract.
    unsafe {
        let acc = microkernel::<V, LAYOUT, R>(t);
        store_tile(&acc, c, ldc, rows, cols, alpha, beta, epi, col0);
    }
}

/// The rows the microkernel computes for a tile of `rows`: the fewest of 1, 2, 4, `MR`,
/// `TILE_ROWS` and `A_PANEL_ROWS` that cover them (more than `TILE_ROWS` only from a packed
/// panel, whose padding rows are zero).
fn kernel_rows(rows: usize) -> usize {
    match rows {
        1 | 2 => rows,
        3 | 4 => 4,
        5..=MR => MR,
        TILE_ROWS => TILE_ROWS,
        _ => A_PANEL_ROWS,
    }
}

/// [`tile_kernel`] for a tile of `rows <= A_PANEL_ROWS` rows, with the kernel
/// [`kernel_rows`] picks.
///
/// # Safety
/// As [`tile_kernel`].
#[inline(always)]
unsafe fn tile_kernel_rows<const V: usize, const LAYOUT: u8>(t: &Tile, store: TileStore<'_, '_>) {
    // SAFETY: forwarded; each kernel reads and stores at most `rows` rows of its tile.
    unsafe {
        match kernel_rows(store.2) {
            1 => tile_kernel::<V, LAYOUT, 1>(t, store),
            2 => tile_kernel::<V, LAYOUT, 2>(t, store),
            4 => tile_kernel::<V, LAYOUT, 4>(t, store),
            MR => tile_kernel::<V, LAYOUT, MR>(t, store),
            TILE_ROWS => tile_kernel::<V, LAYOUT, TILE_ROWS>(t, store),
            _ => tile_kernel::<V, LAYOUT, A_PANEL_ROWS>(t, store),
        }
    }
}

/// The operands of [`narrow_panel_by_rows`].
struct NarrowPanel {
    k: usize,
    /// Row `i` of A at depth `kk` is `*a.add(i + kk * a_step)`: rows are contiguous.
    a: *const f32,
    a_step: usize,
    /// A zero-padded `NR`-wide B panel: `b(kk, j)` is `*b.add(kk * b_step + j)`.
    b: *const f32,
    b_step: usize,
    /// Valid columns, fewer than 16.
    cols: usize,
}

/// `C[0..m, 0..cols]` for a panel narrower than one vector when A's rows are contiguous:
/// vectors run along m (16 rows of one column), each B value broadcast. The usual `MR x 16`
/// tile would spend a whole vector of FMAs on these few columns; this spends one FMA per 16
/// useful products. Blocks of 64 rows x 4 columns keep 16 independent accumulators (one
/// chain per column would wait on the FMA latency), and their rows are stored 4 floats at
/// a time.
///
/// # Safety
/// `p.a` must address rows `0..m` at every `kk < p.k`; `p.b` a panel of `NR` columns for
/// every `kk`; `c` a writable `m x p.cols` rectangle with rows `ldc` apart; `bias` (if any)
/// at least `col0 + p.cols` values.
#[allow(clippy::too_many_arguments)]
#[inline(never)] // kept out of `gemm_blocks`, whose register allocation it would disturb
unsafe fn narrow_panel_by_rows(
    p: &NarrowPanel,
    m: usize,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
    epi: Option<&Epilogue<'_>>,
    col0: usize,
) {
    const BLOCK_ROWS: usize = NARROW_VECTORS * LANES;
    let store = NarrowStore { c, ldc, alpha, beta, epi: epi.filter(|e| !e.is_none()), col0 };
    for g0 in (0..p.cols).step_by(NARROW_COLS) {
        let cols = NARROW_COLS.min(p.cols - g0);
        let full = m - m % BLOCK_ROWS;
        for i0 in (0..full).step_by(BLOCK_ROWS) {
            // SAFETY: rows i0..i0+64 < m, columns g0..g0+cols < p.cols (the caller's rectangle).
            unsafe { narrow_block::<NARROW_VECTORS>(p, i0, BLOCK_ROWS, g0, cols, &store) };
        }
        for i0 in (full..m).step_by(LANES) {
            // SAFETY: as above, for the last rows.
            unsafe { narrow_block::<1>(p, i0, LANES.min(m - i0), g0, cols, &store) };
        }
    }
}

/// Depths per block of a packed narrow edge: a block of 4 depths x 4 columns fills a vector.
const QUAD: usize = 4;

/// Packs `block` (`k x cols`, `cols <= 4`) for [`narrow_panel_by_dots`]: block `q` holds depths
/// `4q .. 4q+4`, lane `4j + t` being `b(4q + t, j)`; lanes past `k` or `cols` are zero.
fn pack_edge_quads(buf: &mut [f32], block: MatRef<'_>) {
    let (k, cols) = (block.rows, block.cols);
    let blocks = k.div_ceil(QUAD);
    assert!(cols <= NARROW_COLS && buf.len() >= blocks * LANES, "pack_edge_quads: {k} x {cols} does not fit");
    let done = pack_edge_quads_simd(buf, block);
    for (q, lanes) in buf.chunks_exact_mut(LANES).enumerate().take(blocks).skip(done) {
        for (j, column) in lanes.chunks_exact_mut(QUAD).enumerate() {
            for (t, lane) in column.iter_mut().enumerate() {
                let kk = q * QUAD + t;
                *lane = if kk < k && j < cols { block.at(kk, j) } else { 0.0 };
            }
        }
    }
}

/// The whole blocks of [`pack_edge_quads`] when all 4 columns are there and B's rows or
/// columns are contiguous, four 16-byte loads each (a 4 x 4 transpose for contiguous rows);
/// returns how many blocks it packed (none without AVX-512).
#[inline(always)]
fn pack_edge_quads_simd(buf: &mut [f32], block: MatRef<'_>) -> usize {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    if block.cols == NARROW_COLS && (block.cs == 1 || block.rs == 1) {
        use core::arch::x86_64::*;
        let whole = block.rows / QUAD;
        let (p, rs, cs) = (block.data.as_ptr(), block.rs, block.cs);
        // Lane 4j + t takes lane 4t + j.
        // SAFETY: AVX-512F is enabled at compile time.
        let transpose = unsafe { _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15) };
        for (q, out) in buf.chunks_exact_mut(LANES).take(whole).enumerate() {
            let kk = q * QUAD;
            // SAFETY: AVX-512F is enabled at compile time. Each load reads 4 elements of the
            // view: row kk + t, columns 0..4 (cs == 1), or column j, depths kk..kk+4 (rs ==
            // 1), all inside `block` (kk + 4 <= k, 4 columns); the store writes one 16-float
            // chunk of `buf`.
            unsafe {
                let (stride, step) = if cs == 1 { (rs, rs) } else { (cs, 1) };
                let part = |i: usize| _mm_loadu_ps(p.add(kk * step + i * stride));
                let mut v = _mm512_castps128_ps512(part(0));
                v = _mm512_insertf32x4::<1>(v, part(1));
                v = _mm512_insertf32x4::<2>(v, part(2));
                v = _mm512_insertf32x4::<3>(v, part(3));
                if cs == 1 {
                    v = _mm512_permutexvar_ps(transpose, v);
                }
                _mm512_storeu_ps(out.as_mut_ptr(), v);
            }
        }
        return whole;
    }
    let _ = (buf, block);
    0
}

/// `C[0..m, 0..cols]` (`cols <= 4`) for a narrow last panel when A's rows are contiguous along
/// k (a forward pass, an input gradient): each output is a dot product along k, where the
/// usual tile would spend a whole vector of FMAs per depth on these few columns. One FMA
/// multiplies 4 depths of a row (broadcast to the 4 lane groups) by a packed block of B (4
/// depths x 4 columns), so a row needs one accumulator and the 4 partial sums of each column
/// are added once at the end.
///
/// # Safety
/// `a` must address rows `0..m`, `a_rs` apart, of `k` readable floats each; `quads` the
/// `k.div_ceil(4)` blocks [`pack_edge_quads`] wrote of `cols` columns; `out.c` a writable
/// `m x cols` rectangle with rows `out.ldc` apart; `bias` (if any) at least
/// `out.col0 + cols` values.
#[inline(never)] // kept out of `gemm_blocks`, whose register allocation it would disturb
#[allow(clippy::too_many_arguments)]
unsafe fn narrow_panel_by_dots(
    a: *const f32,
    a_rs: usize,
    m: usize,
    k: usize,
    quads: *const f32,
    cols: usize,
    out: &NarrowStore<'_, '_>,
) {
    let full = m - m % MR;
    for i0 in (0..full).step_by(MR) {
        // SAFETY: rows i0..i0+8 < m (caller's rectangle).
        unsafe { dots_rows::<MR>(a, a_rs, i0, MR, k, quads, cols, out) };
    }
    let rest = m - full;
    if rest == 0 {
        return;
    }
    // SAFETY: rows full..m, padded by repeating the last row (caller's rectangle).
    unsafe {
        match kernel_rows(rest) {
            1 => dots_rows::<1>(a, a_rs, full, rest, k, quads, cols, out),
            2 => dots_rows::<2>(a, a_rs, full, rest, k, quads, cols, out),
            4 => dots_rows::<4>(a, a_rs, full, rest, k, quads, cols, out),
            _ => dots_rows::<MR>(a, a_rs, full, rest, k, quads, cols, out),
        }
    }
}

/// Rows `i0 .. i0 + rows` (`rows <= R`) of [`narrow_panel_by_dots`]; rows past `rows` repeat
/// the last one and are not stored.
///
/// # Safety
/// As [`narrow_panel_by_dots`], for these rows.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn dots_rows<const R: usize>(
    a: *const f32,
    a_rs: usize,
    i0: usize,
    rows: usize,
    k: usize,
    quads: *const f32,
    cols: usize,
    out: &NarrowStore<'_, '_>,
) {
    let sets = accumulator_sets(R);
    let row: [*const f32; R] = core::array::from_fn(|r| a.wrapping_add((i0 + r.min(rows - 1)) * a_rs));
    let whole = k / QUAD;
    let mut acc = [[f32x16::ZERO; R]; MAX_SETS];
    let step = |acc: &mut [f32x16; R], q: usize| {
        // SAFETY: block q < k.div_ceil(4) of the packed edge (caller).
        let b = unsafe { load(quads.add(q * LANES)) };
        for (acc, &row) in acc.iter_mut().zip(&row) {
            // SAFETY: depths 4q..4q+4 < k of a row < m (caller); a partial block at the tail.
            let av = unsafe {
                if q < whole {
                    broadcast4(row.add(q * QUAD))
                } else {
                    broadcast4_partial(core::slice::from_raw_parts(row.add(q * QUAD), k - q * QUAD))
                }
            };
            *acc = av.mul_add(b, *acc);
        }
    };
    sum_in_sets(&mut acc, sets, k.div_ceil(QUAD), step, |x, y| {
        for (x, &y) in x.iter_mut().zip(y) {
            *x += y;
        }
    });
    let sums: [[f32x16; 1]; R] = core::array::from_fn(|r| {
        let l = acc[0][r].to_array();
        [f32x16::new(core::array::from_fn(|j| {
            if j < NARROW_COLS { (l[4 * j] + l[4 * j + 1]) + (l[4 * j + 2] + l[4 * j + 3]) } else { 0.0 }
        }))]
    });
    // SAFETY: rows i0..i0+rows and the packed columns of the rectangle (caller).
    unsafe {
        let c = out.c.add(i0 * out.ldc);
        store_tile(&sums, c, out.ldc, rows, cols, out.alpha, out.beta, out.epi, out.col0);
    }
}

/// Row vectors (of 16) and columns of one [`narrow_panel_by_rows`] block.
pub(super) const NARROW_VECTORS: usize = 4;
pub(super) const NARROW_COLS: usize = 4;

/// Where a narrow panel's results go, and how they are finished.
pub(super) struct NarrowStore<'e, 'b> {
    pub(super) c: *mut f32,
    pub(super) ldc: usize,
    pub(super) alpha: f32,
    pub(super) beta: f32,
    /// `None` when there is nothing to apply ([`Epilogue::is_none`]).
    pub(super) epi: Option<&'e Epilogue<'b>>,
    pub(super) col0: usize,
}

/// Rows `i0..i0 + rows` (at most `16 RV`) and columns `g0..g0 + cols` (at most 4) of a
/// narrow panel.
///
/// # Safety
/// As [`narrow_panel_by_rows`], for this block of rows and columns.
#[inline(always)]
unsafe fn narrow_block<const RV: usize>(
    p: &NarrowPanel,
    i0: usize,
    rows: usize,
    g0: usize,
    cols: usize,
    out: &NarrowStore<'_, '_>,
) {
    let mut acc = [[f32x16::ZERO; NARROW_COLS]; RV];
    for kk in 0..p.k {
        // SAFETY: rows i0..i0+rows of A at depth kk are readable (caller); a partial vector
        // only happens for RV = 1.
        let av: [f32x16; RV] = core::array::from_fn(|v| unsafe {
            let at = p.a.add(i0 + v * LANES + kk * p.a_step);
            if rows >= (v + 1) * LANES { load(at) } else { load_partial(core::slice::from_raw_parts(at, rows), 0.0) }
        });
        // One broadcast of b(kk, j) serves every row vector; indexing keeps that order.
        #[allow(clippy::needless_range_loop)]
        for j in 0..NARROW_COLS {
            // SAFETY: g0 + j < 16 <= NR: inside the zero-padded panel row kk.
            let bj = f32x16::splat(unsafe { *p.b.add(kk * p.b_step + g0 + j) });
            for v in 0..RV {
                acc[v][j] = bj.mul_add(av[v], acc[v][j]);
            }
        }
    }
    // SAFETY: forwarded from this function's contract.
    unsafe { store_narrow_block(&acc, i0, rows, g0, cols, out) }
}

/// Finishes a narrow block's sums (`acc[v][j]`: rows `i0 + 16 v ..` of column `g0 + j`) with
/// alpha, beta and the epilogue, and stores its `rows x cols` values.
///
/// # Safety
/// Rows `i0..i0 + rows` and columns `g0..g0 + cols` must lie in the writable C rectangle that
/// `out.c` starts, with the bias (if any) holding `out.col0 + g0 + cols` values.
#[inline(always)]
pub(super) unsafe fn store_narrow_block<const RV: usize>(
    acc: &[[f32x16; NARROW_COLS]; RV],
    i0: usize,
    rows: usize,
    g0: usize,
    cols: usize,
    out: &NarrowStore<'_, '_>,
) {
    // Finish each column's vectors, then store them row by row.
    let mut finished = [[f32x16::ZERO; NARROW_COLS]; RV];
    for (j, col) in (g0..g0 + cols).enumerate() {
        // SAFETY: rows i0..i0+rows of column `col` lie in the C rectangle (caller).
        let at = |r: usize| unsafe { out.c.add((i0 + r) * out.ldc + col) };
        for (v, acc) in acc.iter().enumerate() {
            let mut x = acc[j] * f32x16::splat(out.alpha);
            if out.beta != 0.0 {
                let old: [f32; LANES] = core::array::from_fn(|i| {
                    let r = v * LANES + i;
                    // SAFETY: as above.
                    if r < rows { unsafe { *at(r) } } else { 0.0 }
                });
                x = f32x16::splat(out.beta).mul_add(f32x16::new(old), x);
            }
            if let Some(e) = out.epi {
                let bias = e.bias.map_or(0.0, |b| b[out.col0 + col]);
                x = e.activation.forward_vec(x + f32x16::splat(bias));
            }
            finished[v][j] = x;
        }
    }
    for (v, columns) in finished.iter().enumerate() {
        let first = v * LANES;
        // SAFETY: rows i0+first.. (at most 16, fewer in the last vector) and columns
        // g0..g0+cols lie in the C rectangle (caller).
        unsafe {
            let to = out.c.add((i0 + first) * out.ldc + g0);
            store_columns(columns, to, out.ldc, rows.saturating_sub(first).min(LANES), cols);
        }
    }
}

/// Stores the first `rows` lanes of the first `cols` vectors of `columns` as a `rows x cols`
/// block at `to` (row `r` is `columns[0][r], columns[1][r], ...`, rows `ld` apart). With
/// AVX-512 a full 16 x 4 block is transposed in registers and stored 16 bytes per row.
///
/// # Safety
/// `to` must address a writable `rows x cols` block with rows `ld` apart.
#[inline(always)]
unsafe fn store_columns(columns: &[f32x16; NARROW_COLS], to: *mut f32, ld: usize, rows: usize, cols: usize) {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    if rows == LANES && cols == NARROW_COLS {
        use core::arch::x86_64::*;
        // SAFETY: AVX-512F is enabled at compile time; __m512 and f32x16 are both 16 f32s;
        // every store is 4 floats of one of the 16 rows (caller).
        unsafe {
            let c = columns.map(|x| core::mem::transmute::<f32x16, __m512>(x));
            // Within each 128-bit lane L: t0 = c0[4L], c1[4L], c0[4L+1], c1[4L+1], ...
            let (t0, t1) = (_mm512_unpacklo_ps(c[0], c[1]), _mm512_unpackhi_ps(c[0], c[1]));
            let (t2, t3) = (_mm512_unpacklo_ps(c[2], c[3]), _mm512_unpackhi_ps(c[2], c[3]));
            let pairs = |lo: __m512, hi: __m512, high: bool| {
                let (lo, hi) = (_mm512_castps_pd(lo), _mm512_castps_pd(hi));
                _mm512_castpd_ps(if high { _mm512_unpackhi_pd(lo, hi) } else { _mm512_unpacklo_pd(lo, hi) })
            };
            // Lane L of by_row[q] is row 4L + q.
            let by_row = [pairs(t0, t2, false), pairs(t0, t2, true), pairs(t1, t3, false), pairs(t1, t3, true)];
            for (q, r) in by_row.into_iter().enumerate() {
                _mm_storeu_ps(to.add(q * ld), _mm512_castps512_ps128(r));
                _mm_storeu_ps(to.add((4 + q) * ld), _mm512_extractf32x4_ps::<1>(r));
                _mm_storeu_ps(to.add((8 + q) * ld), _mm512_extractf32x4_ps::<2>(r));
                _mm_storeu_ps(to.add((12 + q) * ld), _mm512_extractf32x4_ps::<3>(r));
            }
        }
        return;
    }
    let lanes = columns.map(|x| x.to_array());
    for r in 0..rows {
        for (j, column) in lanes.iter().enumerate().take(cols) {
            // SAFETY: row r < rows, column j < cols of the block (caller).
            unsafe { *to.add(r * ld + j) = column[r] };
        }
    }
}

/// Stores the valid `rows x cols` part of a tile: `x = alpha*acc + beta*C`, then with an
/// epilogue `act(x + bias)`. C is not read when `beta == 0`.
///
/// # Safety
/// `c` must address a writable `rows x cols` tile with rows `ldc` apart; `bias` (if any)
/// must hold at least `col0 + cols` values.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn store_tile<const V: usize, const R: usize>(
    acc: &[[f32x16; V]; R],
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    alpha: f32,
    beta: f32,
    epi: Option<&Epilogue<'_>>,
    col0: usize,
) {
    let alpha_v = f32x16::splat(alpha);
    let beta_v = f32x16::splat(beta);
    let epi = epi.filter(|e| !e.is_none());
    // The weight gradients' case (a whole tile, C overwritten, no epilogue) stores straight
    // from the registers: at k = 25-50 the general path below cost 5-10% of the product.
    if rows == R && cols == V * LANES && beta == 0.0 && epi.is_none() {
        for (i, acc_row) in acc.iter().enumerate() {
            for (v, &x) in acc_row.iter().enumerate() {
                // SAFETY: a whole tile: R rows of V * 16 writable floats, ldc apart.
                unsafe { store(c.add(i * ldc + v * LANES), x * alpha_v) };
            }
        }
        return;
    }
    let bias: [f32x16; V] = core::array::from_fn(|v| {
        let lo = (v * LANES).min(cols);
        let hi = ((v + 1) * LANES).min(cols);
        match epi.and_then(|e| e.bias) {
            Some(bias) => load_partial(&bias[col0 + lo..col0 + hi], 0.0),
            None => f32x16::ZERO,
        }
    });
    #[inline(always)]
    fn finish(epi: Option<&Epilogue<'_>>, x: f32x16, bias: f32x16) -> f32x16 {
        match epi {
            Some(e) => e.activation.forward_vec(x + bias),
            None => x,
        }
    }
    for (i, acc_row) in acc.iter().enumerate().take(rows) {
        // SAFETY: row i < rows of the tile.
        let row = unsafe { c.add(i * ldc) };
        if cols == V * LANES {
            for (v, &acc) in acc_row.iter().enumerate() {
                // SAFETY: full tile: V*16 writable (and, for beta != 0, readable) floats
                // from row.
                unsafe {
                    let p = row.add(v * LANES);
                    let mut x = acc * alpha_v;
                    if beta != 0.0 {
                        x = beta_v.mul_add(load(p), x);
                    }
                    store(p, finish(epi, x, bias[v]));
                }
            }
        } else {
            // SAFETY: cols valid floats from row.
            let out = unsafe { core::slice::from_raw_parts_mut(row, cols) };
            for (v, chunk) in out.chunks_mut(LANES).enumerate() {
                let mut x = acc_row[v] * alpha_v;
                if beta != 0.0 {
                    x = beta_v.mul_add(load_partial(chunk, 0.0), x);
                }
                store_partial(chunk, finish(epi, x, bias[v]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::AlignedBuffer;

    #[test]
    fn aligned_buffers_start_on_a_cache_line_as_they_grow() {
        let mut buffer = AlignedBuffer::default();
        for len in [0, 1, 15, 16, 17, 1000, 3, 100_000, 7, 250_001] {
            let slice = buffer.get(len);
            assert_eq!(slice.len(), len);
            assert_eq!(slice.as_ptr() as usize % AlignedBuffer::LINE, 0, "length {len}");
        }
    }
}
