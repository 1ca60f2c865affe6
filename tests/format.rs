//! The `.simdnn` model file: exact round trips, and hostile input (truncation, corruption,
//! unknown versions, crafted sizes) that must give an informative `Err`, never a panic or a
//! huge allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};

use simdnn::format::{MAGIC, SavedModel, VERSION, from_bytes, to_bytes};
use simdnn::kernels::Activation;
use simdnn::nn::{Initializer, LayerSpec, Preprocess, Sequential};
use simdnn::rng::{below, seeded};
use simdnn::train::run::{load_model, save_model};

/// Records the largest single allocation this test binary makes, so that the hostile-size
/// tests can check that the reader never trusts a size it has not checked against the file.
struct LargestAllocation;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

/// No test in this file legitimately allocates anywhere near this much.
const ALLOCATION_LIMIT: usize = 16 << 20;

const HEADER: usize = 24;

fn model() -> Sequential {
    let specs = [
        LayerSpec::Dense { units: 7, activation: Activation::ELU, init: Initializer::HeNormal },
        LayerSpec::Dense { units: 5, activation: Activation::Selu, init: Initializer::LecunNormal },
        LayerSpec::Dense { units: 4, activation: Activation::Softmax, init: Initializer::GlorotUniform },
    ];
    let mut m = Sequential::new(12, &specs, 3).unwrap();
    // Non-zero biases, so that a reader that skips or swaps them cannot pass.
    let n = m.num_params();
    for (i, p) in m.params.iter_mut().enumerate() {
        if *p == 0.0 {
            *p = (i as f32 - n as f32 / 2.0) / 64.0;
        }
    }
    m
}

fn scaled() -> SavedModel {
    SavedModel { model: model(), preprocess: Preprocess::Scale(1.0 / 255.0) }
}

fn standardised() -> SavedModel {
    let mean = (0..12).map(|i| 100.0 + i as f32 * 3.25).collect();
    let inv_std = (0..12).map(|i| 1.0 / (40.0 + i as f32)).collect();
    SavedModel { model: model(), preprocess: Preprocess::Standardise { mean, inv_std } }
}

/// `from_bytes`, turning a panic into a test failure that names the input.
fn parse(bytes: &[u8], what: &str) -> simdnn::Result<SavedModel> {
    match catch_unwind(AssertUnwindSafe(|| from_bytes(bytes))) {
        Ok(r) => r,
        Err(_) => panic!("from_bytes panicked on {what}"),
    }
}

fn err_text(bytes: &[u8], what: &str) -> String {
    match parse(bytes, what) {
        Ok(_) => panic!("{what}: accepted"),
        Err(e) => e.to_string(),
    }
}

fn stored_crc(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap())
}

/// A file around `payload` with a correct header and checksum, as a writer would make it.
fn file_with(version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Recomputes the checksum of an edited file.
fn reseal(bytes: &mut [u8]) {
    let n = bytes.len();
    let crc = crc32fast::hash(&bytes[..n - 4]);
    bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
}

/// Little-endian payload builder.
#[derive(Default)]
struct Payload(Vec<u8>);

impl Payload {
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn f32(self, v: f32) -> Self {
        self.u32(v.to_bits())
    }
    fn f32s(mut self, n: usize, v: f32) -> Self {
        for _ in 0..n {
            self = self.f32(v);
        }
        self
    }
    /// A dense layer header: kind 1, sizes, activation code and parameter, dtype f32.
    fn layer(self, n_in: u32, n_out: u32, activation: u8, param: f32) -> Self {
        self.u8(1).u32(n_in).u32(n_out).u8(activation).f32(param).u8(0)
    }
}

/// A well-formed payload by hand: input 3, scale 0.5, one softmax layer 3 -> 2.
fn minimal_payload() -> Payload {
    Payload::default().u32(3).u8(0).f32(0.5).u32(1).layer(3, 2, 7, 0.0).f32s(6, 0.25).f32s(2, -1.0)
}

#[test]
fn round_trips_exactly() {
    for saved in [scaled(), standardised()] {
        let bytes = to_bytes(&saved);
        assert_eq!(&bytes[..8], &MAGIC);
        // Dense layers with f32 weights: the lowest version that holds them.
        assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 1);
        assert_eq!(u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize, bytes.len() - HEADER - 4);
        assert_eq!(stored_crc(&bytes), crc32fast::hash(&bytes[..bytes.len() - 4]));
        let back = from_bytes(&bytes).unwrap();
        assert_eq!(back, saved);
        // Bit for bit, not just equal as floats.
        let bits = |m: &SavedModel| m.model.params.iter().map(|p| p.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&saved));
        assert_eq!(to_bytes(&back), bytes, "writing what was read gives the same file");
        assert_eq!(back.model.layers().len(), 3);
        let acts: Vec<_> = back.model.layers().iter().map(|l| l.as_dense().unwrap().activation).collect();
        assert_eq!(acts, [Activation::ELU, Activation::Selu, Activation::Softmax]);
    }
    assert_ne!(to_bytes(&scaled()), to_bytes(&standardised()));
}

