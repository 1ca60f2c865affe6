//! Exporting a trained model for deployment and measuring what it costs: batch norm folded
//! into the dense layers, weights stored as f32, bf16 or int8 (with u8 inputs, calibrated or
//! dynamic), the error that introduces per layer and on the test split, and the single-image
//! latency of the inference path.

use std::path::Path;

use super::mc::{Calibration, McPrediction, predict_monte_carlo, predict_monte_carlo_infer, predict_split};
use super::run::load_model;
use crate::data::cifar::IMAGE_BYTES;
use crate::data::{Cifar10, Split};
use crate::format::{InputQuant, SavedModel, WeightType, from_bytes_typed, to_bytes, to_bytes_as, to_bytes_int8};
use crate::fsutil::write_atomic;
use crate::infer;
use crate::kernels::int8::U8Quant;
use crate::nn::{Layer, Preprocess, Workspace};
use crate::{Error, Result};

/// The weight error of one dense layer.
#[derive(Clone, Debug)]
pub struct LayerError {
    pub layer: usize,
    pub n_in: usize,
    pub n_out: usize,
    pub max_abs: f32,
    /// ||W_stored - W|| / ||W||.
    pub relative_rms: f64,
}

/// Both models on the test split.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub original: Calibration,
    pub exported: Calibration,
    pub top1_agreement: f64,
}

/// What an export wrote and what it changed.
#[derive(Clone, Debug)]
pub struct ExportReport {
    pub bytes: usize,
    pub f32_bytes: usize,
    pub layers_before: usize,
    pub layers_after: usize,
    /// Floats of scratch memory `infer::Model` needs for this model.
    pub scratch_len: usize,
    pub layer_errors: Vec<LayerError>,
    /// [`WeightType::Int8`]: how each dense layer's input is quantised (by layer index).
    pub input_quant: Vec<(usize, InputQuant)>,
    /// `None` when no data directory was given.
    pub test: Option<Comparison>,
}

/// What to write.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExportOptions {
    pub weights: WeightType,
    /// [`WeightType::Int8`]: calibrate the input ranges on this many images of the training
    /// files (the first ones); `None` quantises each input by its own range.
    pub calibrate: Option<usize>,
}

/// Images per calibration forward pass.
const CALIBRATION_CHUNK: usize = 500;

/// Folds batch norm (and for int8, the input standardisation), writes `out` with the chosen
/// weight type, checks that the inference path reads it, and compares the two models weight
/// by weight and (with `data`) on the test split. bf16 and int8 models are compared through
/// the inference path, which is the arithmetic a device runs.
pub fn export(model: &Path, out: &Path, options: ExportOptions, data: Option<&Cifar10>) -> Result<ExportReport> {
    let saved = load_model(model)?;
    let reference = SavedModel { model: saved.model.fold_batch_norm()?, preprocess: saved.preprocess.clone() };
    let int8 = options.weights == WeightType::Int8;
    if options.calibrate.is_some() && !int8 {
        return Err(Error::config("--calibrate", "only int8 models quantise their inputs (--dtype int8)"));
    }
    let deployed = match (&reference.preprocess, reference.model.layers().first()) {
        // Raw bytes then go straight into the first layer's integer products.
        (Preprocess::Standardise { mean, inv_std }, Some(Layer::Dense(_))) if int8 => SavedModel {
            model: reference.model.fold_standardisation(mean, inv_std)?,
            preprocess: Preprocess::Scale(1.0),
        },
        _ => reference.clone(),
    };
    let inputs = input_quantisation(&deployed, options.calibrate, data)?;
    let bytes = if int8 { to_bytes_int8(&deployed, &inputs) } else { to_bytes_as(&deployed, options.weights) };
    let check = infer::Model::from_bytes(&bytes)
        .map_err(|e| Error::data(out, format!("would be written, but the inference reader rejects it: {e}")))?;
    write_atomic(out, &bytes)?;
    let exported = from_bytes_typed(&bytes)?.0;
    let layer_errors = deployed
        .model
        .layers()
        .iter()
        .zip(exported.model.layers())
        .enumerate()
        .filter_map(|(layer, (a, b))| {
            let (a, b) = (a.as_dense()?, b.as_dense()?);
            let (wa, wb) = (a.weights(&deployed.model.params), b.weights(&exported.model.params));
            let max_abs = wa.iter().zip(wb).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            let err: f64 = wa.iter().zip(wb).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
            let norm: f64 = wa.iter().map(|&x| (x as f64).powi(2)).sum();
            let relative_rms = (err / norm.max(1e-30)).sqrt();
            Some(LayerError { layer, n_in: a.n_in, n_out: a.n_out, max_abs, relative_rms })
        })
        .collect();
    let test = match data {
        None => None,
        Some(data) => {
            let test = data.test_records();
            let before = predict_split(&reference.model, &test, &reference.preprocess);
            let after = if options.weights.narrows_inputs() {
                predict_monte_carlo_infer(&check, &test, 0, 0).map_err(|e| Error::data(out, e.to_string()))?
            } else {
                predict_split(&exported.model, &test, &exported.preprocess)
            };
            Some(Comparison {
                original: before.calibration(),
                exported: after.calibration(),
                top1_agreement: before.top1_agreement(&after),
            })
        }
    };
    let input_quant = if int8 {
        deployed
            .model
            .layers()
            .iter()
            .zip(&inputs)
            .enumerate()
            .filter(|(_, (l, _))| l.as_dense().is_some())
            .map(|(i, (_, q))| (i, *q))
            .collect()
    } else {
        Vec::new()
    };
    Ok(ExportReport {
        bytes: bytes.len(),
        f32_bytes: to_bytes(&reference).len(),
        layers_before: saved.model.layers().len(),
        layers_after: deployed.model.layers().len(),
        scratch_len: check.scratch_len(),
        layer_errors,
        input_quant,
        test,
    })
}

