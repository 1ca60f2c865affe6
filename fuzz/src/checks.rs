//! What each fuzz target checks, as one function per target taking the raw input bytes.
//!
//! Shared by the fuzz targets (`fuzz/fuzz_targets/<target>.rs`, through the `simdnn_fuzz`
//! library) and by the stable regression test `tests/fuzz_regressions.rs` (which includes this
//! file with `#[path]`), so a committed input is replayed through exactly the checks the
//! fuzzer ran. A check fails by panicking. This file may use only `std` and `simdnn` (the test
//! crate has no other dependencies): inputs are decoded from the bytes here, without
//! `arbitrary`.

use simdnn::data::cifar::{CLASSES, IMAGE_BYTES, Preprocess, RECORD_BYTES};
use simdnn::data::{Split, standardise_from};
use simdnn::format::{
    InputQuant, SavedModel, WeightType, from_bytes, from_bytes_typed, to_bytes, to_bytes_as, to_bytes_int8,
};
use simdnn::infer;
use simdnn::kernels::bf16::{Bf16Kernel, gemv_bf16_with, round_to_bf16};
use simdnn::kernels::gemm::{Blocking, Epilogue, MR, MatMut, MatRef, NR, Packing, gemm_with};
use simdnn::kernels::gemm_bf16::{Bf16Ref, gemm_bf16_with};
use simdnn::kernels::int8::{
    Int8Kernel, U8Quant, gemv_u8_i8, gemv_u8_i8_with, min_max, pack_groups_of_4, packed_column_sum, packed_len,
    packed_padding_is_zero, quantize_u8, unpack_groups_of_4,
};
use simdnn::kernels::quant::{bf16_from_f32, f32_from_bf16};
use simdnn::kernels::softmax::{softmax_cross_entropy, softmax_rows};
use simdnn::kernels::{Activation, reference};
use simdnn::nn::{Initializer, Layer, LayerSpec, Sequential, Workspace};
use simdnn::optim::schedule::ScheduleSpec;
use simdnn::rng::{Xoshiro, below, normal, seeded, uniform_f32};

/// A target's check: panics when the input exposes a bug.
pub type Check = fn(&[u8]);

/// Every fuzz target (its name under `fuzz/fuzz_targets/`, `fuzz/corpus/` and
/// `fuzz/regressions/`) and its check.
pub const TARGETS: [(&str, Check); 8] = [
    ("gemm", check_gemm),
    ("activations", check_activations),
    ("model_file", check_model_file),
    ("cifar_records", check_cifar_records),
    ("schedule_spec", check_schedule_spec),
    ("softmax_xent", check_softmax_xent),
    ("int8_gemv", check_int8_gemv),
    ("infer_dense", check_infer_dense),
];

/// An input's raw bytes, printed as hex so a failure message carries its reproducer:
/// `echo HEX | xxd -r -p > repro`, then `cargo +nightly fuzz run TARGET repro` (or put the file
/// under `fuzz/regressions/TARGET/` for the stable replay).
pub struct Hex(pub Vec<u8>);

impl core::fmt::Debug for Hex {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("\"")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        write!(f, "\" ({} bytes)", self.0.len())
    }
}

/// `data` padded with zeros to `N` bytes (a short input reads as if it went on with zeros).
fn header<const N: usize>(data: &[u8]) -> [u8; N] {
    let mut b = [0u8; N];
    let used = data.len().min(N);
    b[..used].copy_from_slice(&data[..used]);
    b
}

// ---------------------------------------------------------------------------------------------
// gemm

/// The `gemm` target's input: 19 single bytes in this order, then the seed as a little-endian
/// u64. A bool is its byte's lowest bit; a short input reads as if padded with zeros. (This is
/// byte for byte how `#[derive(arbitrary::Arbitrary)]` decoded the same struct, which the
/// target used before, so the corpus collected then keeps its meaning.)
#[derive(Debug)]
pub struct GemmInput {
    /// Shapes: each taken mod 71 (0..=70).
    pub m: u8,
    pub k: u8,
    pub n: u8,
    /// A stored `k x m` and read through `.t()`; likewise B stored `n x k`.
    pub transpose_a: bool,
    pub transpose_b: bool,
    /// Extra floats at the end of each stored row (mod 4), filled with NaN.
    pub pad_a: u8,
    pub pad_b: u8,
    pub pad_c: u8,
    /// Indices into `SCALARS`.
    pub alpha: u8,
    pub beta: u8,
    /// Index into `ACTIVATIONS`.
    pub activation: u8,
    pub bias: bool,
    /// mc = MR * (1 + mc % 4), kc = 1 + kc % 40, nc = NR * (1 + nc % 3).
    pub mc: u8,
    pub kc: u8,
    pub nc: u8,
    /// Indices into `PACKINGS`.
    pub pack_a: u8,
    pub pack_b: u8,
    /// Let the driver split C across rayon's threads (`parallel_min_flops = 0`).
    pub parallel: bool,
    /// Magnitude of the entries: `MAGNITUDES[magnitude % 4]` times a standard normal.
    pub magnitude: u8,
    pub seed: u64,
}

/// Bytes [`GemmInput::decode`] reads; the rest of an input is ignored.
pub const GEMM_INPUT_BYTES: usize = 19 + 8;

impl GemmInput {
    pub fn decode(data: &[u8]) -> GemmInput {
        let mut b = [0u8; GEMM_INPUT_BYTES];
        let used = data.len().min(GEMM_INPUT_BYTES);
        b[..used].copy_from_slice(&data[..used]);
        let bit = |i: usize| b[i] & 1 == 1;
        GemmInput {
            m: b[0],
            k: b[1],
            n: b[2],
            transpose_a: bit(3),
            transpose_b: bit(4),
            pad_a: b[5],
            pad_b: b[6],
            pad_c: b[7],
            alpha: b[8],
            beta: b[9],
            activation: b[10],
            bias: bit(11),
            mc: b[12],
            kc: b[13],
            nc: b[14],
            pack_a: b[15],
            pack_b: b[16],
            parallel: bit(17),
            magnitude: b[18],
            seed: u64::from_le_bytes([b[19], b[20], b[21], b[22], b[23], b[24], b[25], b[26]]),
        }
    }
}

const SCALARS: [f32; 4] = [0.0, 1.0, 0.5, -2.0];
const MAGNITUDES: [f32; 4] = [1.0, 0.01, 8.0, 100.0];
const PACKINGS: [Packing; 3] = [Packing::Auto, Packing::Always, Packing::Never];
const ACTIVATIONS: [Activation; 9] = [
    Activation::Identity,
    Activation::Relu,
    Activation::LeakyRelu { alpha: 0.2 },
    Activation::ELU,
    Activation::Elu { alpha: 0.5 },
    Activation::Selu,
    Activation::Tanh,
    Activation::Logistic,
    // Row-wise: passes through the GEMM epilogue unchanged.
    Activation::Softmax,
];

/// A bound on |f(x) - f(y)| / |x - y| (the slope of SELU's negative branch is at most
/// scale * alpha = 1.76; ELU's is at most its alpha).
fn lipschitz(act: Activation) -> f64 {
    match act {
        Activation::Selu => 1.76,
        Activation::Elu { alpha } | Activation::LeakyRelu { alpha } => (alpha as f64).max(1.0),
        _ => 1.0,
    }
}

