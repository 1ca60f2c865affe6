//! `HugePageAlloc`: large blocks on their own 2 MiB-aligned mappings, small ones from the
//! system allocator, and contents kept across every kind of `realloc`. The allocator is
//! called directly here (not installed), so the test harness's own allocations stay apart.

use std::alloc::{GlobalAlloc, Layout};

use simdnn::hugepages::{HUGE_MIN_BYTES, HugePageAlloc};

const HUGE_PAGE: usize = 2 << 20;

/// Fills `len` bytes from `ptr` with a pattern that depends on `seed`.
fn fill(ptr: *mut u8, len: usize, seed: u8) {
    // SAFETY: callers pass blocks of at least `len` bytes that they own.
    let bytes = unsafe { std::slice::from_raw_parts_mut(ptr, len) };
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
    }
}

/// Whether the first `len` bytes from `ptr` hold `fill`'s pattern.
fn holds(ptr: *const u8, len: usize, seed: u8) -> bool {
    // SAFETY: as `fill`.
    let bytes = unsafe { std::slice::from_raw_parts(ptr, len) };
    bytes.iter().enumerate().all(|(i, &b)| b == (i as u8).wrapping_mul(31).wrapping_add(seed))
}

#[test]
fn large_blocks_are_huge_page_aligned_writable_and_freed() {
    for size in [HUGE_MIN_BYTES, HUGE_PAGE - 1, HUGE_PAGE, HUGE_PAGE + 1, 5 * HUGE_PAGE + 12_345] {
        let layout = Layout::from_size_align(size, 64).unwrap();
        // SAFETY: a non-zero layout; the block is freed with the same layout.
        unsafe {
            let ptr = HugePageAlloc.alloc(layout);
            assert!(!ptr.is_null(), "{size} bytes");
            if cfg!(target_os = "linux") {
                assert_eq!(ptr as usize % HUGE_PAGE, 0, "{size} bytes at {ptr:p}");
            }
            fill(ptr, size, 7);
            assert!(holds(ptr, size, 7), "{size} bytes");
            HugePageAlloc.dealloc(ptr, layout);
        }
    }
}

#[test]
fn zeroed_blocks_read_as_zero_large_or_small() {
    for size in [1, 4096, HUGE_MIN_BYTES - 1, HUGE_MIN_BYTES, 3 * HUGE_PAGE + 8] {
        let layout = Layout::from_size_align(size, 16).unwrap();
        // SAFETY: as above.
        unsafe {
            let ptr = HugePageAlloc.alloc_zeroed(layout);
            assert!(!ptr.is_null());
            assert!(std::slice::from_raw_parts(ptr, size).iter().all(|&b| b == 0), "{size} bytes");
            HugePageAlloc.dealloc(ptr, layout);
        }
    }
}

#[test]
fn realloc_keeps_the_contents_across_the_threshold_both_ways() {
    // small -> small, small -> large, large -> same huge pages, large -> more, large -> small.
    let sizes = [1000, 60_000, HUGE_MIN_BYTES + 3, HUGE_PAGE - 5, 2 * HUGE_PAGE + 1, 70_000, 10];
    let mut layout = Layout::from_size_align(sizes[0], 8).unwrap();
    // SAFETY: every step reallocates the block it was given with the layout it has.
    unsafe {
        let mut ptr = HugePageAlloc.alloc(layout);
        fill(ptr, layout.size(), 3);
        for &size in &sizes[1..] {
            let kept = layout.size().min(size);
            ptr = HugePageAlloc.realloc(ptr, layout, size);
            assert!(!ptr.is_null(), "{} -> {size} bytes", layout.size());
            assert!(holds(ptr, kept, 3), "{} -> {size} bytes lost data", layout.size());
            layout = Layout::from_size_align(size, 8).unwrap();
            fill(ptr, size, 3);
        }
        HugePageAlloc.dealloc(ptr, layout);
    }
}

#[test]
fn a_vec_of_parameters_works_through_it() {
    // What the binary's buffers do: grow, shrink and free many times.
    for round in 0..20u32 {
        let len = (HUGE_MIN_BYTES / 4) + round as usize * 100_003;
        let layout = Layout::array::<f32>(len).unwrap();
        // SAFETY: as above; f32 has no invalid bit patterns.
        unsafe {
            let ptr = HugePageAlloc.alloc_zeroed(layout).cast::<f32>();
            let params = std::slice::from_raw_parts_mut(ptr, len);
            params.iter_mut().enumerate().for_each(|(i, p)| *p = i as f32);
            assert_eq!(params[len - 1], (len - 1) as f32);
            HugePageAlloc.dealloc(ptr.cast(), layout);
        }
    }
}
