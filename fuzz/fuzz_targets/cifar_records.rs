//! `Split::from_records` over arbitrary bytes cut into 3073-byte CIFAR-10 records, then
//! `fill_batch` on a few of them. Never panics.
//!
//! Input: 4 control bytes (byte 0 picks the preprocessing, bytes 1..4 the batch's record
//! indices, taken mod the record count), then the records; a short last chunk is passed on
//! as a (malformed) record of its own. Run with `-max_len=16384` or more: a valid record
//! needs 3077 bytes.
//!
//! Checked: `from_records` accepts exactly the lists whose records are all 3073 bytes with a
//! label below 10; `fill_batch` copies the labels and converts each pixel as the scalar
//! formula does (within a few roundings).
#![no_main]

use libfuzzer_sys::fuzz_target;
use simdnn::data::cifar::{CLASSES, IMAGE_BYTES, Preprocess, RECORD_BYTES};
use simdnn::data::{Split, standardise_from};

fuzz_target!(|data: &[u8]| {
    let Some((control, rest)) = data.split_first_chunk::<4>() else { return };
    let records: Vec<&[u8]> = rest.chunks(RECORD_BYTES).collect();
    let valid = records.iter().all(|r| r.len() == RECORD_BYTES && (r[0] as usize) < CLASSES);
    let split = match Split::from_records(records.clone()) {
        Ok(split) => split,
        Err(_) => {
            assert!(!valid, "from_records rejected valid records");
            return;
        }
    };
    assert!(valid, "from_records accepted a malformed record");
    assert_eq!(split.len(), records.len());

    let preprocess = match control[0] % 3 {
        0 => Preprocess::UNIT_SCALE,
        // Negative and odd scales too.
        1 => Preprocess::Scale(control[0] as f32 / -7.0),
        _ => match standardise_from(&split) {
            Ok(p) => p,
            Err(_) => {
                assert!(split.is_empty(), "standardisation failed on {} records", split.len());
                return;
            }
        },
    };
    let indices: Vec<u32> = if split.is_empty() {
        Vec::new()
    } else {
        control[1..].iter().map(|&b| (b as usize % split.len()) as u32).collect()
    };
    let mut x = vec![f32::NAN; indices.len() * IMAGE_BYTES];
    let mut y = vec![u8::MAX; indices.len()];
    split.fill_batch(&indices, &preprocess, &mut x, &mut y);

    for ((&i, row), &label) in indices.iter().zip(x.chunks_exact(IMAGE_BYTES)).zip(&y) {
        let record = records[i as usize];
        assert_eq!(label, record[0], "label of record {i}");
        for (j, (&got, &p)) in row.iter().zip(&record[1..]).enumerate() {
            let (mean, scale) = match &preprocess {
                Preprocess::Scale(f) => (0.0, *f),
                Preprocess::Standardise { mean, inv_std } => (mean[j], inv_std[j]),
            };
            let expected = (p as f64 - mean as f64) * scale as f64;
            // A few roundings of terms no larger than (|p| + |mean|) |scale|.
            let tol = 4.0 * f32::EPSILON as f64 * (p as f64 + mean.abs() as f64) * scale.abs() as f64;
            assert!(
                got.is_finite() && (got as f64 - expected).abs() <= tol,
                "record {i} pixel {j} ({p}): {got}, expected {expected}"
            );
        }
    }
});