/// `gemm_with` against the scalar twin `reference::gemm` over small shapes, transposes, row
/// padding, alpha/beta, bias, every activation, tiny block sizes and packing modes, and
/// `gemm_bf16_with` (each kernel this CPU runs, with f32 operands and with operands already
/// rounded) against `reference::gemm_bf16` on the same operands (the input is a [`GemmInput`]).
///
/// Row padding of A, B and C is filled with NaN: a kernel that reads outside its views poisons
/// the result, and one that writes outside C's view changes the padding.
pub fn check_gemm(data: &[u8]) {
    let input = GemmInput::decode(data);
    let (m, k, n) = (input.m as usize % 71, input.k as usize % 71, input.n as usize % 71);
    let (pad_a, pad_b, pad_c) = (input.pad_a as usize % 4, input.pad_b as usize % 4, input.pad_c as usize % 4);
    let alpha = SCALARS[input.alpha as usize % SCALARS.len()];
    let beta = SCALARS[input.beta as usize % SCALARS.len()];
    let act = ACTIVATIONS[input.activation as usize % ACTIVATIONS.len()];
    let magnitude = MAGNITUDES[input.magnitude as usize % MAGNITUDES.len()];
    let blocking = Blocking {
        mc: MR * (1 + input.mc as usize % 4),
        kc: 1 + input.kc as usize % 40,
        nc: NR * (1 + input.nc as usize % 3),
        pack_a: PACKINGS[input.pack_a as usize % 3],
        pack_b: PACKINGS[input.pack_b as usize % 3],
        parallel_min_flops: if input.parallel { 0 } else { usize::MAX },
    };

    let mut rng = seeded(input.seed, 0);
    // `rows x cols` stored with `pad` NaNs after each row.
    let fill = |rows: usize, cols: usize, pad: usize, rng: &mut Xoshiro| -> Vec<f32> {
        let mut v = vec![f32::NAN; rows * (cols + pad)];
        for r in 0..rows {
            for x in &mut v[r * (cols + pad)..r * (cols + pad) + cols] {
                *x = magnitude * normal(rng) as f32;
            }
        }
        v
    };
    let a_data = if input.transpose_a { fill(k, m, pad_a, &mut rng) } else { fill(m, k, pad_a, &mut rng) };
    let b_data = if input.transpose_b { fill(n, k, pad_b, &mut rng) } else { fill(k, n, pad_b, &mut rng) };
    let a = if input.transpose_a {
        MatRef::strided(&a_data, k, m, m + pad_a, 1).t()
    } else {
        MatRef::strided(&a_data, m, k, k + pad_a, 1)
    };
    let b = if input.transpose_b {
        MatRef::strided(&b_data, n, k, k + pad_b, 1).t()
    } else {
        MatRef::strided(&b_data, k, n, n + pad_b, 1)
    };
    let bias_data: Vec<f32> = (0..n).map(|_| magnitude * normal(&mut rng) as f32).collect();
    let bias = input.bias.then_some(&bias_data[..]);
    let ldc = n + pad_c;
    // beta == 0: C is write-only, so its NaNs must not reach the result.
    let mut c0 = fill(m, n, pad_c, &mut rng);
    if beta == 0.0 {
        c0.fill(f32::NAN);
    }

    let eps = f32::EPSILON as f64;
    let compare = |kernel: &str, expected: &[f32], got: &[f32]| {
        for i in 0..m {
            // The padding after each row of C is not C's: it must be left alone.
            for j in n..ldc {
                assert!(
                    got[i * ldc + j].to_bits() == c0[i * ldc + j].to_bits(),
                    "{kernel}: C's padding at ({i}, {j}) was overwritten: {}",
                    got[i * ldc + j]
                );
            }
            for j in 0..n {
                let abs: f64 = (0..k).map(|p| (a.at(i, p) as f64 * b.at(p, j) as f64).abs()).sum();
                let c_term = if beta == 0.0 { 0.0 } else { (beta as f64 * c0[i * ldc + j] as f64).abs() };
                let bias_term = bias.map_or(0.0, |b| b[j].abs() as f64);
                let scale = alpha.abs() as f64 * abs + c_term + bias_term + 1.0;
                let (e, g) = (expected[i * ldc + j], got[i * ldc + j]);
                // The product's rounding, carried through the activation, plus the activation's
                // own error (4 ULP or 1e-7, as tests/kernels.rs allows).
                let tol = lipschitz(act) * 4.0 * (k as f64 + 2.0) * eps * scale + 4.0 * eps * (e as f64).abs() + 1e-7;
                assert!(
                    (e as f64 - g as f64).abs() <= tol,
                    "{kernel}: C[{i},{j}] = {g}, reference {e} (|err| {} > tol {tol}); m={m} k={k} n={n} \
                     alpha={alpha} beta={beta} {act} bias={} {blocking:?}",
                    (e as f64 - g as f64).abs(),
                    input.bias
                );
            }
        }
    };
    let epi = Epilogue { bias, activation: act };
    let mut expected = c0.clone();
    reference::gemm(alpha, a, b, beta, &mut MatMut::strided(&mut expected, m, n, ldc), bias, act);
    let mut got = c0.clone();
    gemm_with(&blocking, alpha, a, b, beta, MatMut::strided(&mut got, m, n, ldc), epi);
    compare("f32", &expected, &got);

    // The bf16 GEMM against its own twin: the same sums in the same order, so they differ only
    // by the activation's error (and subnormals, which the entries' magnitudes never make).
    let mut expected = c0.clone();
    reference::gemm_bf16(alpha, a, b, beta, &mut MatMut::strided(&mut expected, m, n, ldc), bias, act);
    for kernel in [Bf16Kernel::Portable, Bf16Kernel::Avx512Bf16].into_iter().filter(|k| k.available()) {
        let mut got = c0.clone();
        gemm_bf16_with(kernel, alpha, a, b, beta, MatMut::strided(&mut got, m, n, ldc), epi);
        compare(&format!("bf16 {kernel:?}"), &expected, &got);
    }
    // And with A and B given already rounded (row-major), as a bf16 trainer passes its weights:
    // other packing paths, shared by the kernels, so one kernel checks them.
    let rounded = |x: MatRef<'_>| -> Vec<u16> {
        (0..x.rows() * x.cols()).map(|e| bf16_from_f32(x.at(e / x.cols(), e % x.cols()))).collect()
    };
    let (a16, b16) = (rounded(a), rounded(b));
    let mut got = c0.clone();
    let (a16, b16) = (Bf16Ref::new(&a16, m, k), Bf16Ref::new(&b16, k, n));
    gemm_bf16_with(Bf16Kernel::detect(), alpha, a16, b16, beta, MatMut::strided(&mut got, m, n, ldc), epi);
    compare("bf16, operands rounded", &expected, &got);
}

// ---------------------------------------------------------------------------------------------
// activations

/// ULP distance between two floats (as in tests/kernels.rs).
fn ulps(a: f32, b: f32) -> u32 {
    let key = |x: f32| {
        let i = x.to_bits() as i32;
        if i < 0 { i32::MIN.wrapping_sub(i) } else { i }
    };
    (key(a) as i64 - key(b) as i64).unsigned_abs().min(u32::MAX as u64) as u32
}

fn check_backward(act: Activation, ys: &[f32], dys: &[f32]) {
    let mut got = dys.to_vec();
    act.backward(ys, &mut got);
    for ((&y, &dy), &g) in ys.iter().zip(dys).zip(&got) {
        let twin = dy * reference::activation_derivative_from_output(act, y);
        if y.is_finite() && dy.is_finite() && twin.is_finite() {
            assert!(
                (g - twin).abs() <= 1e-6 * twin.abs().max(1.0),
                "{act} backward: y = {y:e}, dy = {dy:e}: {g:e}, twin {twin:e}"
            );
        }
    }
}

/// Every activation's SIMD `forward` and `backward` against the scalar twins, over arbitrary
/// f32 slices (any length, so the vector tail is exercised; NaN, infinities, subnormals).
///
/// Input: byte 0 picks the activation, byte 1 the alpha of leaky ReLU / ELU, and the rest is
/// read as little-endian `(x, dy)` f32 pairs (a missing last `dy` is 1).
///
/// Nothing may panic. Where the input and the twin's result are finite, the kernels must agree
/// with the twins within the bounds of `tests/kernels.rs`: forward within 4 ULP or 1e-7
/// absolute, backward (`dy * f'(y)`) within 1e-6 relative to max(|twin|, 1).
pub fn check_activations(data: &[u8]) {
    let [which, alpha, rest @ ..] = data else { return };
    // Positive, finite alphas in (0, 4], as `Activation::parse` and the model file accept.
    let alpha = (*alpha as f32 + 1.0) / 64.0;
    let act = match which % 8 {
        0 => Activation::Identity,
        1 => Activation::Relu,
        2 => Activation::LeakyRelu { alpha },
        3 => Activation::Elu { alpha },
        4 => Activation::Selu,
        5 => Activation::Tanh,
        6 => Activation::Logistic,
        _ => Activation::Softmax,
    };
    let floats: Vec<f32> = rest.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let xs: Vec<f32> = floats.iter().step_by(2).copied().collect();
    let dys: Vec<f32> =
        floats.iter().skip(1).step_by(2).copied().chain(core::iter::repeat(1.0)).take(xs.len()).collect();

    let mut ys = xs.clone();
    act.forward(&mut ys);
    for (&x, &y) in xs.iter().zip(&ys) {
        let r = reference::activation(act, x);
        if x.is_finite() && r.is_finite() {
            let u = ulps(y, r);
            assert!(u <= 4 || (y - r).abs() <= 1e-7, "{act}({x:e}) = {y:e}, reference {r:e} ({u} ulp)");
        }
    }
    // Derivatives at the outputs the forward pass produced, and at arbitrary "outputs".
    check_backward(act, &ys, &dys);
    check_backward(act, &xs, &dys);
}

// ---------------------------------------------------------------------------------------------
// model_file

/// 8 magic bytes, version, flags, payload length.
const HEADER_BYTES: usize = 24;

/// The image `exercise_model` predicts: `len` bytes of a fixed pattern.
fn test_image(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 37 % 256) as u8).collect()
}

fn exercise_model(bytes: &[u8]) {
    exercise_in_place(bytes);
    let Ok(saved) = from_bytes(bytes) else { return };
    let encoded = to_bytes(&saved);
    let again = from_bytes(&encoded).unwrap_or_else(|e| panic!("a re-encoded model does not parse: {e}"));
    assert!(to_bytes(&again) == encoded, "re-encoding a parsed model is not a fixed point");
    // Narrower weight types: the files parse, to a model of the same shape.
    for weights in [WeightType::Bf16, WeightType::Int8] {
        let narrow = to_bytes_as(&saved, weights);
        let (back, stored) = from_bytes_typed(&narrow)
            .unwrap_or_else(|e| panic!("a model re-encoded as {weights:?} does not parse: {e}"));
        assert_eq!(stored, weights, "a model re-encoded as {weights:?} reads back as {stored:?}");
        assert_eq!(back.model.layers().len(), saved.model.layers().len(), "re-encoded as {weights:?}");
        assert_eq!(back.model.num_params(), saved.model.num_params(), "re-encoded as {weights:?}");
        exercise_in_place(&narrow);
    }

    let model = &saved.model;
    let pixels = test_image(model.input_dim());
    let mut x = vec![0f32; model.input_dim()];
    saved.preprocess.apply(&pixels, &mut x);
    let mut ws = Workspace::new(model, 1);
    let probs = model.predict(&x, 1, &mut ws);
    assert_eq!(probs.len(), model.output_dim());
}

