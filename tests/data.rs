//! Reading CIFAR-10 binaries: record counts, the notebook's validation split, batch
//! conversion, standardisation, and an error naming the file for every malformed directory.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use simdnn::data::cifar::{IMAGE_BYTES, RECORD_BYTES, TEST_FILE, TRAIN_FILES};
use simdnn::data::{Cifar10, Split, standardise_from};
use simdnn::nn::Preprocess;

use common::{class_means, read_records, write_cifar_dir};

const PER_FILE: usize = 20;

fn data_dir(tmp: &tempfile::TempDir, seed: u64) -> PathBuf {
    write_cifar_dir(&tmp.path().join("cifar"), PER_FILE, seed)
}

/// The error of opening `dir`, which must fail.
fn open_err(dir: &Path) -> String {
    match Cifar10::open(dir) {
        Ok(_) => panic!("{} opened", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn opens_and_counts_records() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(&tmp, 1);
    for name in TRAIN_FILES.iter().chain([&TEST_FILE]) {
        assert_eq!(fs::metadata(dir.join(name)).unwrap().len() as usize, PER_FILE * RECORD_BYTES);
    }
    let data = Cifar10::open(&dir).unwrap();
    assert_eq!(data.dir(), dir);
    assert_eq!(data.train_records().len(), 5 * PER_FILE);
    assert_eq!(data.test_records().len(), PER_FILE);

    // Training records come in file order; the test split is test_batch.bin.
    let train = data.train_records();
    let mut expected = Vec::new();
    for name in TRAIN_FILES {
        expected.extend(read_records(&dir, name));
    }
    for (i, rec) in expected.iter().enumerate() {
        assert_eq!(train.label(i), rec[0], "train record {i}");
        assert_eq!(train.pixels(i), &rec[1..], "train record {i}");
    }
    let test = data.test_records();
    for (i, rec) in read_records(&dir, TEST_FILE).iter().enumerate() {
        assert_eq!(test.label(i), rec[0], "test record {i}");
        assert_eq!(test.pixels(i), &rec[1..], "test record {i}");
    }
}

#[test]
fn generated_labels_cover_the_classes() {
    // The helper writes learnable data: all classes appear, and the planes' brightness follows
    // the class.
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_cifar_dir(&tmp.path().join("c"), 200, 5);
    let recs = read_records(&dir, "data_batch_1.bin");
    let mut seen = [0usize; 10];
    for rec in &recs {
        seen[rec[0] as usize] += 1;
        let means = class_means(rec[0]);
        for (plane, mean) in means.iter().enumerate() {
            let pixels = &rec[1 + plane * 1024..1 + (plane + 1) * 1024];
            let avg = pixels.iter().map(|&p| p as f64).sum::<f64>() / 1024.0;
            assert!((avg - *mean as f64).abs() < 4.0, "label {} plane {plane}: mean {avg}", rec[0]);
        }
    }
    assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
    // Different seeds, different files; the same seed, the same files.
    let again = write_cifar_dir(&tmp.path().join("again"), 200, 5);
    assert_eq!(fs::read(dir.join(TEST_FILE)).unwrap(), fs::read(again.join(TEST_FILE)).unwrap());
    let other = write_cifar_dir(&tmp.path().join("other"), 200, 6);
    assert_ne!(fs::read(dir.join(TEST_FILE)).unwrap(), fs::read(other.join(TEST_FILE)).unwrap());
}

#[test]
fn validation_split_is_the_first_records_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(&tmp, 2);
    let data = Cifar10::open(&dir).unwrap();
    let first_file = read_records(&dir, "data_batch_1.bin");
    let all: Vec<Vec<u8>> = TRAIN_FILES.iter().flat_map(|f| read_records(&dir, f)).collect();
    for v in [1, 7, PER_FILE, PER_FILE + 3, 5 * PER_FILE - 1] {
        let (train, val) = data.train_val(v).unwrap();
        assert_eq!(val.len(), v);
        assert_eq!(train.len(), 5 * PER_FILE - v);
        for i in 0..v {
            assert_eq!(val.label(i), all[i][0], "v = {v}: val record {i}");
            assert_eq!(val.pixels(i), &all[i][1..], "v = {v}: val record {i}");
            if i < PER_FILE {
                assert_eq!(val.pixels(i), &first_file[i][1..]);
            }
        }
        for i in 0..train.len() {
            assert_eq!(train.label(i), all[v + i][0], "v = {v}: train record {i}");
            assert_eq!(train.pixels(i), &all[v + i][1..], "v = {v}: train record {i}");
        }
    }
}

#[test]
fn val_size_that_leaves_no_training_records_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = Cifar10::open(&data_dir(&tmp, 3)).unwrap();
    for v in [5 * PER_FILE, 5 * PER_FILE + 1, usize::MAX] {
        let text = data.train_val(v).err().map(|e| e.to_string()).unwrap_or_else(|| panic!("val size {v} accepted"));
        assert!(text.contains("--val-size") && text.contains(&(5 * PER_FILE).to_string()), "`{text}`");
    }
}

