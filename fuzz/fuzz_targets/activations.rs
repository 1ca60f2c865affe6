//! Every activation's SIMD `forward` and `backward` against the scalar twins, over arbitrary
//! f32 slices: see `simdnn_fuzz::checks::check_activations` (shared with
//! `tests/fuzz_regressions.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| simdnn_fuzz::checks::check_activations(data));
