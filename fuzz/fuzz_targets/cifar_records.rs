//! `Split::from_records` over arbitrary bytes cut into 3073-byte CIFAR-10 records, then
//! `fill_batch`: see `simdnn_fuzz::checks::check_cifar_records` (shared with
//! `tests/fuzz_regressions.rs`). Run with `-max_len=16384` or more: a valid record needs 3077
//! bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| simdnn_fuzz::checks::check_cifar_records(data));
