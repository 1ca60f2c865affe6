//! A global allocator that puts large buffers on transparent huge pages (Linux).
//!
//! Training streams the parameters, the shards' gradients and the optimiser's state (about
//! 12 MB for 8a) through the caches every step: on 4 KiB pages that is some 3,000 pages,
//! twice what the second-level TLB holds, so every step walks page tables again. Most
//! distributions enable transparent huge pages only where a program asks for them
//! (`madvise` mode), and `malloc` does not ask. [`HugePageAlloc`] maps every allocation of
//! [`HUGE_MIN_BYTES`] or more on its own 2 MiB boundary and advises the kernel to back it
//! with huge pages; smaller ones go to the system allocator. Where the kernel declines (huge
//! pages disabled), the mapping stays on small pages; other systems get the system
//! allocator for everything.
//!
//! The `simdnn` binary installs it; a program using the library opts in the same way:
//!
//! ```no_run
//! #[global_allocator]
//! static ALLOCATOR: simdnn::hugepages::HugePageAlloc = simdnn::hugepages::HugePageAlloc;
//! ```
//!
//! Cascade Lake VM, `simdnn train --preset 8a --epochs 3` against the system allocator, 14
//! alternated rounds: the optimiser's phase (Nadam's sweep over 12 MB) was faster in all 14,
//! by 9.5 % on average; whole epochs by 4 %, which is inside that machine's noise; 8f (plain
//! SGD) unchanged. Models are byte-identical (BENCHMARKS.md).

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations from this size on get their own huge-page-aligned mapping. Smaller ones would
/// waste most of a 2 MiB page.
pub const HUGE_MIN_BYTES: usize = 1 << 20;

/// The huge page size on x86-64 and most aarch64 kernels.
const HUGE_PAGE: usize = 2 << 20;

/// [`System`], except that allocations of [`HUGE_MIN_BYTES`] or more are mapped 2 MiB-aligned
/// and advised as huge pages (on Linux; elsewhere everything goes to [`System`]).
pub struct HugePageAlloc;

fn is_huge(layout: Layout) -> bool {
    cfg!(target_os = "linux") && layout.size() >= HUGE_MIN_BYTES && layout.align() <= HUGE_PAGE
}

// SAFETY: small layouts are forwarded to `System` unchanged; large ones get a fresh private
// mapping of at least `layout.size()` bytes aligned to 2 MiB (so to any alignment up to
// that), released only by `dealloc` with the same layout, which recomputes the same length.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_huge(layout) {
            return map_huge(layout.size());
        }
        // SAFETY: forwarded from the caller.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(layout) {
            // Fresh anonymous mappings read as zero: no memset needed.
            return map_huge(layout.size());
        }
        // SAFETY: forwarded from the caller.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(layout) {
            // SAFETY: `ptr` came from `map_huge(layout.size())`, which mapped this length.
            unsafe { unmap_huge(ptr, layout.size()) };
            return;
        }
        // SAFETY: forwarded from the caller.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees a valid layout for `new_size` (as `GlobalAlloc`).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (is_huge(layout), is_huge(new_layout)) {
            // SAFETY: forwarded from the caller.
            (false, false) => return unsafe { System.realloc(ptr, layout, new_size) },
            // The mapping already covers the new size.
            (true, true) if new_size.next_multiple_of(HUGE_PAGE) == layout.size().next_multiple_of(HUGE_PAGE) => {
                return ptr;
            }
            _ => {}
        }
        // Crossing the threshold or resizing a mapping: move the contents.
        // SAFETY: as `alloc`; the copy covers the bytes both blocks hold.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

/// A private anonymous mapping of `size` bytes rounded up to whole huge pages, starting on a
/// huge-page boundary and advised as huge; null when the system is out of memory.
#[cfg(target_os = "linux")]
fn map_huge(size: usize) -> *mut u8 {
    let Some(len) = size.checked_next_multiple_of(HUGE_PAGE) else { return core::ptr::null_mut() };
    let Some(padded) = len.checked_add(HUGE_PAGE) else { return core::ptr::null_mut() };
    // SAFETY: a new mapping that aliases nothing; the unmapped slack lies outside `start..start
    // + len`, which stays mapped and is returned.
    unsafe {
        let raw = libc::mmap(
            core::ptr::null_mut(),
            padded,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if raw == libc::MAP_FAILED {
            return core::ptr::null_mut();
        }
        // mmap returns page-aligned addresses, so the slack before the boundary is whole
        // pages, and so is the rest after the mapping.
        let head = (raw as usize).next_multiple_of(HUGE_PAGE) - raw as usize;
        let start = raw.cast::<u8>().add(head);
        if head > 0 {
            libc::munmap(raw, head);
        }
        libc::munmap(start.add(len).cast(), HUGE_PAGE - head);
        // Advice only: where huge pages are disabled the mapping simply stays on small pages.
        libc::madvise(start.cast(), len, libc::MADV_HUGEPAGE);
        start
    }
}

/// Releases a mapping made by [`map_huge`] for `size` bytes.
///
/// # Safety
/// `ptr` must come from `map_huge(size)` and not be used afterwards.
#[cfg(target_os = "linux")]
unsafe fn unmap_huge(ptr: *mut u8, size: usize) {
    // SAFETY: the caller passes a mapping of exactly this rounded length.
    unsafe { libc::munmap(ptr.cast(), size.next_multiple_of(HUGE_PAGE)) };
}

#[cfg(not(target_os = "linux"))]
fn map_huge(_size: usize) -> *mut u8 {
    unreachable!("huge mappings are only made on Linux")
}

#[cfg(not(target_os = "linux"))]
unsafe fn unmap_huge(_ptr: *mut u8, _size: usize) {
    unreachable!("huge mappings are only made on Linux")
}