/// The allocation-free inference path (`simdnn::infer`) on the same bytes: loading returns,
/// and a model it loads predicts (plain and MC dropout) into scratch of `scratch_len()` floats
/// without error or panic.
fn exercise_in_place(bytes: &[u8]) {
    let Ok(model) = infer::Model::from_bytes(bytes) else { return };
    let image = test_image(model.input_len());
    let mut scratch = vec![f32::NAN; model.scratch_len()];
    let classes = model.classes();
    let probs = model.predict(&image, &mut scratch).unwrap_or_else(|e| panic!("in-place predict: {e}"));
    assert_eq!(probs.len(), classes, "in-place predict");
    let (mean, std) = model.predict_mc(&image, 3, 7, &mut scratch).unwrap_or_else(|e| panic!("in-place MC: {e}"));
    assert_eq!((mean.len(), std.len()), (classes, classes), "in-place MC dropout");
}

/// `simdnn::format::from_bytes` on arbitrary bytes must return (`Ok` or `Err`), never panic or
/// allocate beyond the input's size.
///
/// A mutated file almost always fails the CRC check, which would keep the fuzzer out of the
/// payload parser, so each input is parsed twice: as given, and with its header's payload
/// length and trailing CRC-32 rewritten to match (the same bytes otherwise).
///
/// A model that parses must also survive being used: re-encoding is a fixed point
/// (`to_bytes(from_bytes(to_bytes(m))) == to_bytes(m)`), re-encoding with bf16 and int8 weights
/// gives files that parse to a model of the same shape, and one input row runs through the
/// preprocessing and `predict` without panicking. The in-place inference parser
/// (`simdnn::infer::Model::from_bytes`) gets the same bytes (and the bf16 and int8 files); a
/// model it accepts must predict, plainly and with MC dropout, without error or panic.
pub fn check_model_file(data: &[u8]) {
    exercise_model(data);
    if data.len() >= HEADER_BYTES + 4 {
        let mut fixed = data.to_vec();
        let payload = (fixed.len() - HEADER_BYTES - 4) as u64;
        fixed[16..24].copy_from_slice(&payload.to_le_bytes());
        let body = fixed.len() - 4;
        let crc = crc32(&fixed[..body]);
        fixed[body..].copy_from_slice(&crc.to_le_bytes());
        exercise_model(&fixed);
    }
}

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

// ---------------------------------------------------------------------------------------------
// cifar_records

/// `Split::from_records` over arbitrary bytes cut into 3073-byte CIFAR-10 records, then
/// `fill_batch` and `fill_features` on a few of them. Never panics.
///
/// Input: 4 control bytes (byte 0 picks the preprocessing, bytes 1..4 the batch's record
/// indices, taken mod the record count), then the records; a short last chunk is passed on as a
/// (malformed) record of its own. Fuzz with `-max_len=16384` or more: a valid record needs 3077
/// bytes.
///
/// Checked: `from_records` accepts exactly the lists whose records are all 3073 bytes with a
/// label below 10; `fill_batch` copies the labels and converts each pixel as the scalar formula
/// does (within a few roundings); `fill_features` over a range of features (from control bytes
/// 1 and 2) gives exactly those columns of the batch, as a data-parallel trainer's thread
/// converts them.
pub fn check_cifar_records(data: &[u8]) {
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

    let start = usize::from(control[1]) * IMAGE_BYTES / 256;
    let features = start..(start + usize::from(control[2]) * 13).min(IMAGE_BYTES);
    let width = features.len();
    let mut part = vec![f32::NAN; indices.len() * width];
    split.fill_features(&indices, &preprocess, &mut part, features.clone());
    for (r, row) in x.chunks_exact(IMAGE_BYTES).enumerate() {
        let got = &part[r * width..][..width];
        let same = got.iter().zip(&row[features.clone()]).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "row {r}: features {features:?} differ from those columns of fill_batch");
    }
}

// ---------------------------------------------------------------------------------------------
// schedule_spec

