//! Helpers shared by the integration tests: tiny synthetic CIFAR-10 directories.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use simdnn::data::cifar::{IMAGE_BYTES, RECORD_BYTES, TEST_FILE, TRAIN_FILES};
use simdnn::rng::{Xoshiro, below, seeded};

/// The mean brightness of each colour plane for `label`: every class has its own colour,
/// so even a small dense network can learn to tell them apart.
pub fn class_means(label: u8) -> [i32; 3] {
    let l = label as i32;
    [30 + 20 * l, 220 - 19 * l, 40 + (l * 67) % 180]
}

/// One CIFAR-10 record (label byte, then the red, green and blue 32 x 32 planes): the class's
/// mean per plane plus uniform noise in [-24, 24], clamped to a byte.
pub fn record(label: u8, rng: &mut Xoshiro) -> Vec<u8> {
    assert!(label < 10);
    let means = class_means(label);
    let mut rec = Vec::with_capacity(RECORD_BYTES);
    rec.push(label);
    for mean in means {
        for _ in 0..IMAGE_BYTES / 3 {
            let noise = below(rng, 49) as i32 - 24;
            rec.push((mean + noise).clamp(0, 255) as u8);
        }
    }
    debug_assert_eq!(rec.len(), RECORD_BYTES);
    rec
}

/// `n` records with seeded random labels, concatenated as a CIFAR-10 binary file holds them.
pub fn records(n: usize, rng: &mut Xoshiro) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * RECORD_BYTES);
    for _ in 0..n {
        let label = below(rng, 10) as u8;
        out.extend_from_slice(&record(label, rng));
    }
    out
}

/// Writes `data_batch_1..5.bin` and `test_batch.bin` into `dir` (created if needed), each with
/// `records_per_file` records drawn from `seed`; returns `dir`.
pub fn write_cifar_dir(dir: &Path, records_per_file: usize, seed: u64) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    for (i, name) in TRAIN_FILES.iter().chain([&TEST_FILE]).enumerate() {
        let mut rng = seeded(seed, 7_000 + i as u64);
        fs::write(dir.join(name), records(records_per_file, &mut rng)).unwrap();
    }
    dir.to_path_buf()
}

/// The raw records of one file of a directory written by [`write_cifar_dir`].
pub fn read_records(dir: &Path, name: &str) -> Vec<Vec<u8>> {
    let bytes = fs::read(dir.join(name)).unwrap();
    assert_eq!(bytes.len() % RECORD_BYTES, 0);
    bytes.chunks_exact(RECORD_BYTES).map(<[u8]>::to_vec).collect()
}

/// A temporary directory with a tiny data set in `data/`, for running the `simdnn` binary:
/// every child gets `SIMDNN_DATA` pointing at it and an unreachable download URL, so no test
/// depends on the real data set or the network.
pub struct CliScratch {
    pub tmp: tempfile::TempDir,
    pub data: PathBuf,
}

/// An address that refuses connections at once: nothing is ever downloaded.
pub const UNREACHABLE_URL: &str = "http://127.0.0.1:1/cifar-10-binary.tar.gz";

impl CliScratch {
    pub fn new(records_per_file: usize, seed: u64) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data = write_cifar_dir(&tmp.path().join("data"), records_per_file, seed);
        CliScratch { tmp, data }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// `simdnn args...`, run in the scratch directory.
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_simdnn"));
        cmd.args(args)
            .current_dir(self.tmp.path())
            .env("SIMDNN_DATA", &self.data)
            .env("SIMDNN_CIFAR10_URL", UNREACHABLE_URL)
            .env_remove("SIMDNN_CIFAR10_MD5");
        cmd
    }

    /// Runs to completion; a panic in the child fails the test.
    pub fn run<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(&self, args: &[S]) -> std::process::Output {
        let out = self.command(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "simdnn {args:?} panicked:\n{stderr}");
        out
    }

    /// Runs and requires success; returns the whole output.
    pub fn ok_output<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(&self, args: &[S]) -> std::process::Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "simdnn {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs and requires success; returns stdout.
    pub fn ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(&self, args: &[S]) -> String {
        String::from_utf8_lossy(&self.ok_output(args).stdout).into_owned()
    }

    /// Runs and requires a clean failure (an exit code, not a signal); returns stderr.
    pub fn fails<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(&self, args: &[S]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        match out.status.code() {
            Some(0) => panic!("simdnn {args:?} succeeded:\n{}", String::from_utf8_lossy(&out.stdout)),
            Some(_) => stderr,
            None => panic!("simdnn {args:?} was killed ({}):\n{stderr}", out.status),
        }
    }

    /// Starts `simdnn args...` in the background, stdout discarded and stderr piped.
    pub fn spawn<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> std::process::Child {
        self.command(args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap()
    }
}
