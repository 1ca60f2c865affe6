//! The sequential model: a stack of dense layers ending in softmax, one flat parameter
//! vector, and the reusable activation buffers ([`Workspace`]) that training and inference
//! run in without allocating per batch.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use super::dense::Dense;
use super::init::Initializer;
use crate::kernels::Activation;
use crate::kernels::softmax::{softmax_cross_entropy, softmax_cross_entropy_grad, softmax_rows};
use crate::rng::seeded;
use crate::{Error, Result};

/// One dense layer to build: its width, activation and initialiser.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayerSpec {
    pub units: usize,
    pub activation: Activation,
    pub init: Initializer,
}

/// Dense layers applied in order; the last one uses softmax and is trained with sparse
/// categorical cross-entropy.
#[derive(Clone, Debug, PartialEq)]
pub struct Sequential {
    input_dim: usize,
    layers: Vec<Dense>,
    /// Every layer's weights and bias, in layer order.
    pub params: Vec<f32>,
}

impl Sequential {
    /// Builds and initialises the layers; layer `i` draws from its own seeded stream, so
    /// changing one layer's width does not change the others' weights.
    pub fn new(input_dim: usize, specs: &[LayerSpec], seed: u64) -> Result<Self> {
        let shapes: Vec<_> = specs.iter().map(|s| (s.units, s.activation)).collect();
        let mut model = Self::with_shapes(input_dim, &shapes)?;
        for (i, (layer, spec)) in model.layers.iter().zip(specs).enumerate() {
            let w = &mut model.params[layer.w_offset..layer.b_offset];
            spec.init.fill(w, layer.n_in, layer.n_out, &mut seeded(seed, i as u64));
        }
        Ok(model)
    }

    /// Layers of the given widths and activations, every parameter zero.
    pub fn with_shapes(input_dim: usize, shapes: &[(usize, Activation)]) -> Result<Self> {
        if input_dim == 0 {
            return Err(Error::config("input size", "must be at least 1"));
        }
        let Some(&(_, last)) = shapes.last() else {
            return Err(Error::config("layers", "a model needs at least one layer"));
        };
        if last != Activation::Softmax {
            return Err(Error::config(
                "output activation",
                format!("must be softmax (the loss is sparse categorical cross-entropy), not {last}"),
            ));
        }
        let mut layers = Vec::with_capacity(shapes.len());
        let (mut n_in, mut offset) = (input_dim, 0usize);
        for (i, &(units, activation)) in shapes.iter().enumerate() {
            if units == 0 {
                return Err(Error::config("units", format!("layer {} has 0 units", i + 1)));
            }
            if activation.is_row_wise() && i + 1 != shapes.len() {
                return Err(Error::config(
                    "activation",
                    format!("softmax is only allowed on the output layer, not layer {}", i + 1),
                ));
            }
            let layer = Dense::new(n_in, units, activation, offset);
            offset = n_in
                .checked_mul(units)
                .and_then(|w| w.checked_add(units))
                .and_then(|p| p.checked_add(offset))
                .filter(|&total| total <= 1 << 31)
                .ok_or_else(|| Error::config("units", "the model would have more than 2^31 parameters"))?;
            layers.push(layer);
            n_in = units;
        }
        Ok(Sequential { input_dim, layers, params: vec![0.0; offset] })
    }

    pub fn input_dim(&self) -> usize {
        self.input_dim
    }

    pub fn output_dim(&self) -> usize {
        self.layers.last().map_or(0, |l| l.n_out)
    }

    pub fn layers(&self) -> &[Dense] {
        &self.layers
    }

    pub fn num_params(&self) -> usize {
        self.params.len()
    }