/// `ScheduleSpec::parse` on the input as text (UTF-8, invalid sequences replaced by U+FFFD)
/// never panics. When it accepts the text:
///
/// - `Display` round-trips: the spec's `to_string()` parses back to an equal spec, and writes
///   the same string again;
/// - `resolve(1e-3, epochs, steps_per_epoch)` returns (`Ok` or `Err`) for edge-case run lengths
///   (0, 1, huge, overflowing) and two taken from the input; for an ordinary run (1..=64
///   epochs of 1..=1000 steps, which every spec's ranges fit) it must be `Ok`;
/// - the resolved schedule's rate at steps 0, 1, the middle, the end and past the end is finite
///   and not negative, its momentum (1cycle with momentum) within [0.85, 0.95], and a plateau
///   controller fed losses taken from the input (and NaN) keeps the rate finite and not
///   negative.
pub fn check_schedule_spec(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(spec) = ScheduleSpec::parse(&text) else { return };
    let written = spec.to_string();
    let again = ScheduleSpec::parse(&written)
        .unwrap_or_else(|e| panic!("{text:?} parses to {spec:?}, written {written:?}, which does not parse: {e}"));
    assert!(again == spec, "{text:?} parses to {spec:?}, written {written:?}, which parses to {again:?}");
    assert_eq!(again.to_string(), written, "writing {spec:?} is not a fixed point");

    // Two ordinary run lengths from the input (FNV-1a of the bytes).
    let hash = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3));
    let ordinary = [(1 + hash % 64, 1 + (hash >> 8) % 1000), (1 + (hash >> 20) % 64, 1 + (hash >> 28) % 1000)];
    let edges = [(0, 0), (0, 1), (1, 0), (1, 1), (2, 1), (1, 3), (u64::MAX, 1), (1, u64::MAX), (u64::MAX, u64::MAX)];
    let base_lr = 1e-3;
    for (epochs, steps_per_epoch) in edges.into_iter().chain(ordinary) {
        let resolved = spec.resolve(base_lr, epochs, steps_per_epoch);
        let (schedule, plateau) = match resolved {
            Ok(r) => r,
            Err(e) => {
                assert!(
                    !ordinary.contains(&(epochs, steps_per_epoch)),
                    "{spec:?} does not resolve for {epochs} epochs of {steps_per_epoch} steps: {e}"
                );
                continue;
            }
        };
        let total = epochs.saturating_mul(steps_per_epoch);
        for step in [0, 1, total / 2, total.saturating_sub(1), total, total.saturating_add(1), u64::MAX] {
            let lr = schedule.lr(base_lr, step);
            assert!(
                lr.is_finite() && lr >= 0.0,
                "{spec:?} over {epochs} epochs of {steps_per_epoch} steps: rate {lr} at step {step}"
            );
            if let Some(momentum) = schedule.momentum(step) {
                assert!(
                    (0.85..=0.95).contains(&momentum),
                    "{spec:?} over {epochs} epochs of {steps_per_epoch} steps: momentum {momentum} at step {step}"
                );
            }
        }
        if let Some(mut plateau) = plateau {
            let mut lr = base_lr;
            let losses = [f64::NAN, f64::INFINITY].into_iter().chain(data.iter().take(62).map(|&b| b as f64 / 16.0));
            for loss in losses {
                lr = plateau.update(loss, lr);
                assert!(lr.is_finite() && lr >= 0.0, "{spec:?}: plateau rate {lr} after loss {loss}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// softmax_xent

/// The `softmax_xent` target's input: 6 single bytes in this order, then the seed as a
/// little-endian u64 (bytes 6..14), then one label byte per row (bytes 14..). A short input
/// reads as if padded with zeros; bytes after the last row's label are ignored.
///
/// Row `r`'s logits are `SOFTMAX_OFFSETS[offset % 8] + SOFTMAX_SCALES[scale % 8] * z` for
/// standard normals `z` drawn from `seeded(seed, 0)` (row by row; computed in f64, clamped to
/// +-`f32::MAX`), then ties are planted and special values sprinkled, each from the same
/// generator.
///
/// Its `Debug` prints the decoded fields and a shell command that writes the input to a file
/// and replays it.
pub struct SoftmaxXentInput {
    /// Rows: `rows % 17` (0..=16).
    pub rows: u8,
    /// Classes: `1 + classes % 70` (1..=70).
    pub classes: u8,
    /// Index into `SOFTMAX_SCALES`: the spread of the logits, from 1e-30 (all but equal) to
    /// `f32::MAX` (half of them clamped to +-`f32::MAX`, and `max - x` overflows f32).
    pub scale: u8,
    /// Index into `SOFTMAX_OFFSETS`: a common offset of each row (softmax ignores it; the loss
    /// must not lose its `log` to it).
    pub offset: u8,
    /// Bits 0-1: copies of each row's maximum planted at random positions (0..=3); bit 2: the
    /// copies are one ULP below the maximum instead of equal to it (a near tie).
    pub ties: u8,
    /// Bits 0-2 enable -inf, NaN and +inf; bits 3-5: how many random positions of each row get
    /// one of the enabled values (0..=7); bit 6: only odd rows get them; bit 7: row 0 is
    /// entirely -inf (every class masked).
    pub specials: u8,
    pub seed: u64,
    /// `labels[r] % classes` is row r's label.
    pub labels: Vec<u8>,
}

/// Bytes [`SoftmaxXentInput::decode`] reads before the labels.
pub const SOFTMAX_XENT_HEADER_BYTES: usize = 6 + 8;

/// Spreads of the logits (`SoftmaxXentInput::scale`).
pub const SOFTMAX_SCALES: [f64; 8] = [1.0, 0.01, 8.0, 100.0, 1e4, 1e30, f32::MAX as f64, 1e-30];
/// Common offsets of the logits (`SoftmaxXentInput::offset`).
pub const SOFTMAX_OFFSETS: [f64; 8] = [0.0, 10.0, -10.0, 1e4, -1e4, 1e7, 1e30, -1e30];

impl SoftmaxXentInput {
    pub fn decode(data: &[u8]) -> SoftmaxXentInput {
        let mut b = [0u8; SOFTMAX_XENT_HEADER_BYTES];
        let used = data.len().min(SOFTMAX_XENT_HEADER_BYTES);
        b[..used].copy_from_slice(&data[..used]);
        let rows = b[0];
        let labels = (0..rows as usize % 17).map(|r| data.get(SOFTMAX_XENT_HEADER_BYTES + r).copied().unwrap_or(0));
        SoftmaxXentInput {
            rows,
            classes: b[1],
            scale: b[2],
            offset: b[3],
            ties: b[4],
            specials: b[5],
            seed: u64::from_le_bytes([b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13]]),
            labels: labels.collect(),
        }
    }

    /// The bytes that decode to this input (canonical: one label per row, nothing after).
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![self.rows, self.classes, self.scale, self.offset, self.ties, self.specials];
        bytes.extend(self.seed.to_le_bytes());
        bytes.extend(&self.labels);
        bytes
    }

    pub fn row_count(&self) -> usize {
        self.rows as usize % 17
    }

    pub fn class_count(&self) -> usize {
        1 + self.classes as usize % 70
    }

    pub fn label_values(&self) -> Vec<u8> {
        let n = self.class_count();
        self.labels.iter().map(|&l| (l as usize % n) as u8).collect()
    }

    /// The `rows x classes` logits, row-major.
    pub fn logits(&self) -> Vec<f32> {
        let (rows, n) = (self.row_count(), self.class_count());
        let scale = SOFTMAX_SCALES[self.scale as usize % 8];
        let offset = SOFTMAX_OFFSETS[self.offset as usize % 8];
        let kinds: Vec<f32> = [f32::NEG_INFINITY, f32::NAN, f32::INFINITY]
            .into_iter()
            .enumerate()
            .filter(|&(bit, _)| self.specials >> bit & 1 == 1)
            .map(|(_, x)| x)
            .collect();
        let per_row = (self.specials >> 3 & 7) as usize;
        let mut rng = seeded(self.seed, 0);
        let mut logits = Vec::with_capacity(rows * n);
        for r in 0..rows {
            let mut row: Vec<f32> = (0..n)
                .map(|_| (offset + scale * normal(&mut rng)).clamp(-f32::MAX as f64, f32::MAX as f64) as f32)
                .collect();
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let tie = if self.ties & 4 != 0 { next_down(max) } else { max };
            for _ in 0..self.ties & 3 {
                row[below(&mut rng, n as u64) as usize] = tie;
            }
            if !kinds.is_empty() && (self.specials & 0x40 == 0 || r % 2 == 1) {
                for _ in 0..per_row {
                    let j = below(&mut rng, n as u64) as usize;
                    row[j] = kinds[below(&mut rng, kinds.len() as u64) as usize];
                }
            }
            if r == 0 && self.specials & 0x80 != 0 {
                row.fill(f32::NEG_INFINITY);
            }
            logits.extend(row);
        }
        logits
    }
}

impl core::fmt::Debug for SoftmaxXentInput {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let escaped: String = self.encode().iter().map(|b| format!("\\{b:03o}")).collect();
        write!(
            f,
            "SoftmaxXentInput {{ rows: {}, classes: {}, scale: {:e}, offset: {:e}, ties: {} copies{}, \
             specials: {:#04x}, seed: {:#x}, labels: {:?} }} (reproduce: printf '{escaped}' > input && \
             cargo +nightly fuzz run softmax_xent input)",
            self.row_count(),
            self.class_count(),
            SOFTMAX_SCALES[self.scale as usize % 8],
            SOFTMAX_OFFSETS[self.offset as usize % 8],
            self.ties & 3,
            if self.ties & 4 != 0 { " one ULP below the max" } else { "" },
            self.specials,
            self.seed,
            self.label_values(),
        )
    }
}

/// The largest f32 below `x` (for finite `x`; NaN and -inf map to themselves).
fn next_down(x: f32) -> f32 {
    if x.is_nan() || x == f32::NEG_INFINITY {
        x
    } else if x == 0.0 {
        -f32::from_bits(1)
    } else if x > 0.0 {
        f32::from_bits(x.to_bits() - 1)
    } else {
        f32::from_bits(x.to_bits() + 1)
    }
}

/// Tolerance of one row's loss: relative 1e-5, plus what the f32 sum of the exponentials (up
/// to `ceil(n / 16)` additions per lane and 15 across lanes, of terms each within a few ULP
/// and `|x - max| / 2` ULP) can move its `log`: at most about `(0.44 n + 20) / 2` eps, as the
/// sum is at least 1. Doubled.
fn xent_row_tol(twin: f64, n: usize) -> f64 {
    1e-5 * twin.abs() + (n as f64 / 2.0 + 24.0) * f32::EPSILON as f64
}

/// Checks one computed loss (a row's, or the batch's) against the twin's: NaN exactly where
/// the twin's is, equal where it is infinite, within `tol` elsewhere.
fn check_xent_loss(what: &str, got: f64, twin: f64, tol: f64, input: &SoftmaxXentInput) {
    let ok = if twin.is_nan() {
        got.is_nan()
    } else if twin.is_infinite() {
        got == twin
    } else {
        (got - twin).abs() <= tol
    };
    assert!(ok, "{what}: loss {got:e}, twin {twin:e} (|err| {:e}, tol {tol:e}); {input:?}", (got - twin).abs());
}

/// The fused softmax + sparse cross-entropy kernel `softmax::softmax_cross_entropy`, and
/// `softmax::softmax_rows`, against the scalar twin `reference::softmax_cross_entropy` (f64),
/// over 0..=16 rows of 1..=70 classes with spreads from 1e-30 to `f32::MAX`, common offsets up
/// to 1e30, exact and one-ULP ties of the maximum, and -inf, NaN and +inf sprinkled in (the
/// input is a [`SoftmaxXentInput`]).
///
/// - Probabilities (both kernels): NaN exactly where the twin's are (a row with NaN or +inf,
///   or only -inf); exactly 0 for a -inf logit the twin gives 0; elsewhere within
///   `eps (|x - max| + n/16 + 24) |p| + f32::MIN_POSITIVE` of the twin: the f32 rounding of
///   `x - max` (`|x - max| / 2` ULP of the exponential), `exp`'s few ULP, the f32 sum, the
///   reciprocal and product, about 24 eps near 1 with a 2x margin; the absolute term is
///   underflow.
/// - Loss, per row (the kernel run on each row alone, so a NaN row hides nothing) and summed
///   (the batch call): NaN exactly where the twin's is, infinite (a -inf label) exactly where
///   it is, else within 1e-5 relative plus `(n/2 + 24) eps` absolute per row (the f32 sum's
///   effect on the `log`).
/// - Correct count: equal to the twin's, per row and for the batch. The kernel and twin both
///   take the first arg-max of the same f32 logits (NaN never wins), so ties are resolved the
///   same way exactly and need no tolerance.
pub fn check_softmax_xent(data: &[u8]) {
    let input = SoftmaxXentInput::decode(data);
    let (rows, n) = (input.row_count(), input.class_count());
    let labels = input.label_values();
    let logits = input.logits();

    let mut twin = vec![f32::NAN; rows * n];
    let (twin_loss, twin_correct) = reference::softmax_cross_entropy(&logits, n, &labels, &mut twin);
    let mut probs = logits.clone();
    let (loss, correct) = softmax_cross_entropy(&mut probs, n, &labels);
    let mut plain = logits.clone();
    softmax_rows(&mut plain, n);

    let eps = f32::EPSILON as f64;
    let mut summed_tol = 0.0;
    for r in 0..rows {
        let row = &logits[r * n..(r + 1) * n];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        for j in 0..n {
            let (x, e) = (row[j], twin[r * n + j]);
            for (kernel, p) in [("softmax_cross_entropy", probs[r * n + j]), ("softmax_rows", plain[r * n + j])] {
                let ok = if e.is_nan() {
                    p.is_nan()
                } else if x == f32::NEG_INFINITY && e == 0.0 {
                    p == 0.0
                } else {
                    let tol = eps * ((x as f64 - max).abs() + n as f64 / 16.0 + 24.0) * e.abs() as f64
                        + f32::MIN_POSITIVE as f64;
                    (p as f64 - e as f64).abs() <= tol
                };
                assert!(
                    ok,
                    "{kernel}: p[{r},{j}] = {p:e}, twin {e:e} (logit {x:e}, row max {max:e}, {} ulp); {input:?}",
                    ulps(p, e)
                );
            }
        }

        // The row alone, through both.
        let mut one = vec![f32::NAN; n];
        let (twin_row, twin_row_correct) = reference::softmax_cross_entropy(row, n, &labels[r..=r], &mut one);
        let mut alone = row.to_vec();
        let (row_loss, row_correct) = softmax_cross_entropy(&mut alone, n, &labels[r..=r]);
        let tol = xent_row_tol(twin_row, n);
        summed_tol += if twin_row.is_finite() { tol } else { 0.0 };
        check_xent_loss(&format!("row {r} (label {})", labels[r]), row_loss, twin_row, tol, &input);
        assert_eq!(
            row_correct,
            twin_row_correct,
            "row {r} (label {}): the kernel's arg-max {} the label, the twin's {}; {input:?}",
            labels[r],
            if row_correct == 1 { "is" } else { "is not" },
            if twin_row_correct == 1 { "is" } else { "is not" }
        );
    }
    check_xent_loss("summed", loss, twin_loss, summed_tol + 1e-12 * twin_loss.abs(), &input);
    assert_eq!(correct, twin_correct, "correct rows: {correct}, twin {twin_correct}; {input:?}");
}

// ---------------------------------------------------------------------------------------------
// int8_gemv

/// Where the `int8_gemv` target's inputs and weights come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Int8Fill {
    /// Seeded: uniform bytes and weights, about a quarter of them at the extremes (as in
    /// `tests/int8.rs`).
    Seeded,
    /// Seeded, extremes only: each input 0 or 255, each weight -128 or 127.
    SeededExtremes,
    /// The payload's bytes in turn, repeated as needed (zeros when it is empty): the inputs,
    /// then the weights (as i8, row-major `[n_in, n_out]`).
    Payload,
    /// The payload's bits in turn (lowest first, repeated; zeros when empty), extremes only:
    /// a 1 bit is input 255 or weight 127, a 0 bit input 0 or weight -128.
    PayloadBits,
    /// Every input 255 and every weight -128: the most negative sums (a pair of these
    /// products overflows i16, where a saturating `pmaddubsw` kernel would go wrong).
    AllMin,
    /// Every input 255 and every weight 127.
    AllMax,
}