#[test]
fn fill_batch_scales_pixels_and_copies_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(&tmp, 4);
    let data = Cifar10::open(&dir).unwrap();
    let test = data.test_records();
    let recs = read_records(&dir, TEST_FILE);
    let indices = [3u32, 0, 7, 7, (PER_FILE - 1) as u32];
    let mut x = vec![f32::NAN; indices.len() * IMAGE_BYTES];
    let mut y = vec![255u8; indices.len()];
    test.fill_batch(&indices, &Preprocess::UNIT_SCALE, &mut x, &mut y);
    for (row, &i) in indices.iter().enumerate() {
        let rec = &recs[i as usize];
        assert_eq!(y[row], rec[0], "row {row}");
        for (f, &p) in rec[1..].iter().enumerate() {
            let got = x[row * IMAGE_BYTES + f] as f64;
            let want = p as f64 / 255.0;
            assert!((got - want).abs() <= 1e-6, "row {row} feature {f}: {got} vs {want}");
        }
    }
    // A second, shorter batch into the front of the same buffers.
    test.fill_batch(&[1], &Preprocess::Scale(1.0), &mut x[..IMAGE_BYTES], &mut y[..1]);
    assert_eq!(y[0], recs[1][0]);
    assert!(x[..IMAGE_BYTES].iter().zip(&recs[1][1..]).all(|(&a, &p)| a == p as f32));
}

#[test]
fn standardisation_is_fitted_on_the_training_split() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(&tmp, 5);
    let data = Cifar10::open(&dir).unwrap();
    let (train, _val) = data.train_val(10).unwrap();
    let pre = standardise_from(&train).unwrap();
    let Preprocess::Standardise { mean, inv_std } = &pre else { panic!("not standardisation: {pre:?}") };
    assert_eq!((mean.len(), inv_std.len()), (IMAGE_BYTES, IMAGE_BYTES));

    let n = train.len();
    let indices: Vec<u32> = (0..n as u32).collect();
    let mut x = vec![0f32; n * IMAGE_BYTES];
    let mut y = vec![0u8; n];
    train.fill_batch(&indices, &pre, &mut x, &mut y);
    for f in 0..IMAGE_BYTES {
        let col = (0..n).map(|r| x[r * IMAGE_BYTES + f] as f64);
        let m = col.clone().sum::<f64>() / n as f64;
        let var = col.map(|v| (v - m) * (v - m)).sum::<f64>() / n as f64;
        assert!(m.abs() < 1e-4, "feature {f}: mean {m}");
        assert!((var.sqrt() - 1.0).abs() < 1e-3, "feature {f}: std {}", var.sqrt());
    }
    // Fitted on the training records only: the statistics of the whole set differ.
    let whole = standardise_from(&data.train_records()).unwrap();
    assert_ne!(whole, pre);
    // No records, no statistics.
    let empty = Split::from_records(Vec::new()).unwrap();
    assert!(standardise_from(&empty).is_err());
}

#[test]
fn fill_features_converts_those_columns_of_the_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = Cifar10::open(&data_dir(&tmp, 6)).unwrap();
    let (train, _val) = data.train_val(10).unwrap();
    let indices = [4u32, 1, 4, 9];
    let rows = indices.len();
    for (name, pre) in [("x / 255", Preprocess::UNIT_SCALE), ("standardised", standardise_from(&train).unwrap())] {
        let mut whole = vec![f32::NAN; rows * IMAGE_BYTES];
        let mut y = vec![0u8; rows];
        train.fill_batch(&indices, &pre, &mut whole, &mut y);
        // Odd bounds: ranges that are not whole SIMD vectors, an empty one, the last feature.
        for features in [0..1536, 1536..IMAGE_BYTES, 17..1041, 3000..3000, IMAGE_BYTES - 1..IMAGE_BYTES] {
            let mut part = vec![f32::NAN; rows * features.len()];
            train.fill_features(&indices, &pre, &mut part, features.clone());
            for r in 0..rows {
                let want = &whole[r * IMAGE_BYTES..][features.clone()];
                assert_eq!(
                    &part[r * features.len()..][..features.len()],
                    want,
                    "{name}: row {r}, features {features:?}"
                );
            }
            train.prefetch(&indices, features);
        }
        let mut labels = vec![255u8; rows];
        train.fill_labels(&indices, &mut labels);
        assert_eq!(labels, y);
    }
}

