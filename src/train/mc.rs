//! Evaluation with MC dropout (Gal & Ghahramani, 2016): many stochastic forward passes with
//! dropout on (batch norm stays in inference mode), averaged; and the metrics that say
//! whether the averaged prediction is better calibrated: negative log-likelihood, expected
//! calibration error and predictive entropy.

use crate::data::Split;
use crate::data::cifar::IMAGE_BYTES;
use crate::infer;
use crate::nn::{Preprocess, Sequential, Workspace};

/// Records per forward pass.
const CHUNK: usize = 500;
/// Bins of the expected calibration error (Guo et al., 2017, use 15).
const ECE_BINS: usize = 15;

/// Metrics of a set of predicted class probabilities against labels.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Calibration {
    pub accuracy: f64,
    /// Mean negative log-likelihood of the true class.
    pub nll: f64,
    /// Expected calibration error over 15 equal-width confidence bins.
    pub ece: f64,
    /// Mean entropy of the predicted distribution, in nats.
    pub mean_entropy: f64,
}

/// The averaged class probabilities of every record and their standard deviation across
/// samples (`[records, classes]` each).
pub struct McPrediction {
    pub classes: usize,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub labels: Vec<u8>,
}

/// Runs `samples` stochastic passes over `split`; `samples = 0` is one pass in inference
/// mode (dropout off). The layers before the first dropout run once per chunk.
pub fn predict_monte_carlo(
    model: &Sequential,
    split: &Split<'_>,
    preprocess: &Preprocess,
    samples: usize,
    seed: u64,
) -> McPrediction {
    use rayon::prelude::*;
    let classes = model.output_dim();
    let n = split.len();
    let (mut mean, mut std, mut labels) = (vec![0f32; n * classes], vec![0f32; n * classes], vec![0u8; n]);
    let indices: Vec<u32> = (0..n as u32).collect();
    // Chunks spread over threads, each with its own buffers, each writing its own rows.
    mean.par_chunks_mut(CHUNK * classes)
        .zip(std.par_chunks_mut(CHUNK * classes))
        .zip(labels.par_chunks_mut(CHUNK))
        .zip(indices.par_chunks(CHUNK))
        .enumerate()
        .for_each_init(
            || (Workspace::new(model, CHUNK), vec![0f32; CHUNK * IMAGE_BYTES]),
            |(ws, x), (c, (((mean, std), labels), chunk))| {
                let rows = chunk.len();
                split.fill_batch(chunk, preprocess, &mut x[..rows * IMAGE_BYTES], labels);
                // Each chunk draws from its own stream: results do not depend on how chunks
                // are spread over threads.
                let chunk_seed = seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                model.predict_monte_carlo(&x[..rows * IMAGE_BYTES], rows, ws, samples, chunk_seed, mean, std);
            },
        );
    McPrediction { classes, mean, std, labels }
}

/// Inference-mode class probabilities of every record of `split` (dropout off; `std` is 0).
pub fn predict_split(model: &Sequential, split: &Split<'_>, preprocess: &Preprocess) -> McPrediction {
    predict_monte_carlo(model, split, preprocess, 0, 0)
}

/// [`predict_monte_carlo`] through the deployable inference path, record by record (chunks
/// spread over threads): how int8 models with u8 inputs are evaluated, since their arithmetic
/// is not the f32 model's. Record `i`'s MC masks come from `(seed, i)`.
pub fn predict_monte_carlo_infer(
    model: &infer::Model<'_>,
    split: &Split<'_>,
    samples: usize,
    seed: u64,
) -> Result<McPrediction, infer::InferError> {
    use rayon::prelude::*;
    let classes = model.classes();
    let n = split.len();
    let (mut mean, mut std, mut labels) = (vec![0f32; n * classes], vec![0f32; n * classes], vec![0u8; n]);
    mean.par_chunks_mut(CHUNK * classes)
        .zip(std.par_chunks_mut(CHUNK * classes))
        .zip(labels.par_chunks_mut(CHUNK))
        .enumerate()
        .try_for_each_init(
            || vec![0f32; model.scratch_len()],
            |scratch, (c, ((mean, std), labels))| {
                for (r, ((m, s), l)) in
                    mean.chunks_exact_mut(classes).zip(std.chunks_exact_mut(classes)).zip(labels.iter_mut()).enumerate()
                {
                    let i = c * CHUNK + r;
                    *l = split.label(i);
                    if samples == 0 {
                        m.copy_from_slice(model.predict(split.pixels(i), scratch)?);
                    } else {
                        let (pm, ps) = model.predict_mc(
                            split.pixels(i),
                            samples,
                            seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                            scratch,
                        )?;
                        m.copy_from_slice(pm);
                        s.copy_from_slice(ps);
                    }
                }
                Ok(())
            },
        )?;
    Ok(McPrediction { classes, mean, std, labels })
}

impl McPrediction {
    /// The fraction of records whose most likely class is the same in both predictions.
    pub fn top1_agreement(&self, other: &McPrediction) -> f64 {
        let argmax = |row: &[f32]| {
            row.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (j, &p)| if p > b.1 { (j, p) } else { b }).0
        };
        let same = self
            .mean
            .chunks_exact(self.classes)
            .zip(other.mean.chunks_exact(other.classes))
            .filter(|(a, b)| argmax(a) == argmax(b))
            .count();
        same as f64 / self.labels.len().max(1) as f64
    }

    /// Accuracy, NLL, ECE and mean entropy of the averaged prediction.
    pub fn calibration(&self) -> Calibration {
        let n = self.labels.len().max(1) as f64;
        let (mut correct, mut nll, mut entropy) = (0usize, 0f64, 0f64);
        let mut bins = [(0usize, 0f64, 0usize); ECE_BINS]; // (count, confidence sum, correct)
        for (row, &label) in self.mean.chunks_exact(self.classes).zip(&self.labels) {
            let (best, confidence) = row
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |acc, (j, &p)| if p > acc.1 { (j, p) } else { acc });
            let hit = best == label as usize;
            correct += usize::from(hit);
            nll -= (row[label as usize] as f64).max(1e-12).ln();
            entropy -= row.iter().map(|&p| if p > 0.0 { p as f64 * (p as f64).ln() } else { 0.0 }).sum::<f64>();
            let bin = ((confidence as f64 * ECE_BINS as f64) as usize).min(ECE_BINS - 1);
            bins[bin].0 += 1;
            bins[bin].1 += confidence as f64;
            bins[bin].2 += usize::from(hit);
        }
        let ece = bins
            .iter()
            .filter(|b| b.0 > 0)
            .map(|&(count, conf, hits)| (count as f64 / n) * (hits as f64 / count as f64 - conf / count as f64).abs())
            .sum();
        Calibration { accuracy: correct as f64 / n, nll: nll / n, ece, mean_entropy: entropy / n }
    }

    /// CSV: `index,label,p0..,std0..` (one line per record).
    pub fn to_csv(&self) -> String {
        use std::fmt::Write;
        let mut out = String::from("index,label");
        for j in 0..self.classes {
            let _ = write!(out, ",p{j}");
        }
        for j in 0..self.classes {
            let _ = write!(out, ",std{j}");
        }
        out.push('\n');
        for (i, ((m, s), l)) in
            self.mean.chunks_exact(self.classes).zip(self.std.chunks_exact(self.classes)).zip(&self.labels).enumerate()
        {
            let _ = write!(out, "{i},{l}");
            for v in m.iter().chain(s) {
                let _ = write!(out, ",{v}");
            }
            out.push('\n');
        }
        out
    }
}
