//! Replays the fuzz targets' committed inputs on stable, so CI guards them without nightly or
//! cargo-fuzz: every file under `fuzz/regressions/<target>/` (minimised inputs that once
//! failed; their `README.md` excepted) and every hand-made seed `fuzz/corpus/<target>/seed-*`,
//! through the very checks the fuzz targets run (`fuzz/src/checks.rs`, included here by path).
//! A check fails by panicking; each test runs all its target's files and then fails naming
//! every file that panicked and why.
//!
//! Built for this machine's CPU (`.cargo/config.toml`), this replays the inputs on the native
//! SIMD path; `.ci/run` also runs it with baseline x86-64 features, the path `cargo fuzz`
//! builds by default.

#[path = "../fuzz/src/checks.rs"]
mod checks;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// `fuzz/` in this checkout.
fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir` whose names `keep` accepts, sorted; none if `dir` does not exist.
fn files(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())).path())
        .filter(|p| p.is_file() && p.file_name().and_then(|n| n.to_str()).is_some_and(&keep))
        .collect();
    files.sort();
    files
}

/// The committed inputs of `target`: its regressions, then its seeds.
fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = fuzz_dir();
    let mut all = files(&fuzz.join("regressions").join(target), |n| n != "README.md" && !n.starts_with('.'));
    all.extend(files(&fuzz.join("corpus").join(target), |n| n.starts_with("seed-")));
    all
}

/// Text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_string()
    }
}

/// Runs `check` on each of `files`; returns `path: message` for each one that panicked.
fn replay(files: &[PathBuf], check: checks::Check) -> Vec<String> {
    let mut failures = Vec::new();
    for path in files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| check(&data))) {
            failures.push(format!("{}: {}", path.display(), panic_message(&*payload)));
        }
    }
    failures
}

/// Replays `target`'s committed inputs through its check; fails listing every failing file.
fn replay_target(target: &str) {
    let (_, check) = checks::TARGETS.iter().find(|(name, _)| *name == target).expect("a known target");
    let files = inputs(target);
    let seeds = files.iter().filter(|p| p.starts_with(fuzz_dir().join("corpus"))).count();
    assert!(seeds > 0, "no seeds found under fuzz/corpus/{target}/seed-*");
    let failures = replay(&files, *check);
    assert!(
        failures.is_empty(),
        "{} of {} committed inputs of fuzz target `{target}` fail (reproduce with \
         `cargo +nightly fuzz run {target} FILE`):\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    eprintln!("fuzz target `{target}`: {} committed inputs pass", files.len());
}

#[test]
fn gemm() {
    replay_target("gemm");
}

#[test]
fn activations() {
    replay_target("activations");
}

#[test]
fn model_file() {
    replay_target("model_file");
}

#[test]
fn cifar_records() {
    replay_target("cifar_records");
}

#[test]
fn schedule_spec() {
    replay_target("schedule_spec");
}

#[test]
fn softmax_xent() {
    replay_target("softmax_xent");
}

#[test]
fn int8_gemv() {
    replay_target("int8_gemv");
}

#[test]
fn infer_dense() {
    replay_target("infer_dense");
}

/// Every target in `fuzz/Cargo.toml` has a check and a test above, and a regressions directory.
#[test]
fn every_target_is_replayed() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let bins: Vec<&str> = manifest
        .lines()
        .filter_map(|l| l.strip_prefix("name = \""))
        .filter_map(|l| l.strip_suffix('"'))
        .filter(|&name| name != "simdnn-fuzz")
        .collect();
    let mut known: Vec<&str> = checks::TARGETS.iter().map(|(name, _)| *name).collect();
    let mut listed = bins.clone();
    known.sort();
    listed.sort();
    assert_eq!(listed, known, "fuzz/Cargo.toml's targets and fuzz/src/checks.rs's TARGETS differ");
    for target in bins {
        assert!(fuzz_dir().join("regressions").join(target).is_dir(), "no fuzz/regressions/{target}/");
    }
}

/// The hand-made model files stay what their names say as the format evolves: `seed-valid-*`
/// parse (with both parsers) and re-encode byte for byte in their own weight type, and
/// `seed-bad-*` and `seed-truncated` are rejected by both. (A seed that silently stopped parsing
/// would leave the fuzzer outside the payload parser.)
#[test]
fn model_file_seeds_are_what_they_say() {
    let seeds = files(&fuzz_dir().join("corpus").join("model_file"), |n| n.starts_with("seed-"));
    let valid = seeds.iter().filter(|p| p.to_string_lossy().contains("seed-valid-")).count();
    assert!(valid >= 5, "only {valid} valid model seeds");
    for path in &seeds {
        let bytes = std::fs::read(path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy();
        let in_place = simdnn::infer::Model::from_bytes(&bytes);
        if name.starts_with("seed-valid-") {
            let (saved, stored) = simdnn::format::from_bytes_typed(&bytes)
                .unwrap_or_else(|e| panic!("{}: does not parse: {e}", path.display()));
            assert!(
                simdnn::format::to_bytes_as(&saved, stored) == bytes,
                "{}: does not re-encode byte for byte as {stored:?}",
                path.display()
            );
            assert!(in_place.is_ok(), "{}: the in-place parser rejects it: {:?}", path.display(), in_place.err());
        } else {
            assert!(simdnn::format::from_bytes(&bytes).is_err(), "{}: parses", path.display());
            assert!(in_place.is_err(), "{}: the in-place parser accepts it", path.display());
        }
    }
}

/// The harness itself: a check that panics on one file makes the replay report that file and
/// its message, and only that file.
#[test]
fn a_panicking_check_is_reported_with_its_file() {
    fn fails_on_constant(data: &[u8]) {
        assert!(data != b"constant", "rejected `constant`");
    }
    let files = inputs("schedule_spec");
    let failures = replay(&files, fails_on_constant);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].contains("seed-constant") && failures[0].contains("rejected `constant`"), "{failures:?}");
}
