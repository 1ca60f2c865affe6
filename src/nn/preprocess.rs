//! How pixel bytes become network inputs. Stored with the model, so evaluation and
//! inference apply exactly what training applied.

use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use crate::kernels::vector::{bytes_to_f32_scaled, bytes_to_f32_standardised};

#[derive(Clone, Debug, PartialEq)]
pub enum Preprocess {
    /// `x * factor` (the notebook's `x / 255` is `Scale(1/255)`).
    Scale(f32),
    /// `(x - mean[i]) * inv_std[i]` per feature.
    Standardise { mean: Vec<f32>, inv_std: Vec<f32> },
}

impl Preprocess {
    /// The notebook's `x / 255`.
    pub const UNIT_SCALE: Preprocess = Preprocess::Scale(1.0 / 255.0);

    /// Per-feature mean and standard deviation of `images` (each `features` bytes), in one
    /// pass with f64 sums. `None` when there are no images.
    pub fn standardise_from_images<'a>(images: impl Iterator<Item = &'a [u8]>, features: usize) -> Option<Self> {
        let mut sum = vec![0f64; features];
        let mut sum_sq = vec![0f64; features];
        let mut n = 0usize;
        for image in images {
            for ((s, q), &p) in sum.iter_mut().zip(sum_sq.iter_mut()).zip(image) {
                let p = p as f64;
                *s += p;
                *q += p * p;
            }
            n += 1;
        }
        if n == 0 {
            return None;
        }
        let n = n as f64;
        let mean = sum.iter().map(|s| (s / n) as f32).collect();
        let inv_std = sum
            .iter()
            .zip(&sum_sq)
            .map(|(s, q)| {
                let var = (q / n - (s / n) * (s / n)).max(0.0);
                // A constant feature would divide by zero: floor the deviation as Keras does.
                (1.0 / libm::sqrt(var).max(1e-7)) as f32
            })
            .collect();
        Some(Preprocess::Standardise { mean, inv_std })
    }

    /// Converts one image's bytes into `out`.
    pub fn apply(&self, pixels: &[u8], out: &mut [f32]) {
        self.apply_features(pixels, out, 0..pixels.len());
    }

    /// [`Preprocess::apply`] to the features `features` of `pixels` only, into `out`
    /// (`features.len()` long).
    pub fn apply_features(&self, pixels: &[u8], out: &mut [f32], features: Range<usize>) {
        let pixels = &pixels[features.clone()];
        match self {
            Preprocess::Scale(factor) => bytes_to_f32_scaled(pixels, out, *factor),
            Preprocess::Standardise { mean, inv_std } => {
                bytes_to_f32_standardised(pixels, out, &mean[features.clone()], &inv_std[features])
            }
        }
    }
}
