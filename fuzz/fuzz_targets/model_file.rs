//! `simdnn::format::from_bytes` on arbitrary bytes (as given, and with the header's length and
//! CRC patched to match) never panics, and a model that parses re-encodes to a fixed point and
//! predicts: see `simdnn_fuzz::checks::check_model_file` (shared with
//! `tests/fuzz_regressions.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| simdnn_fuzz::checks::check_model_file(data));
