//! Batch normalisation (Ioffe & Szegedy, 2015) with Keras's defaults (momentum 0.99,
//! epsilon 1e-3, learnable gamma and beta), followed by an optional activation so that the
//! notebook's `BatchNormalization(); Activation("elu")` is one layer.
//!
//! Training normalises with the batch's mean and (biased) variance and updates the moving
//! averages, as Keras does; inference uses the moving averages, and is folded into the
//! preceding dense layer by [`super::Sequential::fold_batch_norm`] so that it costs nothing.

use crate::kernels::Activation;
use crate::kernels::scalar::sqrtf;
use crate::kernels::vector::activation_backward_with_bias_grad;

pub const DEFAULT_MOMENTUM: f32 = 0.99;
pub const DEFAULT_EPSILON: f32 = 1e-3;

/// A batch-norm layer over `features` inputs, and where its numbers live: gamma and beta in
/// the model's trainable parameters, the moving mean and variance in its non-trainable state.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm {
    pub features: usize,
    pub activation: Activation,
    pub momentum: f32,
    pub epsilon: f32,
    /// Offsets of gamma then beta (`features` each) in the parameters.
    pub(crate) param_offset: usize,
    /// Offsets of the moving mean then variance (`features` each) in the state.
    pub(crate) state_offset: usize,
}

/// What the training forward pass keeps for the backward pass and the moving averages.
#[derive(Default)]
pub struct BatchStats {
    /// The normalised inputs `[batch, features]`.
    pub(crate) x_hat: alloc::vec::Vec<f32>,
    pub(crate) mean: alloc::vec::Vec<f32>,
    pub(crate) var: alloc::vec::Vec<f32>,
    pub(crate) inv_std: alloc::vec::Vec<f32>,
}

impl BatchNorm {
    pub fn num_params(&self) -> usize {
        2 * self.features
    }

    pub fn num_state(&self) -> usize {
        2 * self.features
    }

