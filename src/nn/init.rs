//! Weight initialisers with Keras's definitions (`VarianceScaling`): a scale over a fan,
//! drawn from a truncated normal or a uniform distribution. Biases start at zero.

use crate::kernels::scalar::sqrt;
use crate::rng::{Xoshiro, normal, uniform_f64};

/// He (scale 2, fan-in), LeCun (scale 1, fan-in) and Glorot (scale 1, fan-average), each
/// normal or uniform.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Initializer {
    HeNormal,
    HeUniform,
    LecunNormal,
    LecunUniform,
    GlorotNormal,
    GlorotUniform,
}

/// Standard deviation of a unit normal truncated to [-2, 2]: Keras divides by it so the
/// truncated draw keeps the intended variance.
const TRUNCATED_NORMAL_STD: f64 = 0.879_625_661_034_239_8;

impl Initializer {
    pub const NAMES: &'static str = "he_normal, he_uniform, lecun_normal, lecun_uniform, glorot_normal, glorot_uniform";

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "he_normal" => Initializer::HeNormal,
            "he_uniform" => Initializer::HeUniform,
            "lecun_normal" => Initializer::LecunNormal,
            "lecun_uniform" => Initializer::LecunUniform,
            "glorot_normal" | "xavier_normal" => Initializer::GlorotNormal,
            "glorot_uniform" | "xavier_uniform" => Initializer::GlorotUniform,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Initializer::HeNormal => "he_normal",
            Initializer::HeUniform => "he_uniform",
            Initializer::LecunNormal => "lecun_normal",
            Initializer::LecunUniform => "lecun_uniform",
            Initializer::GlorotNormal => "glorot_normal",
            Initializer::GlorotUniform => "glorot_uniform",
        }
    }

    /// The target variance of each weight of a `fan_in x fan_out` matrix.
    pub fn variance(self, fan_in: usize, fan_out: usize) -> f64 {
        let (scale, fan) = match self {
            Initializer::HeNormal | Initializer::HeUniform => (2.0, fan_in as f64),
            Initializer::LecunNormal | Initializer::LecunUniform => (1.0, fan_in as f64),
            Initializer::GlorotNormal | Initializer::GlorotUniform => (1.0, (fan_in + fan_out) as f64 / 2.0),
        };
        scale / fan.max(1.0)
    }

    /// Fills `weights` (`fan_in x fan_out`).
    pub fn fill(self, weights: &mut [f32], fan_in: usize, fan_out: usize, rng: &mut Xoshiro) {
        let variance = self.variance(fan_in, fan_out);
        match self {
            Initializer::HeNormal | Initializer::LecunNormal | Initializer::GlorotNormal => {
                let std = sqrt(variance) / TRUNCATED_NORMAL_STD;
                for w in weights {
                    // Redraw outside two standard deviations, as tf.random.truncated_normal.
                    let z = loop {
                        let z = normal(rng);
                        if z.abs() <= 2.0 {
                            break z;
                        }
                    };
                    *w = (z * std) as f32;
                }
            }
            Initializer::HeUniform | Initializer::LecunUniform | Initializer::GlorotUniform => {
                let limit = sqrt(3.0 * variance);
                for w in weights {
                    *w = ((2.0 * uniform_f64(rng) - 1.0) * limit) as f32;
                }
            }
        }
    }
}
