//! `simdnn::infer` on small random dense models written with every weight type (f32, bf16,
//! int8 weights, int8 with dynamic and static u8 inputs) against the scalar reference
//! semantics of each file (dequantised, or fake-quantised for int8 inputs), within an
//! enclosure of what rounding and quantisation flips allow: see
//! `simdnn_fuzz::checks::check_infer_dense` (shared with `tests/fuzz_regressions.rs`) and
//! `InferDenseInput` for the input's layout.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| simdnn_fuzz::checks::check_infer_dense(data));