    /// Class probabilities for a batch.
    ///
    /// # Shapes
    /// `x`: `[batch, input_dim]`; returns `[batch, output_dim]`.
    pub fn predict<'w>(&self, x: &[f32], batch: usize, ws: &'w mut Workspace) -> &'w [f32] {
        self.forward(x, batch, ws);
        let out = ws.output_mut(self, batch);
        softmax_rows(out, self.output_dim());
        out
    }

    /// Summed loss and number of correct predictions for a labelled batch.
    pub fn evaluate_batch(&self, x: &[f32], labels: &[u8], ws: &mut Workspace) -> (f64, usize) {
        let batch = labels.len();
        self.forward(x, batch, ws);
        softmax_cross_entropy(ws.output_mut(self, batch), self.output_dim(), labels)
    }

    /// Forward and backward pass for a batch: writes the gradient of the *mean* loss into
    /// `grads` (same layout as `params`) and returns the summed loss and correct count.
    pub fn loss_and_grad(&self, x: &[f32], labels: &[u8], ws: &mut Workspace, grads: &mut [f32]) -> (f64, usize) {
        self.loss_and_grad_scaled(x, labels, ws, grads, 1.0 / labels.len().max(1) as f32, BackwardOptions::default())
    }

    /// As [`Sequential::loss_and_grad`], but the gradient is of `loss_scale * summed loss`:
    /// a shard of a batch split across threads passes `1 / full batch size`, so the shards'
    /// gradients add up to the gradient of the batch's mean loss.
    ///
    /// `options` lets a data-parallel caller share work between shards (see
    /// [`BackwardOptions`]).
    pub fn loss_and_grad_scaled(
        &self,
        x: &[f32],
        labels: &[u8],
        ws: &mut Workspace,
        grads: &mut [f32],
        loss_scale: f32,
        options: BackwardOptions<'_>,
    ) -> (f64, usize) {
        assert_eq!(grads.len(), self.params.len(), "gradient buffer does not match the model");
        let batch = labels.len();
        self.forward(x, batch, ws);
        let n_out = self.output_dim();
        let probs = ws.output_mut(self, batch);
        let (loss, correct) = softmax_cross_entropy(probs, n_out, labels);
        let Workspace { activations, delta, delta_prev, .. } = ws;
        let top = activations.len() - 1;
        delta[..batch * n_out].copy_from_slice(&activations[top][..batch * n_out]);
        softmax_cross_entropy_grad(&mut delta[..batch * n_out], n_out, labels, loss_scale);
        for (l, layer) in self.layers.iter().enumerate().rev() {
            let output = &activations[l][..batch * layer.n_out];
            let dy = &mut delta[..batch * layer.n_out];
            layer.backward_activation(output, dy, grads);
            if l == 0 {
                if !options.defer_first_layer_weights {
                    layer.weight_grad(&x[..batch * layer.n_in], dy, grads, batch);
                }
                break;
            }
            layer.weight_grad(&activations[l - 1][..batch * layer.n_in], dy, grads, batch);
            let dx = &mut delta_prev[..batch * layer.n_in];
            match options.transposed_weights {
                Some(wt) => layer.input_grad_transposed(&wt[layer.weight_range()], dy, dx, batch),
                None => layer.input_grad(&self.params, dy, dx, batch),
            }
            core::mem::swap(delta, delta_prev);
        }
        (loss, correct)
    }

    /// Writes every layer's weights but the first's, transposed (`[n_out, n_in]`), at the
    /// layer's weight offsets in `out` (as long as `params`); the first layer needs no input
    /// gradient. For [`BackwardOptions::transposed_weights`].
    pub fn transpose_weights(&self, out: &mut [f32]) {
        assert_eq!(out.len(), self.params.len(), "transposed weights buffer does not match the model");
        for layer in &self.layers[1..] {
            layer.transpose_weights(&self.params, &mut out[layer.weight_range()]);
        }
    }

    /// Runs every layer; the last one's output is left as logits (softmax is applied by the
    /// caller, fused with the loss where there is one).
    fn forward(&self, x: &[f32], batch: usize, ws: &mut Workspace) {
        assert_eq!(x.len(), batch * self.input_dim, "input is not {batch} rows of {}", self.input_dim);
        ws.reserve(self, batch);
        for (l, layer) in self.layers.iter().enumerate() {
            let (done, rest) = ws.activations.split_at_mut(l);
            let input = if l == 0 { x } else { &done[l - 1][..batch * layer.n_in] };
            layer.forward(&self.params, input, &mut rest[0][..batch * layer.n_out], batch);
        }
    }
}

/// How [`Sequential::loss_and_grad_scaled`] runs its backward pass when the caller splits a
/// batch across threads.
#[derive(Clone, Copy, Debug, Default)]
pub struct BackwardOptions<'a> {
    /// Leave out the first layer's weight gradient (its part of `grads` is untouched) and
    /// keep dL/dz of the first layer in the workspace ([`Workspace::first_layer_delta`]): the
    /// caller computes it once for the whole batch, one large product instead of one per
    /// shard.
    pub defer_first_layer_weights: bool,
    /// The weights transposed ([`Sequential::transpose_weights`]), made once per step and
    /// shared by all shards: the input gradients then read `W^T` in place instead of each
    /// shard repacking it.
    pub transposed_weights: Option<&'a [f32]>,
}

/// Buffers for one batch of activations and gradients, reused across batches.
#[derive(Default)]
pub struct Workspace {
    /// The output of each layer, `[batch, n_out]`.
    activations: Vec<Vec<f32>>,
    /// dL/d(output) of the layer being differentiated, and dL/d(input) it produces.
    delta: Vec<f32>,
    delta_prev: Vec<f32>,
    batch_capacity: usize,
}

impl Workspace {
    pub fn new(model: &Sequential, batch: usize) -> Self {
        let mut ws = Workspace::default();
        ws.reserve(model, batch);
        ws
    }

    /// Grows the buffers to hold `batch` rows (no-op when they already do).
    fn reserve(&mut self, model: &Sequential, batch: usize) {
        if batch <= self.batch_capacity && self.activations.len() == model.layers.len() {
            return;
        }
        // Deltas are layer outputs or, for layers after the first, inputs: both are some n_out.
        let widest = model.layers.iter().map(|l| l.n_out).max().unwrap_or(0);
        self.activations = model.layers.iter().map(|l| vec![0.0; batch * l.n_out]).collect();
        self.delta = vec![0.0; batch * widest];
        self.delta_prev = vec![0.0; batch * widest];
        self.batch_capacity = batch;
    }

    /// dL/dz of the first layer after a backward pass (`[batch, n_out]` of the first layer).
    pub fn first_layer_delta(&self, model: &Sequential, batch: usize) -> &[f32] {
        &self.delta[..batch * model.layers[0].n_out]
    }

    fn output_mut(&mut self, model: &Sequential, batch: usize) -> &mut [f32] {
        let n = batch * model.output_dim();
        let last = self.activations.len() - 1;
        &mut self.activations[last][..n]
    }
}