    pub fn gamma<'p>(&self, params: &'p [f32]) -> &'p [f32] {
        &params[self.param_offset..self.param_offset + self.features]
    }

    pub fn beta<'p>(&self, params: &'p [f32]) -> &'p [f32] {
        &params[self.param_offset + self.features..self.param_offset + 2 * self.features]
    }

    pub fn moving_mean<'s>(&self, state: &'s [f32]) -> &'s [f32] {
        &state[self.state_offset..self.state_offset + self.features]
    }

    pub fn moving_var<'s>(&self, state: &'s [f32]) -> &'s [f32] {
        &state[self.state_offset + self.features..self.state_offset + 2 * self.features]
    }

    /// Training forward: normalise each feature by the batch's statistics (kept in `stats`),
    /// then `y = act(gamma x_hat + beta)`.
    ///
    /// # Shapes
    /// `x` and `y`: `[batch, features]`.
    pub fn forward_train(&self, params: &[f32], x: &[f32], y: &mut [f32], batch: usize, stats: &mut BatchStats) {
        let f = self.features;
        let n = batch as f32;
        for v in [&mut stats.mean, &mut stats.var, &mut stats.inv_std] {
            v.clear();
            v.resize(f, 0.0);
        }
        stats.x_hat.resize(batch * f, 0.0);
        // Two passes (mean, then squared deviations): no cancellation, and every loop runs
        // along a contiguous row of features, so it vectorises.
        for row in x.chunks_exact(f) {
            for (s, &v) in stats.mean.iter_mut().zip(row) {
                *s += v;
            }
        }
        stats.mean.iter_mut().for_each(|m| *m /= n);
        for row in x.chunks_exact(f) {
            for ((s, &v), &m) in stats.var.iter_mut().zip(row).zip(&stats.mean) {
                *s += (v - m) * (v - m);
            }
        }
        for (var, inv) in stats.var.iter_mut().zip(stats.inv_std.iter_mut()) {
            *var /= n;
            *inv = 1.0 / sqrtf(*var + self.epsilon);
        }
        let (gamma, beta) = (self.gamma(params), self.beta(params));
        for ((row, out), hat) in x.chunks_exact(f).zip(y.chunks_exact_mut(f)).zip(stats.x_hat.chunks_exact_mut(f)) {
            for (((((h, o), &v), &m), &inv), (&g, &b)) in hat
                .iter_mut()
                .zip(out.iter_mut())
                .zip(row)
                .zip(&stats.mean)
                .zip(&stats.inv_std)
                .zip(gamma.iter().zip(beta))
            {
                *h = (v - m) * inv;
                *o = *h * g + b;
            }
        }
        self.activation.forward(y);
    }

    /// Inference forward with the moving averages.
    pub fn forward_inference(&self, params: &[f32], state: &[f32], x: &[f32], y: &mut [f32]) {
        let (scale, shift) = self.inference_affine(params, state);
        y.copy_from_slice(x);
        self.scale_shift_activate(&scale, &shift, y);
    }

    /// `gamma / sqrt(var + eps)` and `beta - mean * that`: inference as one affine map.
    pub fn inference_affine(&self, params: &[f32], state: &[f32]) -> (alloc::vec::Vec<f32>, alloc::vec::Vec<f32>) {
        let (gamma, beta) = (self.gamma(params), self.beta(params));
        let (mean, var) = (self.moving_mean(state), self.moving_var(state));
        let scale: alloc::vec::Vec<f32> =
            gamma.iter().zip(var).map(|(g, v)| g / libm::sqrtf(v + self.epsilon)).collect();
        let shift = beta.iter().zip(mean).zip(&scale).map(|((b, m), s)| b - m * s).collect();
        (scale, shift)
    }

    fn scale_shift_activate(&self, scale: &[f32], shift: &[f32], y: &mut [f32]) {
        for row in y.chunks_exact_mut(self.features) {
            for ((v, s), b) in row.iter_mut().zip(scale).zip(shift) {
                *v = *v * s + b;
            }
        }
        self.activation.forward(y);
    }

    /// Backward pass from the output gradient `dy` (overwritten). Writes dL/dgamma and
    /// dL/dbeta into `grads` and, when given, dL/dx into `dx`.
    ///
    /// With `dz = dy * act'(y)`: `dbeta = sum dz`, `dgamma = sum dz x_hat`, and
    /// `dx = gamma inv_std / N (N dz - dbeta - x_hat dgamma)`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        params: &[f32],
        y: &[f32],
        dy: &mut [f32],
        stats: &BatchStats,
        grads: &mut [f32],
        dx: Option<&mut [f32]>,
        batch: usize,
    ) {
        let f = self.features;
        let (g_gamma, g_beta) = grads[self.param_offset..self.param_offset + 2 * f].split_at_mut(f);
        g_beta.fill(0.0);
        activation_backward_with_bias_grad(self.activation, y, dy, f, g_beta);
        g_gamma.fill(0.0);
        for (dz, hat) in dy.chunks_exact(f).zip(stats.x_hat.chunks_exact(f)) {
            for ((g, d), h) in g_gamma.iter_mut().zip(dz).zip(hat) {
                *g += d * h;
            }
        }
        if let Some(dx) = dx {
            let n = batch as f32;
            // Per feature: gamma inv_std / N, and the two sums the formula subtracts.
            let coef: alloc::vec::Vec<f32> =
                self.gamma(params).iter().zip(&stats.inv_std).map(|(g, inv)| g * inv / n).collect();
            for ((dz, hat), out) in dy.chunks_exact(f).zip(stats.x_hat.chunks_exact(f)).zip(dx.chunks_exact_mut(f)) {
                for (((((o, &d), &h), &c), &sb), &sg) in
                    out.iter_mut().zip(dz).zip(hat).zip(&coef).zip(g_beta.iter()).zip(g_gamma.iter())
                {
                    *o = c * (n * d - sb - h * sg);
                }
            }
        }
    }

    /// Moves the moving averages towards this batch's statistics (Keras:
    /// `moving = moving * momentum + batch * (1 - momentum)`).
    pub fn update_moving(&self, state: &mut [f32], stats: &BatchStats) {
        let f = self.features;
        let m = self.momentum;
        let (mean, var) = state[self.state_offset..self.state_offset + 2 * f].split_at_mut(f);
        for (mv, b) in mean.iter_mut().zip(&stats.mean) {
            *mv = *mv * m + b * (1.0 - m);
        }
        for (vv, b) in var.iter_mut().zip(&stats.var) {
            *vv = *vv * m + b * (1.0 - m);
        }
    }

    /// Folds this layer (inference mode, identity activation) into the dense layer that
    /// feeds it: `BN(x W + b) = x (W diag(s)) + (b s + t)` for `BN(v) = v s + t`. `w` is
    /// `[n_in, features]`.
    pub(crate) fn fold_after(&self, params: &[f32], state: &[f32], w: &mut [f32], b: &mut [f32]) {
        let (scale, shift) = self.inference_affine(params, state);
        for row in w.chunks_exact_mut(self.features) {
            for (v, s) in row.iter_mut().zip(&scale) {
                *v *= s;
            }
        }
        for ((v, s), t) in b.iter_mut().zip(&scale).zip(&shift) {
            *v = *v * s + t;
        }
    }

    /// Folds this layer (inference mode, identity activation) into the dense layer it feeds:
    /// `(x s + t) W + b = x (diag(s) W) + (t W + b)`. `w` is `[features, n_out]`.
    pub(crate) fn fold_before(&self, params: &[f32], state: &[f32], w: &mut [f32], b: &mut [f32]) {
        let (scale, shift) = self.inference_affine(params, state);
        let n_out = b.len();
        for ((row, s), t) in w.chunks_exact_mut(n_out).zip(&scale).zip(&shift) {
            for (bj, v) in b.iter_mut().zip(row.iter_mut()) {
                *bj += t * *v;
                *v *= s;
            }
        }
    }
}
