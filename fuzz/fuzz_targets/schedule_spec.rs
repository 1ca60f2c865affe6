//! `ScheduleSpec::parse` on arbitrary text never panics; an accepted spec round-trips through
//! `Display` and resolves for any run length without panicking: see
//! `simdnn_fuzz::checks::check_schedule_spec` (shared with `tests/fuzz_regressions.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| simdnn_fuzz::checks::check_schedule_spec(data));
