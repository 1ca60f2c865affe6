//! `gemm_with` against the scalar twin `reference::gemm` over small shapes, transposes, row
//! padding, alpha/beta, bias, every activation, tiny block sizes and packing modes, and the
//! bf16 GEMM against its twin on the same operands: see
//! `simdnn_fuzz::checks::check_gemm` (shared with `tests/fuzz_regressions.rs`) and
//! `GemmInput` for the input's layout.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| simdnn_fuzz::checks::check_gemm(data));