#[test]
fn missing_directory_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("does-not-exist");
    let text = open_err(&dir);
    assert!(text.contains(&dir.display().to_string()), "`{text}`");
    assert!(text.contains("not a directory"), "`{text}`");
    // A file where the directory should be.
    let file = tmp.path().join("a-file");
    fs::write(&file, b"x").unwrap();
    assert!(open_err(&file).contains(&file.display().to_string()));
}

#[test]
fn missing_test_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(&tmp, 6);
    fs::remove_file(dir.join(TEST_FILE)).unwrap();
    let text = open_err(&dir);
    assert!(text.contains(&dir.join(TEST_FILE).display().to_string()), "`{text}`");
    assert!(text.contains("not found"), "`{text}`");
}

#[test]
fn empty_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(&tmp, 7);
    let path = dir.join("data_batch_3.bin");
    fs::write(&path, b"").unwrap();
    let text = open_err(&dir);
    assert!(text.contains(&path.display().to_string()) && text.contains("empty"), "`{text}`");
}

#[test]
fn stray_bytes_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(&tmp, 8);
    let path = dir.join("data_batch_2.bin");
    let original = fs::read(&path).unwrap();
    for delta in [5isize, -1, -(RECORD_BYTES as isize) + 1] {
        let mut bytes = original.clone();
        let len = (bytes.len() as isize + delta) as usize;
        bytes.resize(len, 0);
        fs::write(&path, &bytes).unwrap();
        let text = open_err(&dir);
        assert!(text.contains(&path.display().to_string()), "`{text}`");
        assert!(text.contains("3073"), "`{text}`");
        assert!(text.contains(&len.to_string()), "length {len}: `{text}`");
    }
    // Fewer bytes than one record.
    fs::write(&path, [1u8; 100]).unwrap();
    let text = open_err(&dir);
    assert!(text.contains(&path.display().to_string()) && text.contains("3073"), "`{text}`");
}

#[test]
fn bad_label_names_file_and_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(&tmp, 9);
    let path = dir.join("data_batch_4.bin");
    for label in [10u8, 255] {
        let mut bytes = fs::read(&path).unwrap();
        bytes[3 * RECORD_BYTES] = label;
        fs::write(&path, &bytes).unwrap();
        let text = open_err(&dir);
        assert!(text.contains(&path.display().to_string()), "`{text}`");
        assert!(text.contains("record 3") && text.contains(&format!("label {label}")), "`{text}`");
    }
    // Label 9 is fine.
    let mut bytes = fs::read(&path).unwrap();
    bytes[3 * RECORD_BYTES] = 9;
    fs::write(&path, &bytes).unwrap();
    let data = Cifar10::open(&dir).unwrap();
    assert_eq!(data.train_records().label(3 * PER_FILE + 3), 9);
}

#[test]
fn directory_in_place_of_a_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(&tmp, 10);
    let path = dir.join("data_batch_5.bin");
    fs::remove_file(&path).unwrap();
    fs::create_dir(&path).unwrap();
    let text = open_err(&dir);
    assert!(text.contains(&path.display().to_string()), "`{text}`");
    assert!(text.contains("not a regular file"), "`{text}`");
}

#[test]
fn records_from_memory_are_validated() {
    let good = vec![3u8; RECORD_BYTES];
    let mut bad_label = good.clone();
    bad_label[0] = 10;
    let short = vec![1u8; RECORD_BYTES - 1];
    assert_eq!(Split::from_records(vec![&good[..], &good[..]]).unwrap().len(), 2);
    for (what, recs) in [("label 10", vec![&good[..], &bad_label[..]]), ("short record", vec![&short[..]])] {
        let text = Split::from_records(recs).err().map(|e| e.to_string()).unwrap_or_else(|| panic!("{what} accepted"));
        assert!(text.contains("record"), "{what}: `{text}`");
    }
}

#[test]
fn records_from_memory_are_not_called_a_model_file() {
    let short = vec![1u8; RECORD_BYTES - 1];
    let text = Split::from_records(vec![&short[..]]).err().map(|e| e.to_string()).unwrap();
    assert!(!text.contains("model file"), "`{text}`");
}