#[test]
fn hand_written_file_parses() {
    // The layout as specified, built independently of `to_bytes`.
    let saved = from_bytes(&file_with(1, &minimal_payload().0)).unwrap();
    assert_eq!(saved.preprocess, Preprocess::Scale(0.5));
    assert_eq!(saved.model.input_dim(), 3);
    assert_eq!(saved.model.output_dim(), 2);
    assert_eq!(saved.model.params, [0.25, 0.25, 0.25, 0.25, 0.25, 0.25, -1.0, -1.0]);
}

#[test]
fn every_truncation_is_an_error() {
    for saved in [scaled(), standardised()] {
        let bytes = to_bytes(&saved);
        for len in 0..bytes.len() {
            let text = err_text(&bytes[..len], &format!("the first {len} bytes"));
            assert!(
                text.contains("truncated") || text.contains("too short"),
                "the first {len} bytes: uninformative error `{text}`"
            );
        }
        // Extended by a byte is as wrong as truncated.
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(parse(&longer, "one extra byte").is_err());
    }
}

#[test]
fn every_single_byte_flip_is_an_error() {
    let bytes = to_bytes(&standardised());
    let n = bytes.len();
    for i in 0..n {
        let mut bad = bytes.clone();
        bad[i] ^= 0xFF;
        let text = err_text(&bad, &format!("byte {i} flipped"));
        let expected = match i {
            0..8 => "magic",
            8..12 => "version",
            12..16 => "flags",
            16..24 => "truncated",
            _ => "checksum",
        };
        assert!(text.contains(expected), "byte {i} flipped: expected an error about {expected}, got `{text}`");
    }
}

#[test]
fn random_bit_flips_are_caught() {
    let bytes = to_bytes(&standardised());
    let n = bytes.len();
    let mut rng = seeded(2024, 1);
    let (mut rejected, mut accepted) = (0, 0);
    for trial in 0..3000 {
        let mut bad = bytes.clone();
        let flips = 1 + below(&mut rng, 3) as usize;
        let mut touched = Vec::new();
        for _ in 0..flips {
            let bit = below(&mut rng, n as u64 * 8) as usize;
            bad[bit / 8] ^= 1 << (bit % 8);
            touched.push(bit / 8);
        }
        if bad == bytes {
            continue; // the same bit flipped twice
        }
        let what = format!("trial {trial}: bytes {touched:?} changed");
        match parse(&bad, &what) {
            Ok(_) => {
                // Only a corruption the checksum cannot see may pass.
                assert_eq!(stored_crc(&bad), crc32fast::hash(&bad[..n - 4]), "{what}: accepted a bad checksum");
                accepted += 1;
            }
            Err(e) => {
                rejected += 1;
                // Corruption confined to the payload (or the checksum itself) is the
                // checksum's to catch: nothing else can tell.
                if touched.iter().all(|&b| b >= HEADER) {
                    assert!(e.to_string().contains("checksum"), "{what}: `{e}`");
                }
            }
        }
    }
    assert!(rejected > 2500, "{rejected} rejected, {accepted} accepted");
    // CRC-32 has Hamming distance 4 up to 91,607 bits: every error of 1 to 3 bits is caught.
    assert_eq!(accepted, 0, "{accepted} corrupted files accepted");
}

