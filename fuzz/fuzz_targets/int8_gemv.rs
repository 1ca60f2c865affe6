//! The integer inference kernels against their scalar twins, exactly: `gemv_u8_i8_with` for
//! every `Int8Kernel` this CPU runs (u8 inputs times packed int8 weights, 0..=300 inputs,
//! 1..=150 outputs, extremes forced in some modes), `quantize_u8` on arbitrary f32 bits and
//! `min_max`: see `simdnn_fuzz::checks::check_int8_gemv` (shared with
//! `tests/fuzz_regressions.rs`) and `Int8GemvInput` for the input's layout.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| simdnn_fuzz::checks::check_int8_gemv(data));