const INT8_FILLS: [Int8Fill; 6] = [
    Int8Fill::Seeded,
    Int8Fill::SeededExtremes,
    Int8Fill::Payload,
    Int8Fill::PayloadBits,
    Int8Fill::AllMin,
    Int8Fill::AllMax,
];

const INT8_KERNELS: [Int8Kernel; 2] = [Int8Kernel::Portable, Int8Kernel::Vnni];

/// Header bytes of an `int8_gemv` input; the rest is the payload.
pub const INT8_GEMV_HEADER: usize = 17;

/// The `int8_gemv` target's input, decoded from
/// `[n_in: u16 LE][n_out][fill][seed: u64 LE][scale: f32 LE][zero point][payload...]`
/// (a short input reads as if padded with zeros). `Debug` prints the decoded fields and the
/// raw bytes (the reproducer, see [`Hex`]).
#[derive(Debug)]
pub struct Int8GemvInput {
    /// `n_in % 301`: 0..=300, most not a multiple of 4.
    pub n_in: usize,
    /// `1 + n_out % 150`: 1..=150, across the 16-output tiles and the 128-output blocks.
    pub n_out: usize,
    /// `INT8_FILLS[fill % 6]`.
    pub fill: Int8Fill,
    pub seed: u64,
    /// For `quantize_u8`: the scale is the f32's bits with the sign cleared, and a zero or a
    /// non-finite value folded onto the subnormals (any finite positive f32 can be written
    /// as itself); any zero point.
    pub quant: U8Quant,
    /// The payload read as little-endian f32s (any bits): what `quantize_u8` and `min_max`
    /// get.
    pub floats: Vec<f32>,
    pub bytes: Hex,
}

/// A finite positive f32 from any bits: positive finite values as they are, zero and the
/// non-finite ones folded onto `1..=0x80_0000` (the subnormals and the smallest normal).
fn finite_positive(bits: u32) -> f32 {
    let b = bits & 0x7fff_ffff;
    f32::from_bits(match b {
        0 => 1,
        b if b >= 0x7f80_0000 => b - 0x7f7f_ffff,
        b => b,
    })
}

impl Int8GemvInput {
    pub fn decode(data: &[u8]) -> Self {
        let h: [u8; INT8_GEMV_HEADER] = header(data);
        let payload = data.get(INT8_GEMV_HEADER..).unwrap_or(&[]);
        Int8GemvInput {
            n_in: u16::from_le_bytes([h[0], h[1]]) as usize % 301,
            n_out: 1 + h[2] as usize % 150,
            fill: INT8_FILLS[h[3] as usize % INT8_FILLS.len()],
            seed: u64::from_le_bytes(h[4..12].try_into().expect("8 bytes")),
            quant: U8Quant {
                scale: finite_positive(u32::from_le_bytes(h[12..16].try_into().expect("4 bytes"))),
                zero_point: h[16],
            },
            floats: payload.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            bytes: Hex(data.to_vec()),
        }
    }

    fn payload(&self) -> &[u8] {
        self.bytes.0.get(INT8_GEMV_HEADER..).unwrap_or(&[])
    }

    /// The inputs `x` and the row-major `[n_in, n_out]` weights.
    pub fn operands(&self) -> (Vec<u8>, Vec<i8>) {
        let (n_x, n_w) = (self.n_in, self.n_in * self.n_out);
        let mut rng = seeded(self.seed, 0);
        // A byte with probability 1/8 each of `lo` and `hi`, else uniform.
        let mut mixed = |lo: u8, hi: u8| match below(&mut rng, 8) {
            0 => lo,
            1 => hi,
            _ => below(&mut rng, 256) as u8,
        };
        let payload = self.payload();
        let bytes = || payload.iter().copied().chain(core::iter::repeat_n(0, payload.is_empty().into())).cycle();
        match self.fill {
            Int8Fill::Seeded => {
                let x = (0..n_x).map(|_| mixed(0, 255)).collect();
                let w = (0..n_w).map(|_| mixed(0x80, 0x7f) as i8).collect();
                (x, w)
            }
            Int8Fill::SeededExtremes => {
                let mut rng = seeded(self.seed, 1);
                let x = (0..n_x).map(|_| if below(&mut rng, 2) == 1 { 255 } else { 0 }).collect();
                let w = (0..n_w).map(|_| if below(&mut rng, 2) == 1 { 127 } else { -128 }).collect();
                (x, w)
            }
            Int8Fill::Payload => {
                let mut b = bytes();
                let x = b.by_ref().take(n_x).collect();
                let w = b.take(n_w).map(|v| v as i8).collect();
                (x, w)
            }
            Int8Fill::PayloadBits => {
                let mut bits = bytes().flat_map(|v| (0..8).map(move |k| (v >> k) & 1 == 1));
                let x = bits.by_ref().take(n_x).map(|b| if b { 255 } else { 0 }).collect();
                let w = bits.take(n_w).map(|b| if b { 127 } else { -128 }).collect();
                (x, w)
            }
            Int8Fill::AllMin => (vec![255; n_x], vec![-128; n_w]),
            Int8Fill::AllMax => (vec![255; n_x], vec![127; n_w]),
        }
    }
}