#[test]
fn payload_corruption_with_a_fixed_checksum_is_still_validated() {
    // An attacker (or a buggy writer) can recompute the CRC: structure checks must still hold.
    let good = to_bytes(&scaled());
    let mut rng = seeded(9, 9);
    for trial in 0..2000 {
        let mut bad = good.clone();
        let i = HEADER + below(&mut rng, (good.len() - HEADER - 4) as u64) as usize;
        bad[i] = below(&mut rng, 256) as u8;
        reseal(&mut bad);
        // Ok (a weight changed) or Err (a size or code changed); never a panic.
        let _ = parse(&bad, &format!("trial {trial}: byte {i} set to {} and resealed", bad[i]));
    }
}

#[test]
fn unknown_versions_are_rejected_by_name() {
    let mut bytes = to_bytes(&scaled());
    for version in [VERSION + 1, 0, u32::MAX] {
        bytes[8..12].copy_from_slice(&version.to_le_bytes());
        reseal(&mut bytes);
        let text = err_text(&bytes, &format!("version {version}"));
        assert!(text.contains("version") && text.contains(&version.to_string()), "version {version}: `{text}`");
    }
    let newer = VERSION + 1;
    let text = err_text(&file_with(newer, &minimal_payload().0), "hand-written newer version");
    assert!(text.contains(&format!("version {newer}")), "`{text}`");
}

#[test]
fn structural_errors_are_rejected() {
    let cases: Vec<(&str, Payload, &str)> = vec![
        ("input size 0", Payload::default().u32(0), "input size"),
        ("unknown preprocessing", Payload::default().u32(3).u8(9).f32(1.0).u32(1).layer(3, 2, 7, 0.0), "preprocessing"),
        ("layer count 0", Payload::default().u32(3).u8(0).f32(1.0).u32(0), "layer count"),
        (
            "unknown layer kind",
            Payload::default().u32(3).u8(0).f32(1.0).u32(1).u8(9).u32(3).u32(2).u8(7).f32(0.0).u8(0).f32s(8, 0.0),
            "layer kind",
        ),
        (
            "wrong input size",
            Payload::default().u32(3).u8(0).f32(1.0).u32(1).layer(4, 2, 7, 0.0).f32s(10, 0.0),
            "inputs",
        ),
        (
            "unknown activation",
            Payload::default().u32(3).u8(0).f32(1.0).u32(1).layer(3, 2, 99, 0.0).f32s(8, 0.0),
            "activation",
        ),
        (
            "ELU with NaN alpha",
            Payload::default()
                .u32(3)
                .u8(0)
                .f32(1.0)
                .u32(2)
                .layer(3, 2, 3, f32::NAN)
                .f32s(8, 0.0)
                .layer(2, 2, 7, 0.0)
                .f32s(6, 0.0),
            "activation",
        ),
        (
            "unknown tensor type",
            Payload::default().u32(3).u8(0).f32(1.0).u32(1).u8(1).u32(3).u32(2).u8(7).f32(0.0).u8(5).f32s(8, 0.0),
            "tensor type",
        ),
        ("trailing bytes", minimal_payload().u8(0), "unexpected bytes"),
        (
            "output not softmax",
            Payload::default().u32(3).u8(0).f32(1.0).u32(1).layer(3, 2, 1, 0.0).f32s(8, 0.0),
            "softmax",
        ),
        (
            "softmax on a hidden layer",
            Payload::default()
                .u32(3)
                .u8(0)
                .f32(1.0)
                .u32(2)
                .layer(3, 2, 7, 0.0)
                .f32s(8, 0.0)
                .layer(2, 2, 7, 0.0)
                .f32s(6, 0.0),
            "softmax",
        ),
        ("missing bias", Payload::default().u32(3).u8(0).f32(1.0).u32(1).layer(3, 2, 7, 0.0).f32s(7, 0.0), "truncated"),
    ];
    for (what, payload, expected) in cases {
        let text = err_text(&file_with(1, &payload.0), what);
        assert!(text.contains(expected), "{what}: expected an error about {expected}, got `{text}`");
        assert!(text.starts_with("bad model file"), "{what}: `{text}`");
    }
}

