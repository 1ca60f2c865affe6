//! `simdnn::format::from_bytes` on arbitrary bytes must return (`Ok` or `Err`), never panic
//! or allocate beyond the input's size.
//!
//! A mutated file almost always fails the CRC check, which would keep the fuzzer out of the
//! payload parser, so each input is parsed twice: as given, and with its header's payload
//! length and trailing CRC-32 rewritten to match (the same bytes otherwise).
//!
//! A model that parses must also survive being used: re-encoding is a fixed point
//! (`to_bytes(from_bytes(to_bytes(m))) == to_bytes(m)`), and one input row runs through the
//! preprocessing and `predict` without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simdnn::format::{from_bytes, to_bytes};
use simdnn::nn::Workspace;

/// 8 magic bytes, version, flags, payload length.
const HEADER_BYTES: usize = 24;

fn exercise(bytes: &[u8]) {
    let Ok(saved) = from_bytes(bytes) else { return };
    let encoded = to_bytes(&saved);
    let again = from_bytes(&encoded).unwrap_or_else(|e| panic!("a re-encoded model does not parse: {e}"));
    assert!(to_bytes(&again) == encoded, "re-encoding a parsed model is not a fixed point");

    let model = &saved.model;
    let pixels: Vec<u8> = (0..model.input_dim()).map(|i| (i * 37 % 256) as u8).collect();
    let mut x = vec![0f32; model.input_dim()];
    saved.preprocess.apply(&pixels, &mut x);
    let mut ws = Workspace::new(model, 1);
    let probs = model.predict(&x, 1, &mut ws);
    assert_eq!(probs.len(), model.output_dim());
}

fuzz_target!(|data: &[u8]| {
    exercise(data);
    if data.len() >= HEADER_BYTES + 4 {
        let mut fixed = data.to_vec();
        let payload = (fixed.len() - HEADER_BYTES - 4) as u64;
        fixed[16..24].copy_from_slice(&payload.to_le_bytes());
        let body = fixed.len() - 4;
        let crc = crc32(&fixed[..body]);
        fixed[body..].copy_from_slice(&crc.to_le_bytes());
        exercise(&fixed);
    }
});

/// CRC-32 (IEEE, as `crc32fast` and zlib compute it), bit by bit: small and dependency-free.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}