/// The integer kernels against their scalar twins, all compared for exact equality:
///
/// - `gemv_u8_i8_with` for every [`Int8Kernel`] this CPU runs (and `gemv_u8_i8`'s own choice)
///   against `reference::gemv_u8_i8` on `n_in` = 0..=300 inputs and 1..=150 outputs, the
///   weights packed by `pack_groups_of_4` (which must unpack to themselves, with zero padding
///   and the column sums the loader checks); the accumulators start at `i32::MIN`, so an
///   output a kernel skips shows;
/// - `quantize_u8` against `reference::quantize_u8` on the payload's f32s (any bits: NaN,
///   infinities, subnormals, -0) with the input's [`U8Quant`] (any finite positive scale,
///   including those whose reciprocal overflows, any zero point), and with the quantisation
///   `U8Quant::covering` makes of their range;
/// - `min_max` against a plain fold that ignores NaN (`==`, so -0 and +0 may stand for each
///   other: which one a tie returns is unspecified);
/// - the bf16 kernels on the same shape: `gemv_bf16_with` for every [`Bf16Kernel`] this CPU
///   runs against `reference::gemv_bf16`, bit for bit, on inputs `(x - 128) / 64` and weights
///   `q / 32`, each times a seeded power of two in 2^-6..2^6 so the sums round, rounded to
///   bf16 (every product normal or zero: `vdpbf16ps` flushes subnormals, the twin does
///   not); and `round_to_bf16` against `bf16_from_f32` on the payload's f32s (any bits), bit
///   for bit.
///
/// The input is an [`Int8GemvInput`].
pub fn check_int8_gemv(data: &[u8]) {
    let input = Int8GemvInput::decode(data);
    let (n_in, n_out) = (input.n_in, input.n_out);
    let (x, q) = input.operands();
    let packed = pack_groups_of_4(&q, n_in, n_out);
    assert_eq!(Some(packed.len()), packed_len(n_in, n_out), "packed length; {input:?}");
    assert!(unpack_groups_of_4(&packed, n_in, n_out) == q, "unpacking the packed weights; {input:?}");
    assert!(packed_padding_is_zero(&packed, n_in, n_out), "nonzero padding after packing; {input:?}");
    for j in 0..n_out {
        let sum: i32 = (0..n_in).map(|i| q[i * n_out + j] as i32).sum();
        assert_eq!(packed_column_sum(&packed, n_out, j), sum, "column sum {j}; {input:?}");
    }

    let expected = reference::gemv_u8_i8(&x, &q, n_out);
    let compare = |name: &dyn core::fmt::Debug, run: &dyn Fn(&mut [i32])| {
        let mut acc = vec![i32::MIN; n_out];
        run(&mut acc);
        if let Some(j) = (0..n_out).find(|&j| acc[j] != expected[j]) {
            let wrong = (0..n_out).filter(|&j| acc[j] != expected[j]).count();
            panic!(
                "{name:?}: {n_in} x {n_out}: acc[{j}] = {}, reference {} ({wrong} of {n_out} outputs differ); {input:?}",
                acc[j], expected[j]
            );
        }
    };
    for kernel in INT8_KERNELS.into_iter().filter(|k| k.available()) {
        compare(&kernel, &|acc| gemv_u8_i8_with(kernel, &x, &packed, n_out, acc));
    }
    compare(&format_args!("gemv_u8_i8 ({:?})", Int8Kernel::detect()), &|acc| gemv_u8_i8(&x, &packed, n_out, acc));

    // The bf16 kernels on the same shape: inputs (x - 128) / 64 and weights q / 32, each
    // times a seeded power of two in 2^-6..2^6 (so that the f32 sums round, and summing in
    // another order shows), every product a normal number or zero (vdpbf16ps flushes
    // subnormals; the twin does not).
    let mut rng = seeded(input.seed, 16);
    let mut spread = |v: f32| v * (2f32).powi(below(&mut rng, 13) as i32 - 6);
    let x_bf16: Vec<u16> = x.iter().map(|&v| bf16_from_f32(spread((v as f32 - 128.0) / 64.0))).collect();
    let w_bf16: Vec<u16> = q.iter().map(|&v| bf16_from_f32(spread(v as f32 / 32.0))).collect();
    let w_bytes: Vec<u8> = w_bf16.iter().flat_map(|v| v.to_le_bytes()).collect();
    let expected_bf16 = reference::gemv_bf16(&x_bf16, &w_bf16, n_out);
    for kernel in [Bf16Kernel::Portable, Bf16Kernel::Avx512Bf16].into_iter().filter(|k| k.available()) {
        let mut y = vec![f32::NAN; n_out];
        gemv_bf16_with(kernel, &x_bf16, &w_bytes, n_out, &mut y);
        if let Some(j) = (0..n_out).find(|&j| y[j] != expected_bf16[j]) {
            panic!(
                "bf16 {kernel:?}: {n_in} x {n_out}: y[{j}] = {:e}, reference {:e}; {input:?}",
                y[j], expected_bf16[j]
            );
        }
    }

    let xs = &input.floats;
    let mut rounded = vec![0u16; xs.len()];
    round_to_bf16(xs, &mut rounded);
    if let Some(i) = (0..xs.len()).find(|&i| rounded[i] != bf16_from_f32(xs[i])) {
        panic!(
            "round_to_bf16 of {:#010x}: {:#06x}, bf16_from_f32 {:#06x}; {input:?}",
            xs[i].to_bits(),
            rounded[i],
            bf16_from_f32(xs[i])
        );
    }
    let (lo, hi) = min_max(xs);
    let plain = plain_min_max(xs);
    assert!(lo == plain.0 && hi == plain.1, "min_max = ({lo:e}, {hi:e}), plain fold {plain:?}; {input:?}");
    for quant in [input.quant, U8Quant::covering(lo, hi)] {
        let (mut got, mut want) = (vec![0xAA; xs.len()], vec![0x55; xs.len()]);
        quantize_u8(xs, quant, &mut got);
        reference::quantize_u8(xs, quant, &mut want);
        if let Some(i) = (0..xs.len()).find(|&i| got[i] != want[i]) {
            panic!(
                "quantize_u8 of x[{i}] = {:e} ({:#010x}) with {quant:?} (scale bits {:#010x}): {}, reference {}; {input:?}",
                xs[i],
                xs[i].to_bits(),
                quant.scale.to_bits(),
                got[i],
                want[i]
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// infer_dense

/// The preprocessing of an `infer_dense` model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PreprocessKind {
    /// `x / 255`.
    UnitScale,
    /// `x * factor`, `factor = ±(1 + m/16) 2^e`, `e` in -12..=2 (may be negative).
    Scale(f32),
    /// Seeded per-feature means in [0, 255) and deviations in [4, 128).
    Standardise,
    /// Fitted on four seeded images in which every third feature is constant: those features
    /// get Keras's floored deviation, 1/1e-7, and an image that differs there gives inputs
    /// near 1e9.
    StandardiseFitted,
}

/// Header bytes of an `infer_dense` input; the rest is the image (repeated to the input
/// size; zeros when empty).
pub const INFER_DENSE_HEADER: usize = 24;

/// The `infer_dense` target's input. Bytes (a short input reads as if padded with zeros):
/// 0 dense layers (`1 + b % 3`), 1 input size, 2-3 hidden widths, 4 classes (each
/// `1 + b % 40`), 5-6 hidden activations (`ACTIVATIONS[b % 8]`), 7 dropout (`b & 3`: 1
/// dropout, 2 alpha dropout, else none; before dense layer `(b >> 2) % layers`), 8 its rate
/// (`(b % 100) / 100`), 9 preprocessing kind (`b % 4`), 10 its factor, 11 magnitudes
/// (weights times `[1, 0.1, 4, 0.01][b % 4]`, biases `[0, 0.1, 1, 4][(b >> 2) % 4]` times a
/// standard normal, bit 4: one zero column per layer), 12 the static int8 file (bits 0-2:
/// dense layers left dynamic; bit 3: the first layer at the preprocessing's scale), 13-15
/// per dense layer the calibrated range's factor (`(1 + b % 8) / 4`), 16-23 the seed
/// (u64 LE), then the image. `Debug` prints the decoded fields and the raw bytes (the
/// reproducer, see [`Hex`]).
#[derive(Debug)]
pub struct InferDenseInput {
    pub input_dim: usize,
    /// Each dense layer's units and activation (the last one's: softmax).
    pub dense: Vec<(usize, Activation)>,
    /// A dropout layer before dense layer `.0`: `(at, rate, alpha)`.
    pub dropout: Option<(usize, f32, bool)>,
    pub preprocess: PreprocessKind,
    pub weight_scale: f32,
    pub bias_std: f32,
    pub zero_column: bool,
    /// In the file with static input quantisation: dense layers (bit `l`) left dynamic.
    pub dynamic_mask: u8,
    /// In that file, the first layer's static scale is the preprocessing's factor (when it
    /// scales by a positive factor), so the image bytes go straight into the integer kernel.
    pub bytes_into_first: bool,
    /// Per dense layer, the calibrated range is this image's range times this (below 1 the
    /// static quantisation clips).
    pub calibration: [f32; 3],
    pub seed: u64,
    pub image: Vec<u8>,
    #[allow(dead_code, reason = "read by Debug: the failure message's reproducer")]
    pub bytes: Hex,
}

impl InferDenseInput {
    pub fn decode(data: &[u8]) -> Self {
        let h: [u8; INFER_DENSE_HEADER] = header(data);
        let layers = 1 + h[0] as usize % 3;
        let width = |b: u8| 1 + b as usize % 40;
        let input_dim = width(h[1]);
        let mut dense: Vec<(usize, Activation)> =
            (0..layers - 1).map(|l| (width(h[2 + l]), ACTIVATIONS[h[5 + l] as usize % 8])).collect();
        dense.push((width(h[4]), Activation::Softmax));
        let rate = (h[8] % 100) as f32 / 100.0;
        let at = (h[7] >> 2) as usize % layers;
        let dropout = match h[7] & 3 {
            1 => Some((at, rate, false)),
            2 => Some((at, rate, true)),
            _ => None,
        };
        let factor = {
            let b = h[10];
            let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
            sign * (1.0 + (b & 15) as f32 / 16.0) * (2f32).powi(((b >> 4) & 7) as i32 * 2 - 12)
        };
        let preprocess = match h[9] % 4 {
            0 => PreprocessKind::UnitScale,
            1 => PreprocessKind::Scale(factor),
            2 => PreprocessKind::Standardise,
            _ => PreprocessKind::StandardiseFitted,
        };
        let payload = data.get(INFER_DENSE_HEADER..).unwrap_or(&[]);
        InferDenseInput {
            input_dim,
            dense,
            dropout,
            preprocess,
            weight_scale: [1.0, 0.1, 4.0, 0.01][h[11] as usize % 4],
            bias_std: [0.0, 0.1, 1.0, 4.0][(h[11] >> 2) as usize % 4],
            zero_column: h[11] & 16 != 0,
            dynamic_mask: h[12] & 7,
            bytes_into_first: h[12] & 8 != 0,
            calibration: core::array::from_fn(|l| (1 + h[13 + l] % 8) as f32 / 4.0),
            seed: u64::from_le_bytes(h[16..24].try_into().expect("8 bytes")),
            image: (0..input_dim).map(|i| if payload.is_empty() { 0 } else { payload[i % payload.len()] }).collect(),
            bytes: Hex(data.to_vec()),
        }
    }

    /// The model and its preprocessing, f32.
    pub fn saved_model(&self) -> SavedModel {
        let mut specs = Vec::new();
        for (l, &(units, activation)) in self.dense.iter().enumerate() {
            if let Some((at, rate, alpha)) = self.dropout
                && at == l
            {
                specs.push(if alpha { LayerSpec::AlphaDropout { rate } } else { LayerSpec::Dropout { rate } });
            }
            specs.push(LayerSpec::Dense { units, activation, init: Initializer::LecunNormal });
        }
        let mut model = Sequential::new(self.input_dim, &specs, self.seed).expect("a valid model");
        let mut rng = seeded(self.seed, 1000);
        let dense: Vec<_> = model.layers().iter().filter_map(Layer::as_dense).cloned().collect();
        for d in &dense {
            let weights = d.weight_range();
            let zero = self.zero_column.then(|| below(&mut rng, d.n_out as u64) as usize);
            for (k, w) in model.params[weights.clone()].iter_mut().enumerate() {
                *w = if zero == Some(k % d.n_out) { 0.0 } else { *w * self.weight_scale };
            }
            for b in &mut model.params[weights.end..weights.end + d.n_out] {
                *b = self.bias_std * normal(&mut rng) as f32;
            }
        }
        let n = self.input_dim;
        let mut rng = seeded(self.seed, 2000);
        let preprocess = match self.preprocess {
            PreprocessKind::UnitScale => Preprocess::UNIT_SCALE,
            PreprocessKind::Scale(factor) => Preprocess::Scale(factor),
            PreprocessKind::Standardise => Preprocess::Standardise {
                mean: (0..n).map(|_| 255.0 * uniform_f32(&mut rng)).collect(),
                inv_std: (0..n).map(|_| 1.0 / (4.0 + 124.0 * uniform_f32(&mut rng))).collect(),
            },
            PreprocessKind::StandardiseFitted => {
                let constant: Vec<u8> = (0..n).map(|_| below(&mut rng, 256) as u8).collect();
                let images: Vec<Vec<u8>> = (0..4)
                    .map(|_| {
                        (0..n).map(|i| if i % 3 == 0 { constant[i] } else { below(&mut rng, 256) as u8 }).collect()
                    })
                    .collect();
                Preprocess::standardise_from_images(images.iter().map(|v| &v[..]), n).expect("four images")
            }
        };
        SavedModel { model, preprocess }
    }
}

/// `act(x W + b)` for one row through the scalar twins (`reference::gemm`, then
/// `reference::activation`; softmax's logits are left as they are).
fn reference_dense(layer: &simdnn::nn::Dense, params: &[f32], x: &[f32]) -> Vec<f32> {
    let (n_in, n_out) = (layer.n_in, layer.n_out);
    let mut y = vec![0f32; n_out];
    reference::gemm(
        1.0,
        MatRef::new(x, 1, n_in),
        MatRef::new(layer.weights(params), n_in, n_out),
        0.0,
        &mut MatMut::new(&mut y, 1, n_out),
        Some(layer.bias(params)),
        Activation::Identity,
    );
    y.iter_mut().for_each(|v| *v = reference::activation(layer.activation, *v));
    y
}

/// The preprocessing as `infer` computes it (scalar, the same f32 operations).
fn reference_preprocess(preprocess: &Preprocess, image: &[u8]) -> Vec<f32> {
    match preprocess {
        Preprocess::Scale(s) => image.iter().map(|&p| p as f32 * s).collect(),
        Preprocess::Standardise { mean, inv_std } => {
            image.iter().enumerate().map(|(i, &p)| (p as f32 - mean[i]) * inv_std[i]).collect()
        }
    }
}

/// Minimum and maximum ignoring NaN, by a plain fold.
fn plain_min_max(x: &[f32]) -> (f32, f32) {
    x.iter().filter(|v| !v.is_nan()).fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)))
}