#[test]
fn hostile_sizes_fail_without_huge_allocations() {
    let big = 1u32 << 31;
    let cases: Vec<(&str, Payload)> = vec![
        (
            "a 2^31 x 2^31 layer",
            Payload::default().u32(big).u8(0).f32(1.0).u32(1).layer(big, big, 7, 0.0).f32s(16, 1.0),
        ),
        (
            "a 65536 x 65536 layer",
            Payload::default().u32(65_536).u8(0).f32(1.0).u32(1).layer(65_536, 65_536, 7, 0.0).f32s(16, 1.0),
        ),
        ("u32::MAX layers", Payload::default().u32(3).u8(0).f32(1.0).u32(u32::MAX).layer(3, 2, 7, 0.0).f32s(8, 0.0)),
        ("2^31 layers", Payload::default().u32(3).u8(0).f32(1.0).u32(big).f32s(64, 0.0)),
        ("standardisation over 2^31 features", Payload::default().u32(big).u8(1).f32s(16, 1.0)),
        ("u32::MAX inputs", Payload::default().u32(u32::MAX).u8(1).f32s(16, 1.0)),
        (
            "a second layer of u32::MAX units",
            Payload::default().u32(3).u8(0).f32(1.0).u32(2).layer(3, 2, 0, 0.0).f32s(8, 0.0).layer(2, u32::MAX, 7, 0.0),
        ),
    ];
    for (what, payload) in cases {
        let bytes = file_with(1, &payload.0);
        LARGEST.store(0, Ordering::Relaxed);
        let text = err_text(&bytes, what);
        let largest = LARGEST.load(Ordering::Relaxed);
        assert!(largest > 0, "the counting allocator is not installed");
        assert!(largest < ALLOCATION_LIMIT, "{what}: an allocation of {largest} bytes");
        assert!(text.starts_with("bad model file"), "{what}: `{text}`");
    }
    // The payload-length field itself is checked against the file before anything is read.
    let mut bytes = to_bytes(&scaled());
    bytes[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    reseal(&mut bytes);
    let text = err_text(&bytes, "payload length u64::MAX");
    assert!(text.contains("truncated"), "`{text}`");
}

#[test]
fn error_texts_are_informative() {
    let bytes = to_bytes(&scaled());
    let short = err_text(&bytes[..10], "10 bytes");
    assert!(short.contains("too short") && short.contains("10 bytes"), "`{short}`");
    let cut = err_text(&bytes[..bytes.len() - 1], "one byte short");
    assert!(cut.contains("truncated"), "`{cut}`");
    let mut bad = bytes.clone();
    bad[HEADER + 2] ^= 1;
    let crc = err_text(&bad, "a flipped bit");
    assert!(crc.contains("checksum") && crc.contains("corrupted"), "`{crc}`");
    let mut text_mode = bytes.clone();
    text_mode.remove(4); // a CR LF -> LF conversion eats the CR
    assert!(err_text(&text_mode, "a text-mode transfer").contains("magic"));
    let empty = err_text(&[], "an empty file");
    assert!(empty.contains("too short"), "`{empty}`");
}

#[test]
fn save_and_load_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    for (i, saved) in [scaled(), standardised()].into_iter().enumerate() {
        let path = dir.path().join(format!("model-{i}.simdnn"));
        save_model(&path, &saved.model, &saved.preprocess).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), to_bytes(&saved));
        assert_eq!(load_model(&path).unwrap(), saved);
        // Overwriting is atomic and leaves no temporaries behind.
        save_model(&path, &saved.model, &saved.preprocess).unwrap();
    }
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // A missing file names its path.
    let missing = dir.path().join("no-such-model.simdnn");
    let text = load_model(&missing).unwrap_err().to_string();
    assert!(text.contains(&missing.display().to_string()), "`{text}`");

    // A damaged file names its path and the damage.
    let path = dir.path().join("model-0.simdnn");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let text = load_model(&path).unwrap_err().to_string();
    assert!(text.contains(&path.display().to_string()) && text.contains("truncated"), "`{text}`");
    std::fs::write(&path, b"").unwrap();
    let text = load_model(&path).unwrap_err().to_string();
    assert!(text.contains(&path.display().to_string()), "`{text}`");
    // A directory is not a model.
    let text = load_model(dir.path()).unwrap_err().to_string();
    assert!(text.contains(&dir.path().display().to_string()), "`{text}`");
}

