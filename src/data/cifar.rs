//! CIFAR-10 in its binary layout: each record is 1 label byte then 3,072 pixel bytes (the
//! red, green and blue 32 x 32 planes). Files are memory-mapped and validated once; batches
//! are converted to `f32` on demand into a caller's buffer.
//!
//! Features stay in the file's channel-major order: a dense network does not care about the
//! order of its inputs, and the conversion stays a straight copy.

use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

pub use crate::nn::Preprocess;
use crate::{Error, Result};

pub const IMAGE_BYTES: usize = 3 * 32 * 32;
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
pub const CLASSES: usize = 10;
pub const TRAIN_FILES: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
pub const TEST_FILE: &str = "test_batch.bin";
pub const CLASS_NAMES: [&str; CLASSES] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// One validated, memory-mapped CIFAR-10 file.
struct MappedFile {
    map: Mmap,
}

impl MappedFile {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::data(path, "file not found (run `simdnn data fetch`, or point --data at a directory holding the CIFAR-10 binary files)")
            } else {
                Error::io(path, e)
            }
        })?;
        let meta = file.metadata().map_err(|e| Error::io(path, e))?;
        if !meta.is_file() {
            return Err(Error::data(path, "is not a regular file"));
        }
        let len = meta.len() as usize;
        if len == 0 {
            return Err(Error::data(path, "is empty"));
        }
        if !len.is_multiple_of(RECORD_BYTES) {
            return Err(Error::data(
                path,
                format!(
                    "length {len} is not a multiple of the {RECORD_BYTES}-byte record ({} whole records and {} stray bytes: truncated or not a CIFAR-10 binary file)",
                    len / RECORD_BYTES,
                    len % RECORD_BYTES
                ),
            ));
        }
        // SAFETY: the mapping is read-only; like every memory-mapped reader we rely on the
        // file not being truncated by another process while it is mapped.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        if map.len() != len {
            return Err(Error::data(path, "changed size while being opened"));
        }
        for (record, chunk) in map.chunks_exact(RECORD_BYTES).enumerate() {
            if chunk[0] as usize >= CLASSES {
                return Err(Error::data(
                    path,
                    format!("record {record} has label {}, but labels must be below {CLASSES}", chunk[0]),
                ));
            }
        }
        Ok(MappedFile { map })
    }

    fn records(&self) -> impl Iterator<Item = &[u8]> {
        self.map.chunks_exact(RECORD_BYTES)
    }
}

/// The CIFAR-10 binary files of one directory.
pub struct Cifar10 {
    dir: PathBuf,
    train: Vec<MappedFile>,
    test: MappedFile,
}

impl Cifar10 {
    /// Maps and validates `data_batch_1..5.bin` and `test_batch.bin` in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::data(
                dir,
                "is not a directory (run `simdnn data fetch`, or point --data or SIMDNN_DATA at the directory holding data_batch_1..5.bin and test_batch.bin)",
            ));
        }
        let train = TRAIN_FILES.iter().map(|f| MappedFile::open(&dir.join(f))).collect::<Result<Vec<_>>>()?;
        let test = MappedFile::open(&dir.join(TEST_FILE))?;
        Ok(Cifar10 { dir: dir.to_path_buf(), train, test })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The 50,000 training records in file order.
    pub fn train_records(&self) -> Split<'_> {
        Split { records: self.train.iter().flat_map(MappedFile::records).collect() }
    }

    /// The test records.
    pub fn test_records(&self) -> Split<'_> {
        Split { records: self.test.records().collect() }
    }

    /// The notebook's split: the first `val_size` training records validate, the rest train.
    pub fn train_val(&self, val_size: usize) -> Result<(Split<'_>, Split<'_>)> {
        let mut all = self.train_records();
        if val_size >= all.len() {
            return Err(Error::config(
                "--val-size",
                format!("{val_size} leaves no training records (the training files hold {})", all.len()),
            ));
        }
        let train = all.records.split_off(val_size);
        Ok((Split { records: train }, all))
    }
}

