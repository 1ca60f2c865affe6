//! The fused softmax + sparse cross-entropy kernel (and `softmax_rows`) against the scalar twin
//! `reference::softmax_cross_entropy`, over awkward row lengths, huge spreads and offsets, ties
//! and -inf/NaN/+inf logits: see `simdnn_fuzz::checks::check_softmax_xent` (shared with
//! `tests/fuzz_regressions.rs`) and `SoftmaxXentInput` for the input's layout.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| simdnn_fuzz::checks::check_softmax_xent(data));