/// How each layer of `saved` quantises its input in an int8 file: a first dense layer
/// after a scaling takes the image bytes exactly (scale = the factor, zero point 0); the
/// others use the range seen on `calibrate` training images, or each input's own range.
fn input_quantisation(saved: &SavedModel, calibrate: Option<usize>, data: Option<&Cifar10>) -> Result<Vec<InputQuant>> {
    let layers = saved.model.layers();
    let mut inputs = vec![InputQuant::Dynamic; layers.len()];
    if let Some(n) = calibrate {
        let data = data.ok_or_else(|| {
            Error::config("--calibrate", "needs the CIFAR-10 training images: pass --data DIR (or set SIMDNN_DATA)")
        })?;
        let train = data.train_records();
        if n == 0 || n > train.len() {
            return Err(Error::config("--calibrate", format!("must be between 1 and {} images, got {n}", train.len())));
        }
        let mut ranges = vec![(f32::INFINITY, f32::NEG_INFINITY); layers.len()];
        let mut ws = Workspace::new(&saved.model, CALIBRATION_CHUNK);
        let (mut x, mut y) = (vec![0f32; CALIBRATION_CHUNK * IMAGE_BYTES], vec![0u8; CALIBRATION_CHUNK]);
        let indices: Vec<u32> = (0..n as u32).collect();
        for chunk in indices.chunks(CALIBRATION_CHUNK) {
            let rows = chunk.len();
            train.fill_batch(chunk, &saved.preprocess, &mut x[..rows * IMAGE_BYTES], &mut y[..rows]);
            for (range, (lo, hi)) in
                ranges.iter_mut().zip(saved.model.input_ranges(&x[..rows * IMAGE_BYTES], rows, &mut ws))
            {
                *range = (range.0.min(lo), range.1.max(hi));
            }
        }
        for ((input, layer), (lo, hi)) in inputs.iter_mut().zip(layers).zip(ranges) {
            if layer.as_dense().is_some() {
                *input = InputQuant::Static(U8Quant::covering(lo, hi));
            }
        }
    }
    if let (Preprocess::Scale(factor), Some(Layer::Dense(_))) = (&saved.preprocess, layers.first()) {
        inputs[0] = InputQuant::Static(U8Quant { scale: *factor, zero_point: 0 });
    }
    Ok(inputs)
}

/// The predictions of the model file `bytes` (named `path` in errors) on `split`, with
/// `samples` MC dropout passes (0: dropout off). Models whose layers narrow their inputs (bf16,
/// int8) run through the inference path, since only it computes what a device does; the
/// others through the batched f32 model (batch norm folded), which computes the same, faster.
pub fn predict_file(path: &Path, bytes: &[u8], split: &Split<'_>, samples: usize, seed: u64) -> Result<McPrediction> {
    let in_file = |e: Error| e.in_file(path.display().to_string());
    let (saved, stored) = from_bytes_typed(bytes).map_err(in_file)?;
    if saved.model.input_dim() != IMAGE_BYTES {
        return Err(Error::Shape(format!(
            "{} takes {} inputs, CIFAR-10 images have {IMAGE_BYTES}",
            path.display(),
            saved.model.input_dim()
        )));
    }
    if stored.narrows_inputs() {
        let model = infer::Model::from_bytes(bytes).map_err(|e| Error::data(path, e.to_string()))?;
        return predict_monte_carlo_infer(&model, split, samples, seed).map_err(|e| Error::data(path, e.to_string()));
    }
    let model = saved.model.fold_batch_norm()?;
    Ok(predict_monte_carlo(&model, split, &saved.preprocess, samples, seed))
}

/// Mean time of one image of `split` (the first 500 at most) through the allocation-free
/// inference path on the calling thread, in microseconds. `path` names the model in errors.
pub fn single_image_latency_us(bytes: &[u8], split: &Split<'_>, path: &Path) -> Result<f64> {
    let model = infer::Model::from_bytes(bytes).map_err(|e| Error::data(path, e.to_string()))?;
    let mut scratch = vec![0f32; model.scratch_len()];
    let n = split.len().min(500);
    let start = std::time::Instant::now();
    for i in 0..n {
        model.predict(split.pixels(i), &mut scratch).map_err(|e| Error::data(path, e.to_string()))?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64)
}