/// Each layer's input range on `image` through the f32 model (for calibrating static
/// quantisations).
fn layer_input_ranges(saved: &SavedModel, image: &[u8]) -> Vec<(f32, f32)> {
    let mut x = reference_preprocess(&saved.preprocess, image);
    let mut ranges = Vec::new();
    for layer in saved.model.layers() {
        ranges.push(plain_min_max(&x));
        if let Layer::Dense(d) = layer {
            x = reference_dense(d, &saved.model.params, &x);
        }
    }
    ranges
}

/// The largest f32 not above `v`.
fn f32_down(v: f64) -> f32 {
    let f = v as f32;
    if f as f64 > v { f.next_down() } else { f }
}

/// The smallest f32 not below `v`.
fn f32_up(v: f64) -> f32 {
    let f = v as f32;
    if (f as f64) < v { f.next_up() } else { f }
}

/// Quantisations an int8 layer's input may get at run time: any scale in
/// `[scale_lo, scale_hi]` with this zero point.
#[derive(Clone, Copy, Debug)]
struct QuantFamily {
    scale_lo: f32,
    scale_hi: f32,
    zero_point: u8,
}

/// Every quantisation `U8Quant::covering(min_max(x))` can give when each `x[i]` may be
/// anywhere in `bounds[i]`. `covering` is a chain of f32 operations, each monotone in its
/// operands (rounding to nearest is monotone), so the ends of each operand's range give the
/// ends of the result's: the minimum lies in `[min a, min b]` and the maximum in
/// `[max a, max b]`, the scale `(max(hi, 0) - min(lo, 0)) / 255` in `[s1, s2]`, and the zero
/// point `rint(-min(lo, 0) / scale)` between the roundings of the smallest and largest
/// quotient. A degenerate range's fallback (scale 1, zero point 0) is included when a zero
/// scale is reachable. (The zero point and the scale are correlated; treating them as
/// independent only widens the enclosure.)
fn dynamic_families(bounds: &[(f32, f32)]) -> Vec<QuantFamily> {
    let (la, ha) = plain_min_max(&bounds.iter().map(|b| b.0).collect::<Vec<_>>());
    let (lb, hb) = plain_min_max(&bounds.iter().map(|b| b.1).collect::<Vec<_>>());
    let (l1, l2, h1, h2) = (la.min(0.0), lb.min(0.0), ha.max(0.0), hb.max(0.0));
    let (s1, s2) = ((h1 - l2) / 255.0, (h2 - l1) / 255.0);
    assert!(s2.is_finite(), "the check's enclosure of a layer's input overflowed ({la:e}..{hb:e})");
    let mut families = Vec::new();
    if s1 <= 0.0 {
        families.push(QuantFamily { scale_lo: 1.0, scale_hi: 1.0, zero_point: 0 });
    }
    if s2 > 0.0 {
        let s_lo = if s1 > 0.0 { s1 } else { f32::from_bits(1) };
        let zero_point = |r: f32| r.round_ties_even().clamp(0.0, 255.0) as u8;
        for z in zero_point(-l2 / s2)..=zero_point(-l1 / s_lo) {
            families.push(QuantFamily { scale_lo: s_lo, scale_hi: s2, zero_point: z });
        }
    }
    families
}

/// Where the dequantised value `(q - zero_point) * scale` of an input anywhere in `[a, b]`
/// can lie, for any quantisation of `families`. `q = rint(clamp(x * (1 / scale) + zero_point))`
/// (`reference::quantize_u8`) is monotone in `x` for a fixed scale and monotone in
/// `1 / scale` for a fixed `x` (in the direction of `x`'s sign; `0 * inf` is NaN, which
/// quantises to 0, and a corner with the other sign or 0 itself covers it), so its extremes
/// over the box are at the corners; likewise `(q - zero_point) * scale`.
fn dequantised_bounds(a: f32, b: f32, families: &[QuantFamily]) -> (f32, f32) {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for f in families {
        let mut q = [0u8; 4];
        reference::quantize_u8(&[a, b], U8Quant { scale: f.scale_lo, zero_point: f.zero_point }, &mut q[..2]);
        reference::quantize_u8(&[a, b], U8Quant { scale: f.scale_hi, zero_point: f.zero_point }, &mut q[2..]);
        let (q_lo, q_hi) = (q.iter().min().expect("4"), q.iter().max().expect("4"));
        for q in [q_lo, q_hi] {
            for s in [f.scale_lo, f.scale_hi] {
                let v = (*q as f32 - f.zero_point as f32) * s;
                (lo, hi) = (lo.min(v), hi.max(v));
            }
        }
    }
    (lo, hi)
}

/// Where an activation's SIMD kernel can put outputs for inputs in `[lo, hi]`. Every
/// activation here is monotone non-decreasing; identity, ReLU and leaky ReLU are exact in the
/// kernels, the others within 4 ULP or 1e-7 of the twin (`tests/kernels.rs`, the
/// `activations` target), plus one ULP in case the twin (libm) is not exactly monotone.
fn activation_bounds(act: Activation, lo: f32, hi: f32) -> (f32, f32) {
    let (f_lo, f_hi) = (reference::activation(act, lo), reference::activation(act, hi));
    match act {
        Activation::Identity | Activation::Softmax | Activation::Relu | Activation::LeakyRelu { .. } => (f_lo, f_hi),
        _ => {
            let m = f_lo.abs().max(f_hi.abs());
            let d = (5.0 * (m.next_up() - m) as f64).max(1e-7);
            (f32_down(f_lo as f64 - d), f32_up(f_hi as f64 + d))
        }
    }
}

/// `exp(z) / (exp(z) + sum exp(others))` in f64.
fn softmax_of(z: f64, others: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = others.clone().fold(z, f64::max);
    let e = (z - m).exp();
    e / (e + others.map(|o| (o - m).exp()).sum::<f64>())
}

/// What `infer::Model::predict` must return for `image`: the reference probabilities, and
/// per class bounds that the probabilities of every correct execution lie within.
struct Expected {
    probs: Vec<f32>,
    lo: Vec<f64>,
    hi: Vec<f64>,
}

