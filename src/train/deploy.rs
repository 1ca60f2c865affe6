//! Exporting a trained model for deployment and measuring what it costs: batch norm folded
//! into the dense layers, weights stored as f32, bf16 or int8, the error that introduces per
//! layer and on the test split, and the single-image latency of the inference path.

use std::path::Path;

use super::mc::{Calibration, predict_split};
use super::run::load_model;
use crate::data::{Cifar10, Split};
use crate::format::{SavedModel, WeightType, from_bytes_typed, to_bytes, to_bytes_as};
use crate::fsutil::write_atomic;
use crate::infer;
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
    /// `None` when no data directory was given.
    pub test: Option<Comparison>,
}

/// Folds batch norm, writes `out` with `weights`, checks that the inference path reads it,
/// and compares the two models weight by weight and (with `data`) on the test split.
pub fn export(model: &Path, out: &Path, weights: WeightType, data: Option<&Cifar10>) -> Result<ExportReport> {
    let saved = load_model(model)?;
    let folded = SavedModel { model: saved.model.fold_batch_norm()?, preprocess: saved.preprocess.clone() };
    let bytes = to_bytes_as(&folded, weights);
    write_atomic(out, &bytes)?;
    let check = infer::Model::from_bytes(&bytes)
        .map_err(|e| Error::data(out, format!("written, but the inference reader rejects it: {e}")))?;
    let exported = from_bytes_typed(&bytes)?.0;
    let layer_errors = folded
        .model
        .layers()
        .iter()
        .zip(exported.model.layers())
        .enumerate()
        .filter_map(|(layer, (a, b))| {
            let (a, b) = (a.as_dense()?, b.as_dense()?);
            let (wa, wb) = (a.weights(&folded.model.params), b.weights(&exported.model.params));
            let max_abs = wa.iter().zip(wb).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            let err: f64 = wa.iter().zip(wb).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
            let norm: f64 = wa.iter().map(|&x| (x as f64).powi(2)).sum();
            let relative_rms = (err / norm.max(1e-30)).sqrt();
            Some(LayerError { layer, n_in: a.n_in, n_out: a.n_out, max_abs, relative_rms })
        })
        .collect();
    let test = data.map(|data| {
        let test = data.test_records();
        let before = predict_split(&folded.model, &test, &folded.preprocess);
        let after = predict_split(&exported.model, &test, &exported.preprocess);
        Comparison {
            original: before.calibration(),
            exported: after.calibration(),
            top1_agreement: before.top1_agreement(&after),
        }
    });
    Ok(ExportReport {
        bytes: bytes.len(),
        f32_bytes: to_bytes(&folded).len(),
        layers_before: saved.model.layers().len(),
        layers_after: folded.model.layers().len(),
        scratch_len: check.scratch_len(),
        layer_errors,
        test,
    })
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