/// Per-feature standardisation fitted on `split`'s pixels (one pass over the mapped bytes).
pub fn standardise_from(split: &Split<'_>) -> Result<Preprocess> {
    Preprocess::standardise_from_images((0..split.len()).map(|i| split.pixels(i)), IMAGE_BYTES)
        .ok_or_else(|| Error::config("standardisation", "needs at least one training record"))
}

/// A list of records (borrowed from the memory maps).
#[derive(Clone)]
pub struct Split<'a> {
    records: Vec<&'a [u8]>,
}

impl<'a> Split<'a> {
    /// A split over records already in memory (each `RECORD_BYTES` long, label first).
    pub fn from_records(records: Vec<&'a [u8]>) -> Result<Self> {
        for (i, r) in records.iter().enumerate() {
            if r.len() != RECORD_BYTES {
                return Err(Error::Record {
                    index: i,
                    reason: format!("{} bytes, a CIFAR-10 record has {RECORD_BYTES}", r.len()),
                });
            }
            if r[0] as usize >= CLASSES {
                return Err(Error::Record { index: i, reason: format!("label {} is not below {CLASSES}", r[0]) });
            }
        }
        Ok(Split { records })
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn label(&self, i: usize) -> u8 {
        self.records[i][0]
    }

    pub fn pixels(&self, i: usize) -> &'a [u8] {
        &self.records[i][1..]
    }

    /// Asks the CPU to start loading the records `indices` into its caches (a hint, nothing
    /// waits for it). Shuffled records sit at random places in the maps: loading them when
    /// the batch is converted stalls on each one, issued a step ahead the loads overlap the
    /// step's arithmetic.
    /// Only the pixels `features` of each record are asked for (a thread converting those
    /// features of the batch wants only them in its caches).
    pub fn prefetch(&self, indices: &[u32], features: Range<usize>) {
        #[cfg(target_arch = "x86_64")]
        for &i in indices {
            for line in self.pixels(i as usize)[features.clone()].chunks(64) {
                // SAFETY: a prefetch of a valid address (inside the record); it never faults
                // and has no visible effect but on timing.
                unsafe {
                    core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T1 }>(line.as_ptr().cast())
                };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (indices, features);
    }

    /// Converts the records `indices` into rows of `x` (`indices.len() x 3072`) and their
    /// labels into `y`.
    pub fn fill_batch(&self, indices: &[u32], pre: &Preprocess, x: &mut [f32], y: &mut [u8]) {
        assert!(
            x.len() == indices.len() * IMAGE_BYTES && y.len() == indices.len(),
            "batch buffers do not match {} records",
            indices.len()
        );
        self.fill_labels(indices, y);
        self.fill_features(indices, pre, x, 0..IMAGE_BYTES);
    }

    /// The labels of the records `indices`, into `y`.
    pub fn fill_labels(&self, indices: &[u32], y: &mut [u8]) {
        assert_eq!(y.len(), indices.len(), "label buffer does not match {} records", indices.len());
        for (&i, label) in indices.iter().zip(y.iter_mut()) {
            *label = self.label(i as usize);
        }
    }

    /// Converts the pixels `features` of the records `indices` into the rows of `x`
    /// (`indices.len() x features.len()`): the columns `features` of the batch's input
    /// matrix, for a thread that multiplies them by those rows of the first layer's weights.
    pub fn fill_features(&self, indices: &[u32], pre: &Preprocess, x: &mut [f32], features: Range<usize>) {
        assert!(
            features.end <= IMAGE_BYTES && x.len() == indices.len() * features.len(),
            "feature buffer does not match {} records of features {features:?}",
            indices.len()
        );
        if features.is_empty() {
            return;
        }
        for (&i, row) in indices.iter().zip(x.chunks_exact_mut(features.len())) {
            pre.apply_features(self.pixels(i as usize), row, features.clone());
        }
    }
}
