//! Dropout (Srivastava et al., 2014) and alpha dropout (Klambauer et al., 2017), with Keras's
//! semantics: inverted dropout (kept units scaled by `1 / (1 - rate)` while training), and
//! alpha dropout that sets dropped units to SELU's negative saturation and applies the affine
//! correction that keeps the mean and variance of SELU activations. Both are the identity at
//! inference; both are active in Monte Carlo mode (MC dropout, Gal & Ghahramani, 2016).
//!
//! Masks are seeded per (seed, step, layer, row), so a row's mask does not depend on how the
//! batch is split across threads.

use core::ops::Range;

use crate::kernels::activation::{SELU_ALPHA, SELU_SCALE};
use crate::rng::{seeded, uniform_f32};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropoutKind {
    Standard,
    Alpha,
}

/// A dropout layer over `features` inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Dropout {
    pub features: usize,
    pub rate: f32,
    pub kind: DropoutKind,
}

/// Where a batch's masks come from: rows are numbered from `first_row` within the step.
#[derive(Clone, Copy, Debug, Default)]
pub struct Noise {
    pub seed: u64,
    pub step: u64,
    pub first_row: usize,
}

impl Dropout {
    /// The value a dropped unit takes and the affine correction `(a, b)`: for standard
    /// dropout `(0, 1/(1-rate), 0)`; for alpha dropout Keras's
    /// `alpha' = -lambda alpha`, `a = ((1 - rate)(1 + rate alpha'^2))^-1/2`, `b = -a alpha' rate`.
    fn constants(&self) -> (f32, f32, f32) {
        let rate = self.rate as f64;
        match self.kind {
            DropoutKind::Standard => (0.0, (1.0 / (1.0 - rate)) as f32, 0.0),
            DropoutKind::Alpha => {
                let alpha_p = -(SELU_SCALE as f64) * SELU_ALPHA as f64;
                let a = 1.0 / libm::sqrt((1.0 - rate) * (1.0 + rate * alpha_p * alpha_p));
                (alpha_p as f32, a as f32, (-a * alpha_p * rate) as f32)
            }
        }
    }

    /// Applies dropout to `x` (`[batch, features]`) into `y`, writing into `grad_scale` the
    /// derivative of each output with respect to its input (the backward pass's mask).
    pub fn forward(&self, x: &[f32], y: &mut [f32], grad_scale: &mut [f32], layer: usize, noise: Noise) {
        self.forward_columns(x, y, grad_scale, layer, noise, 0..self.features);
    }

    /// [`Dropout::forward`] for the features `cols` only (`x`, `y`, `grad_scale`: `[batch,
    /// cols.len()]`), with the masks the whole rows get (a tensor-parallel thread's columns).
    pub fn forward_columns(
        &self,
        x: &[f32],
        y: &mut [f32],
        grad_scale: &mut [f32],
        layer: usize,
        noise: Noise,
        cols: Range<usize>,
    ) {
        let f = cols.len();
        if f == 0 {
            return;
        }
        let (dropped_value, a, b) = self.constants();
        for (r, ((xr, yr), gr)) in
            x.chunks_exact(f).zip(y.chunks_exact_mut(f)).zip(grad_scale.chunks_exact_mut(f)).enumerate()
        {
            let row = (noise.first_row + r) as u64;
            let stream = noise.step.wrapping_mul(0x1_0000_0001).wrapping_add((layer as u64) << 48).wrapping_add(row);
            let mut rng = seeded(noise.seed, stream);
            // The row's draws for the features before `cols`.
            (0..cols.start).for_each(|_| _ = uniform_f32(&mut rng));
            for ((&xv, yv), gv) in xr.iter().zip(yr.iter_mut()).zip(gr.iter_mut()) {
                let keep = uniform_f32(&mut rng) >= self.rate;
                if keep {
                    *yv = a * xv + b;
                    *gv = a;
                } else {
                    *yv = a * dropped_value + b;
                    *gv = 0.0;
                }
            }
        }
    }

    /// dL/dx from dL/dy and the mask the forward pass wrote.
    pub fn backward(&self, dy: &[f32], grad_scale: &[f32], dx: &mut [f32]) {
        for ((d, &g), &s) in dx.iter_mut().zip(dy).zip(grad_scale) {
            *d = g * s;
        }
    }
}