/// The reference semantics of `saved` (the model as its file stands for it: dequantised
/// weights) on `image`, through the scalar twins: the preprocessing, then each dense layer
/// by `reference::gemm` and `reference::activation` (dropout is the identity), then a plain
/// softmax in f64. With `inputs` (an int8 model with u8 inputs: one entry per layer), each
/// dense layer's input is first quantised by `reference::quantize_u8` (static, or
/// dynamically over the range of the reference's own values by `U8Quant::covering`) and
/// dequantised: the fake-quantised model of `tests/infer.rs`.
///
/// Alongside, an enclosure: per value, an interval that holds what any correct execution
/// computes, so the comparison allows exactly the freedom the semantics leaves:
///
/// - f32 rounding: `infer` sums in f32 (fused multiply-adds, in its own order; the last
///   partial vector of outputs with separate multiplies and adds), applies int8 scales after
///   the sum, and its int8 path turns the integer sum into f32 and scales it; each of the
///   `2 n_in + 8` roundings this involves (and the dequantised weights' own rounding)
///   errs by at most half an f32 ULP of a partial sum, so by `u = 2^-24` of
///   `sum |x| |w| + |b|` each (plus the subnormal spacing);
/// - the activation kernels' error ([`activation_bounds`]);
/// - int8 inputs: a value `infer` computes within rounding of the reference's may sit on the
///   other side of a quantisation step (or, dynamically, move the range, and with it the
///   scale and zero point): the enclosure of every quantisation the input's interval can
///   reach ([`dequantised_bounds`], [`dynamic_families`]). A flip in an early layer then
///   widens every later interval by what it can change: the check bounds the effect of a
///   one-step flip instead of excluding such inputs. Where the intervals hold a single
///   quantised value (the first layer always: its input is computed exactly as `infer` does),
///   the enclosure is as tight as rounding allows.
///
/// - bf16 layers: the input rounded to bf16, which is monotone, so the interval's ends are
///   rounded with it.
///
/// Softmax probabilities grow with their own logit and shrink with every other, so class
/// `j`'s lowest probability is at its lowest logit and the others' highest, and conversely.
fn expected(saved: &SavedModel, image: &[u8], inputs: Option<&[InputQuant]>, bf16_inputs: bool) -> Expected {
    let params = &saved.model.params;
    let mut x = reference_preprocess(&saved.preprocess, image);
    let mut bounds: Vec<(f32, f32)> = x.iter().map(|&v| (v, v)).collect();
    for (l, layer) in saved.model.layers().iter().enumerate() {
        let Layer::Dense(d) = layer else { continue };
        let (x_in, b_in) = match inputs.map(|q| q[l]) {
            // bf16 layers round their input to bf16: monotone, so the bounds round with it.
            None if bf16_inputs => {
                let round = |v: f32| f32_from_bf16(bf16_from_f32(v));
                (x.iter().map(|&v| round(v)).collect(), bounds.iter().map(|&(a, b)| (round(a), round(b))).collect())
            }
            None => (x.clone(), bounds.clone()),
            Some(input) => {
                let (quant, families) = match input {
                    InputQuant::Static(q) => {
                        (q, vec![QuantFamily { scale_lo: q.scale, scale_hi: q.scale, zero_point: q.zero_point }])
                    }
                    InputQuant::Dynamic => {
                        let (lo, hi) = plain_min_max(&x);
                        (U8Quant::covering(lo, hi), dynamic_families(&bounds))
                    }
                };
                let mut q = vec![0u8; x.len()];
                reference::quantize_u8(&x, quant, &mut q);
                let x_hat = q.iter().map(|&v| (v as f32 - quant.zero_point as f32) * quant.scale).collect();
                (x_hat, bounds.iter().map(|&(a, b)| dequantised_bounds(a, b, &families)).collect())
            }
        };
        let (w, bias) = (d.weights(params), d.bias(params));
        let roundings = (2 * d.n_in + 8) as f64;
        bounds = (0..d.n_out)
            .map(|j| {
                let (mut centre, mut radius, mut size) = (bias[j] as f64, 0f64, bias[j].abs() as f64);
                for (i, &(a, b)) in b_in.iter().enumerate() {
                    let (w, a, b) = (w[i * d.n_out + j] as f64, a as f64, b as f64);
                    centre += (a + b) / 2.0 * w;
                    radius += (b - a) / 2.0 * w.abs();
                    size += a.abs().max(b.abs()) * w.abs();
                }
                let slack = roundings * (size / (1u64 << 24) as f64 + f32::from_bits(1) as f64);
                let (lo, hi) = (f32_down(centre - radius - slack), f32_up(centre + radius + slack));
                assert!(lo.is_finite() && hi.is_finite(), "the check's enclosure overflowed: {lo:e}..{hi:e}");
                activation_bounds(d.activation, lo, hi)
            })
            .collect();
        x = reference_dense(d, params, &x_in);
    }
    let max = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let sum: f64 = x.iter().map(|&v| (v as f64 - max).exp()).sum();
    let probs = x.iter().map(|&v| ((v as f64 - max).exp() / sum) as f32).collect();
    let others = |j: usize, end: fn(&(f32, f32)) -> f32| {
        bounds.iter().enumerate().filter(move |&(k, _)| k != j).map(move |(_, b)| end(b) as f64)
    };
    let lo = (0..x.len()).map(|j| softmax_of(bounds[j].0 as f64, others(j, |b| b.1))).collect();
    let hi = (0..x.len()).map(|j| softmax_of(bounds[j].1 as f64, others(j, |b| b.0))).collect();
    Expected { probs, lo, hi }
}

/// Absolute tolerance on a probability beyond the enclosure: `tests/infer.rs`'s 1e-4 (it also
/// covers the SIMD softmax's own error, about 1e-6).
const PROB_TOLERANCE: f64 = 1e-4;

/// `simdnn::infer` (the allocation-free inference path) against the scalar twins on small
/// random models: 1-3 dense layers of 1..=40 units (hidden activations from `ACTIVATIONS`, a
/// softmax output), optionally a dropout or alpha-dropout layer, preprocessing by a scale
/// (`x / 255` or another, possibly negative, factor) or a standardisation (seeded, or fitted
/// on images with constant features: inputs near 1e9). Each model is written with every
/// weight type: f32, bf16, int8 weights, and int8 with u8 inputs, once with dynamic input
/// quantisation and once with static quantisations calibrated on the image (clipping when
/// the calibration factor is below 1; some layers left dynamic; optionally the first layer
/// at the preprocessing's scale, where `infer` feeds the image bytes straight to the
/// integer kernel).
///
/// Each file must load with `infer::Model::from_bytes` (and as its own type with
/// `format::from_bytes_typed`), predict one image into NaN-filled scratch of `scratch_len()`
/// floats without error or panic, and MC-dropout-predict likewise. The probabilities must
/// lie within [`PROB_TOLERANCE`] of the enclosure [`expected`] computes around the reference
/// semantics of the file's model: for f32, bf16 and int8 weights the dequantised model
/// through `reference::gemm`, `reference::activation` and a plain softmax (bf16: each dense
/// layer's input rounded to bf16, as the inference path does); for int8 with u8
/// inputs the fake-quantised model (each dense layer's input quantised with
/// `reference::quantize_u8` and dequantised). Where rounding cannot move a quantised value
/// the enclosure is within a few f32 roundings of the reference, so the tolerance is
/// `tests/infer.rs`'s 1e-4; it widens by exactly what a possible one-step flip (or a
/// dynamic range moved by rounding) can change, and by accumulated rounding of large values.
///
/// The input is an [`InferDenseInput`].
pub fn check_infer_dense(data: &[u8]) {
    let input = InferDenseInput::decode(data);
    let saved = input.saved_model();
    let layers = saved.model.layers();
    let ranges = layer_input_ranges(&saved, &input.image);
    let mut dense = 0;
    let static_inputs: Vec<InputQuant> = layers
        .iter()
        .enumerate()
        .map(|(l, layer)| {
            if !matches!(layer, Layer::Dense(_)) {
                return InputQuant::Dynamic; // unused
            }
            let k = dense;
            dense += 1;
            match saved.preprocess {
                Preprocess::Scale(factor) if l == 0 && input.bytes_into_first && factor > 0.0 => {
                    InputQuant::Static(U8Quant { scale: factor, zero_point: 0 })
                }
                _ if input.dynamic_mask >> k & 1 == 1 => InputQuant::Dynamic,
                _ => {
                    let ((lo, hi), c) = (ranges[l], input.calibration[k]);
                    InputQuant::Static(U8Quant::covering(lo * c, hi * c))
                }
            }
        })
        .collect();
    let dynamic = vec![InputQuant::Dynamic; layers.len()];
    let files = [
        (WeightType::F32, to_bytes_as(&saved, WeightType::F32), None),
        (WeightType::Bf16, to_bytes_as(&saved, WeightType::Bf16), None),
        (WeightType::Int8Weights, to_bytes_as(&saved, WeightType::Int8Weights), None),
        (WeightType::Int8, to_bytes_as(&saved, WeightType::Int8), Some(&dynamic[..])),
        (WeightType::Int8, to_bytes_int8(&saved, &static_inputs), Some(&static_inputs[..])),
    ];
    let classes = saved.model.output_dim();
    for (weights, bytes, inputs) in files {
        let what = format!("{weights:?} with inputs {inputs:?}");
        let (dequantised, stored) =
            from_bytes_typed(&bytes).unwrap_or_else(|e| panic!("{what}: the file does not parse: {e}; {input:?}"));
        assert_eq!(stored, weights, "{what}: reads back as {stored:?}; {input:?}");
        let model = infer::Model::from_bytes(&bytes)
            .unwrap_or_else(|e| panic!("{what}: infer::Model::from_bytes rejects the file: {e}; {input:?}"));
        assert_eq!((model.input_len(), model.classes()), (input.input_dim, classes), "{what}: shape; {input:?}");
        let mut scratch = vec![f32::NAN; model.scratch_len()];
        let got = model
            .predict(&input.image, &mut scratch)
            .unwrap_or_else(|e| panic!("{what}: predict: {e}; {input:?}"))
            .to_vec();
        assert_eq!(got.len(), classes, "{what}: predict; {input:?}");
        let e = expected(&dequantised, &input.image, inputs, weights == WeightType::Bf16);
        for j in 0..classes {
            // The reference is one correct execution: outside its own enclosure, the check is wrong.
            assert!(
                (e.lo[j] - 1e-6..=e.hi[j] + 1e-6).contains(&(e.probs[j] as f64)),
                "check bug: the reference's p[{j}] = {} is outside its enclosure {}..{}; {what}; {input:?}",
                e.probs[j],
                e.lo[j],
                e.hi[j]
            );
            assert!(
                (e.lo[j] - PROB_TOLERANCE..=e.hi[j] + PROB_TOLERANCE).contains(&(got[j] as f64)),
                "{what}: p[{j}] = {}, reference {} (enclosure {}..{}, tolerance {PROB_TOLERANCE} beyond it)\n\
                 got       {got:?}\nreference {:?}; {input:?}",
                got[j],
                e.probs[j],
                e.lo[j],
                e.hi[j],
                e.probs
            );
        }
        let (mean, std) = model
            .predict_mc(&input.image, 2, input.seed, &mut scratch)
            .unwrap_or_else(|e| panic!("{what}: predict_mc: {e}; {input:?}"));
        assert_eq!((mean.len(), std.len()), (classes, classes), "{what}: predict_mc; {input:?}");
    }
}