#[test]
fn int8_files_round_trip_and_their_weight_sums_and_padding_are_checked() {
    use simdnn::format::{WeightType, from_bytes_typed, to_bytes_as};
    use simdnn::infer::Model;
    let saved = scaled();
    for (weights, version) in [(WeightType::Int8Weights, 3u32), (WeightType::Int8, 4)] {
        let bytes = to_bytes_as(&saved, weights);
        assert_eq!(bytes[8..12], version.to_le_bytes(), "{weights:?} is written as version {version}");
        let (back, stored) = from_bytes_typed(&bytes).unwrap();
        assert_eq!(stored, weights);
        for (q, w) in back.model.params.iter().zip(&saved.model.params) {
            assert!((q - w).abs() <= w.abs() / 100.0 + 0.01, "{weights:?}: {q} for {w}");
        }
        assert!(Model::from_bytes(&bytes).is_ok());
    }
    // Layer 0 (12 -> 7, int8 with u8 inputs): after its 22 header bytes, 7 scales, the input
    // scale and zero point, then 7 weight sums and 3 groups x 7 outputs x 4 weights.
    let good = to_bytes_as(&saved, WeightType::Int8);
    let sums = HEADER + 13 + 15 + 7 * 4 + 5;
    let weights = sums + 7 * 4;
    let mut bad_sum = good.clone();
    bad_sum[sums] ^= 1;
    reseal(&mut bad_sum);
    assert!(err_text(&bad_sum, "a wrong weight sum").contains("sum of output 0"));
    assert!(Model::from_bytes(&bad_sum).is_err());
    // A weight changed together with its output's sum: consistent, so accepted.
    let mut both = good.clone();
    both[weights] = both[weights].wrapping_add(1);
    both[sums] = both[sums].wrapping_add(1);
    reseal(&mut both);
    assert!(parse(&both, "a weight and its sum").is_ok() && Model::from_bytes(&both).is_ok());
    // A 13-input layer has three unused weights per output in its last group: they must be 0.
    let softmax = LayerSpec::Dense { units: 2, activation: Activation::Softmax, init: Initializer::HeNormal };
    let wide_input = Sequential::new(13, &[softmax], 1).unwrap();
    let padded = to_bytes_as(&SavedModel { model: wide_input, preprocess: Preprocess::Scale(1.0) }, WeightType::Int8);
    let first_weights = HEADER + 13 + 15 + 2 * 4 + 5 + 2 * 4;
    let padding = first_weights + (3 * 2) * 4 + 1; // group 3, output 0, lane 1
    let mut bad_padding = padded.clone();
    bad_padding[padding] = 1;
    reseal(&mut bad_padding);
    assert!(err_text(&bad_padding, "non-zero padding").contains("padding"));
    assert!(Model::from_bytes(&bad_padding).is_err());
}
