//! The sequential model: dense, batch-norm and dropout layers ending in a softmax dense
//! layer, one flat vector of trainable parameters (and one of non-trainable state: batch
//! norm's moving averages), and the reusable buffers ([`Workspace`]) that training and
//! inference run in without allocating per batch.

use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use super::batch_norm::{BatchNorm, BatchStats, DEFAULT_EPSILON, DEFAULT_MOMENTUM};
use super::dense::{Dense, ParamsRef};
use super::dropout::{Dropout, DropoutKind, Noise};
use super::init::Initializer;
use crate::kernels::int8::min_max;
use crate::kernels::scalar::sqrtf;
use crate::kernels::softmax::{softmax_cross_entropy, softmax_cross_entropy_grad, softmax_rows};
use crate::kernels::{Activation, Precision};
use crate::rng::seeded;
use crate::{Error, Result};

/// One layer to build.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LayerSpec {
    Dense {
        units: usize,
        activation: Activation,
        init: Initializer,
    },
    /// Batch normalisation, then `activation`.
    BatchNorm {
        activation: Activation,
        momentum: f32,
        epsilon: f32,
    },
    Dropout {
        rate: f32,
    },
    AlphaDropout {
        rate: f32,
    },
}

impl LayerSpec {
    /// Batch normalisation with Keras's momentum and epsilon.
    pub fn batch_norm(activation: Activation) -> Self {
        LayerSpec::BatchNorm { activation, momentum: DEFAULT_MOMENTUM, epsilon: DEFAULT_EPSILON }
    }
}

/// A built layer.
#[derive(Clone, Debug, PartialEq)]
pub enum Layer {
    Dense(Dense),
    BatchNorm(BatchNorm),
    Dropout(Dropout),
}

impl Layer {
    pub fn n_in(&self) -> usize {
        match self {
            Layer::Dense(d) => d.n_in,
            Layer::BatchNorm(b) => b.features,
            Layer::Dropout(d) => d.features,
        }
    }

    pub fn n_out(&self) -> usize {
        match self {
            Layer::Dense(d) => d.n_out,
            Layer::BatchNorm(b) => b.features,
            Layer::Dropout(d) => d.features,
        }
    }

    /// Trainable parameters.
    pub fn num_params(&self) -> usize {
        match self {
            Layer::Dense(d) => d.num_params(),
            Layer::BatchNorm(b) => b.num_params(),
            Layer::Dropout(_) => 0,
        }
    }

    pub fn as_dense(&self) -> Option<&Dense> {
        match self {
            Layer::Dense(d) => Some(d),
            _ => None,
        }
    }
}

/// How a forward pass treats batch norm and dropout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Batch statistics, dropout on.
    Train,
    /// Moving averages, dropout off.
    Eval,
    /// Moving averages, dropout on: MC dropout (batch norm stays in inference mode, unlike
    /// Keras's `training=True` trick, which flips both).
    MonteCarlo,
}

/// Layers applied in order; the last one is dense with softmax, trained with sparse
/// categorical cross-entropy.
#[derive(Clone, Debug, PartialEq)]
pub struct Sequential {
    input_dim: usize,
    layers: Vec<Layer>,
    /// Trainable: dense weights and biases, batch-norm gamma and beta, in layer order.
    pub params: Vec<f32>,
    /// Non-trainable: batch-norm moving means and variances, in layer order.
    pub state: Vec<f32>,
}

impl Sequential {
    /// Builds and initialises the layers; layer `i` draws from its own seeded stream, so
    /// changing one layer's width does not change the others' weights.
    pub fn new(input_dim: usize, specs: &[LayerSpec], seed: u64) -> Result<Self> {
        let mut model = Self::build(input_dim, specs)?;
        for (i, (layer, spec)) in model.layers.iter().zip(specs).enumerate() {
            if let (Layer::Dense(d), LayerSpec::Dense { init, .. }) = (layer, spec) {
                init.fill(&mut model.params[d.weight_range()], d.n_in, d.n_out, &mut seeded(seed, i as u64));
            }
        }
        Ok(model)
    }

    /// The layers with zero weights and biases, gamma 1, beta 0, moving mean 0 and moving
    /// variance 1 (Keras's initial values).
    pub fn build(input_dim: usize, specs: &[LayerSpec]) -> Result<Self> {
        if input_dim == 0 {
            return Err(Error::config("input size", "must be at least 1"));
        }
        match specs.last() {
            None => return Err(Error::config("layers", "a model needs at least one layer")),
            Some(LayerSpec::Dense { activation: Activation::Softmax, .. }) => {}
            Some(other) => {
                return Err(Error::config(
                    "output layer",
                    format!("must be dense with softmax (the loss is sparse categorical cross-entropy), not {other:?}"),
                ));
            }
        }
        let too_big = || Error::config("units", "the model would have more than 2^31 parameters");
        let mut layers = Vec::with_capacity(specs.len());
        let (mut width, mut params, mut state) = (input_dim, 0usize, 0usize);
        for (i, spec) in specs.iter().enumerate() {
            let at = i + 1;
            let layer = match *spec {
                LayerSpec::Dense { units, activation, .. } => {
                    if units == 0 {
                        return Err(Error::config("units", format!("layer {at} has 0 units")));
                    }
                    if activation.is_row_wise() && at != specs.len() {
                        return Err(Error::config(
                            "activation",
                            format!("softmax is only allowed on the output layer, not layer {at}"),
                        ));
                    }
                    let layer = Dense::new(width, units, activation, params);
                    width = units;
                    Layer::Dense(layer)
                }
                LayerSpec::BatchNorm { activation, momentum, epsilon } => {
                    if activation.is_row_wise() {
                        return Err(Error::config(
                            "activation",
                            format!("batch norm (layer {at}) cannot end in softmax"),
                        ));
                    }
                    let valid = (0.0..1.0).contains(&momentum) && epsilon.is_finite() && epsilon > 0.0;
                    if !valid {
                        return Err(Error::config(
                            "batch norm",
                            format!("layer {at}: momentum must be in [0, 1) and epsilon positive"),
                        ));
                    }
                    let layer = BatchNorm {
                        features: width,
                        activation,
                        momentum,
                        epsilon,
                        param_offset: params,
                        state_offset: state,
                    };
                    state = state.checked_add(layer.num_state()).ok_or_else(too_big)?;
                    Layer::BatchNorm(layer)
                }
                LayerSpec::Dropout { rate } | LayerSpec::AlphaDropout { rate } => {
                    if !(0.0..1.0).contains(&rate) {
                        return Err(Error::config(
                            "dropout rate",
                            format!("layer {at}: must be in [0, 1), got {rate}"),
                        ));
                    }
                    let kind = if matches!(spec, LayerSpec::Dropout { .. }) {
                        DropoutKind::Standard
                    } else {
                        DropoutKind::Alpha
                    };
                    Layer::Dropout(Dropout { features: width, rate, kind })
                }
            };
            params = params.checked_add(layer.num_params()).filter(|&p| p <= 1 << 31).ok_or_else(too_big)?;
            layers.push(layer);
        }
        let mut model = Sequential { input_dim, layers, params: vec![0.0; params], state: vec![0.0; state] };
        for layer in &model.layers {
            if let Layer::BatchNorm(b) = layer {
                model.params[b.param_offset..b.param_offset + b.features].fill(1.0);
                model.state[b.state_offset + b.features..b.state_offset + 2 * b.features].fill(1.0);
            }
        }
        Ok(model)
    }

    pub fn input_dim(&self) -> usize {
        self.input_dim
    }

    pub fn output_dim(&self) -> usize {
        self.layers.last().map_or(0, Layer::n_out)
    }

    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }

    /// Trainable parameters (Keras's "trainable params").
    pub fn num_params(&self) -> usize {
        self.params.len()
    }

    /// Non-trainable numbers (Keras's "non-trainable params": moving averages).
    pub fn num_state(&self) -> usize {
        self.state.len()
    }

    pub fn has_batch_norm(&self) -> bool {
        self.layers.iter().any(|l| matches!(l, Layer::BatchNorm(_)))
    }

    /// The first dropout layer: everything before it is deterministic even in Monte Carlo
    /// mode, and can be computed once for many samples.
    pub fn first_dropout(&self) -> Option<usize> {
        self.layers.iter().position(|l| matches!(l, Layer::Dropout(_)))
    }

    /// Class probabilities for a batch (inference mode).
    ///
    /// # Shapes
    /// `x`: `[batch, input_dim]`; returns `[batch, output_dim]`.
    pub fn predict<'w>(&self, x: &[f32], batch: usize, ws: &'w mut Workspace) -> &'w [f32] {
        self.forward_eval(x, batch, ws);
        let out = ws.output_mut(self, batch);
        softmax_rows(out, self.output_dim());
        out
    }

    /// MC dropout: the mean and the standard deviation of the class probabilities over
    /// `samples` stochastic passes (dropout on, batch norm in inference mode), written into
    /// `mean` and `std` (`[batch, output_dim]` each). The layers before the first dropout run
    /// once; only the rest run per sample. Sample `s` draws its masks from `(seed, s)`.
    /// `samples = 0` gives the inference-mode prediction (dropout off) and zero deviation.
    #[allow(clippy::too_many_arguments)]
    pub fn predict_monte_carlo(
        &self,
        x: &[f32],
        batch: usize,
        ws: &mut Workspace,
        samples: usize,
        seed: u64,
        mean: &mut [f32],
        std: &mut [f32],
    ) {
        let n = batch * self.output_dim();
        assert!(mean.len() == n && std.len() == n, "MC output buffers must hold {n} values");
        let start = self.first_dropout().unwrap_or(self.layers.len());
        self.forward_eval(x, batch, ws);
        mean.fill(0.0);
        std.fill(0.0);
        if samples == 0 || start == self.layers.len() {
            // Nothing is random: every sample would be this one.
            let probs = ws.output_mut(self, batch);
            softmax_rows(probs, self.output_dim());
            mean.copy_from_slice(probs);
            return;
        }
        for s in 0..samples {
            self.forward(
                x,
                start,
                batch,
                ws,
                Mode::MonteCarlo,
                Some(Noise { seed, step: s as u64, first_row: 0 }),
                Precision::F32,
                self.params.as_slice().into(),
            );
            let probs = ws.output_mut(self, batch);
            softmax_rows(probs, self.output_dim());
            for ((m, q), &p) in mean.iter_mut().zip(std.iter_mut()).zip(probs.iter()) {
                *m += p;
                *q += p * p;
            }
        }
        let k = samples.max(1) as f32;
        for (m, q) in mean.iter_mut().zip(std.iter_mut()) {
            *m /= k;
            *q = sqrtf((*q / k - *m * *m).max(0.0));
        }
    }

    /// Summed loss and number of correct predictions for a labelled batch (inference mode).
    pub fn evaluate_batch(&self, x: &[f32], labels: &[u8], ws: &mut Workspace) -> (f64, usize) {
        let batch = labels.len();
        self.forward_eval(x, batch, ws);
        softmax_cross_entropy(ws.output_mut(self, batch), self.output_dim(), labels)
    }

    /// Forward and backward pass for a batch in training mode: writes the gradient of the
    /// *mean* loss into `grads` (same layout as `params`) and returns the summed loss and
    /// correct count. Dropout masks come from `noise`.
    pub fn loss_and_grad(&self, x: &[f32], labels: &[u8], ws: &mut Workspace, grads: &mut [f32]) -> (f64, usize) {
        self.loss_and_grad_scaled(x, labels, ws, grads, 1.0 / labels.len().max(1) as f32, StepOptions::default())
    }

    /// As [`Sequential::loss_and_grad`], but the gradient is of `loss_scale * summed loss`:
    /// a shard of a batch split across threads passes `1 / full batch size`, so the shards'
    /// gradients add up to the gradient of the batch's mean loss. `options` lets a
    /// data-parallel caller share work between shards (see [`StepOptions`]).
    pub fn loss_and_grad_scaled(
        &self,
        x: &[f32],
        labels: &[u8],
        ws: &mut Workspace,
        grads: &mut [f32],
        loss_scale: f32,
        options: StepOptions<'_>,
    ) -> (f64, usize) {
        assert_eq!(grads.len(), self.params.len(), "gradient buffer does not match the model");
        let batch = labels.len();
        // With the first layer run by the caller, its output is already in the workspace.
        assert!(
            !options.first_layer_by_caller || matches!(self.layers[0], Layer::Dense(_)),
            "the caller can only run a dense first layer"
        );
        let from = usize::from(options.first_layer_by_caller);
        let params = options.params.unwrap_or(self.params.as_slice().into());
        self.forward(x, from, batch, ws, Mode::Train, Some(options.noise), options.precision, params);
        let n_out = self.output_dim();
        let probs = ws.output_mut(self, batch);
        let (loss, correct) = softmax_cross_entropy(probs, n_out, labels);
        let Workspace { layers: bufs, delta, delta_prev, scratch, .. } = ws;
        let top = bufs.len() - 1;
        delta[..batch * n_out].copy_from_slice(&bufs[top].output[..batch * n_out]);
        softmax_cross_entropy_grad(&mut delta[..batch * n_out], n_out, labels, loss_scale);
        for (l, layer) in self.layers.iter().enumerate().rev() {
            let (before, rest) = bufs.split_at(l);
            let buf = &rest[0];
            let output = &buf.output[..batch * layer.n_out()];
            let dy = &mut delta[..batch * layer.n_out()];
            let dx = (l > 0).then(|| &mut delta_prev[..batch * layer.n_in()]);
            match layer {
                Layer::Dense(d) => {
                    d.backward_activation(output, dy, grads);
                    if l > 0 || !options.first_layer_by_caller {
                        let input = if l == 0 { &x[..batch * d.n_in] } else { &before[l - 1].output[..batch * d.n_in] };
                        d.weight_grad(input, dy, grads, batch, options.precision);
                    }
                    if let Some(dx) = dx {
                        d.input_grad(params, dy, dx, batch, scratch, options.precision);
                    }
                }
                Layer::BatchNorm(b) => b.backward(params.values, output, dy, &buf.stats, grads, dx, batch),
                Layer::Dropout(d) => {
                    if let Some(dx) = dx {
                        d.backward(dy, &buf.mask[..batch * d.features], dx);
                    }
                }
            }
            if l == 0 {
                break;
            }
            core::mem::swap(delta, delta_prev);
        }
        (loss, correct)
    }

    /// Moves every batch-norm layer's moving averages towards the statistics of the batch
    /// the last training forward pass in `ws` saw.
    pub fn update_moving_stats(&mut self, ws: &Workspace) {
        self.update_moving_stats_with(|l| &ws.layers[l].stats);
    }

    /// Moves each batch-norm layer's moving averages towards `stats(l)`, the batch's
    /// statistics for layer `l` (only their mean and variance are read).
    pub(crate) fn update_moving_stats_with<'s>(&mut self, stats: impl Fn(usize) -> &'s BatchStats) {
        for (l, layer) in self.layers.iter().enumerate() {
            if let Layer::BatchNorm(b) = layer {
                b.update_moving(&mut self.state, stats(l));
            }
        }
    }

    /// The same function in inference mode with batch norm folded into dense layers, so that
    /// inference costs no batch-norm work: a batch-norm layer right after a dense layer
    /// without activation is folded into it (and takes over as its activation); one with no
    /// activation right before a dense layer is folded into that. Others stay.
    pub fn fold_batch_norm(&self) -> Result<Sequential> {
        let mut specs: Vec<LayerSpec> = Vec::new();
        // The kept layers' numbers, in order: dense (weights, bias) or batch norm (params, state).
        let mut values: Vec<(Vec<f32>, Vec<f32>)> = Vec::new();
        let mut pending_before: Option<&BatchNorm> = None;
        for (i, layer) in self.layers.iter().enumerate() {
            match layer {
                Layer::Dense(d) => {
                    let (mut w, mut b) = (d.weights(&self.params).to_vec(), d.bias(&self.params).to_vec());
                    if let Some(bn) = pending_before.take() {
                        bn.fold_before(&self.params, &self.state, &mut w, &mut b);
                    }
                    specs.push(LayerSpec::Dense {
                        units: d.n_out,
                        activation: d.activation,
                        init: Initializer::GlorotUniform,
                    });
                    values.push((w, b));
                }
                Layer::BatchNorm(bn) => {
                    let after_linear_dense = matches!(
                        (specs.last(), &self.layers[..i].last()),
                        (Some(LayerSpec::Dense { activation: Activation::Identity, .. }), Some(Layer::Dense(_)))
                    );
                    let before_dense = matches!(self.layers.get(i + 1), Some(Layer::Dense(_)));
                    if let (true, Some(LayerSpec::Dense { activation, .. }), Some((w, b))) =
                        (after_linear_dense, specs.last_mut(), values.last_mut())
                    {
                        bn.fold_after(&self.params, &self.state, w, b);
                        *activation = bn.activation;
                    } else if bn.activation == Activation::Identity && before_dense && pending_before.is_none() {
                        pending_before = Some(bn);
                    } else {
                        specs.push(LayerSpec::BatchNorm {
                            activation: bn.activation,
                            momentum: bn.momentum,
                            epsilon: bn.epsilon,
                        });
                        values.push((
                            self.params[bn.param_offset..bn.param_offset + bn.num_params()].to_vec(),
                            self.state[bn.state_offset..bn.state_offset + bn.num_state()].to_vec(),
                        ));
                    }
                }
                Layer::Dropout(d) => specs.push(match d.kind {
                    DropoutKind::Standard => LayerSpec::Dropout { rate: d.rate },
                    DropoutKind::Alpha => LayerSpec::AlphaDropout { rate: d.rate },
                }),
            }
        }
        let mut folded = Sequential::build(self.input_dim, &specs)?;
        let mut values = values.into_iter();
        for layer in &folded.layers {
            let (target, source) = match layer {
                Layer::Dense(d) => ((d.weight_range(), d.b_offset..d.b_offset + d.n_out), true),
                Layer::BatchNorm(b) => (
                    (b.param_offset..b.param_offset + b.num_params(), b.state_offset..b.state_offset + b.num_state()),
                    false,
                ),
                Layer::Dropout(_) => continue,
            };
            let (first, second) = values.next().ok_or_else(|| Error::format("folding lost a layer"))?;
            folded.params[target.0].copy_from_slice(&first);
            if source {
                folded.params[target.1].copy_from_slice(&second);
            } else {
                folded.state[target.1].copy_from_slice(&second);
            }
        }
        Ok(folded)
    }

    /// The whole forward pass in inference mode, in f32 with the model's parameters.
    fn forward_eval(&self, x: &[f32], batch: usize, ws: &mut Workspace) {
        self.forward(x, 0, batch, ws, Mode::Eval, None, Precision::F32, self.params.as_slice().into());
    }

    /// Runs layers `from..` (reading layer `from - 1`'s output in `ws`, or `x` when `from` is
    /// 0) with the parameters `params`, dense layers multiplying in `precision`; the last
    /// layer's output is left as logits
    /// (softmax is applied by the caller, fused with the loss where there is one).
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &[f32],
        from: usize,
        batch: usize,
        ws: &mut Workspace,
        mode: Mode,
        noise: Option<Noise>,
        precision: Precision,
        params: ParamsRef<'_>,
    ) {
        if from == 0 {
            assert_eq!(x.len(), batch * self.input_dim, "input is not {batch} rows of {}", self.input_dim);
            ws.reserve(self, batch);
        } else {
            assert!(ws.batch_capacity >= batch, "the workspace holds {} rows, not {batch}", ws.batch_capacity);
        }
        for (l, layer) in self.layers.iter().enumerate().skip(from) {
            let (done, rest) = ws.layers.split_at_mut(l);
            let input = if l == 0 { x } else { &done[l - 1].output[..batch * layer.n_in()] };
            let buf = &mut rest[0];
            let out = &mut buf.output[..batch * layer.n_out()];
            match (layer, mode) {
                (Layer::Dense(d), _) => d.forward_with(precision, params, input, out, batch),
                (Layer::BatchNorm(b), Mode::Train) => b.forward_train(params.values, input, out, batch, &mut buf.stats),
                (Layer::BatchNorm(b), _) => b.forward_inference(params.values, &self.state, input, out),
                (Layer::Dropout(_), Mode::Eval) => out.copy_from_slice(input),
                (Layer::Dropout(d), _) => {
                    let noise = noise.unwrap_or_default();
                    d.forward(input, out, &mut buf.mask[..batch * d.features], l, noise)
                }
            }
        }
    }

    /// The smallest and largest value of each layer's input over a batch in inference mode
    /// (what quantising the inputs to 8 bits is calibrated with). NaN is ignored.
    pub fn input_ranges(&self, x: &[f32], batch: usize, ws: &mut Workspace) -> Vec<(f32, f32)> {
        self.forward_eval(x, batch, ws);
        (0..self.layers.len())
            .map(|l| min_max(if l == 0 { x } else { &ws.layers[l - 1].output[..batch * self.layers[l].n_in()] }))
            .collect()
    }

    /// The same function of raw inputs `p` as this model applied to `(p - mean) * inv_std`:
    /// the standardisation folded into the first layer, which must be dense
    /// (`W'[i][j] = inv_std[i] W[i][j]`, `b'[j] = b[j] - sum_i mean[i] inv_std[i] W[i][j]`).
    pub fn fold_standardisation(&self, mean: &[f32], inv_std: &[f32]) -> Result<Sequential> {
        let Some(Layer::Dense(d)) = self.layers.first() else {
            return Err(Error::Shape("folding standardisation needs a dense first layer".into()));
        };
        if mean.len() != d.n_in || inv_std.len() != d.n_in {
            return Err(Error::Shape(format!("standardisation of {} features for {} inputs", mean.len(), d.n_in)));
        }
        let mut folded = self.clone();
        let (w, rest) = folded.params[d.w_offset..].split_at_mut(d.n_in * d.n_out);
        let b = &mut rest[..d.n_out];
        for (i, row) in w.chunks_exact_mut(d.n_out).enumerate() {
            for (bj, wij) in b.iter_mut().zip(row.iter_mut()) {
                *bj -= mean[i] * inv_std[i] * *wij;
                *wij *= inv_std[i];
            }
        }
        Ok(folded)
    }

    /// The range of layer `l`'s trainable parameters.
    pub fn param_range(&self, l: usize) -> Range<usize> {
        let start: usize = self.layers[..l].iter().map(Layer::num_params).sum();
        start..start + self.layers[l].num_params()
    }
}

/// How [`Sequential::loss_and_grad_scaled`] runs a training step.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepOptions<'a> {
    /// The caller runs the first layer, which must be dense: its output for these rows is
    /// already in the workspace ([`Workspace::first_layer_output_mut`]), `x` is not read, and
    /// the first layer's weight gradient is left to the caller (its part of `grads` is
    /// untouched; its bias gradient is written), from dL/dz of the first layer, kept in the
    /// workspace ([`Workspace::first_layer_delta`]). A data-parallel trainer splits the
    /// first layer by input features instead of by rows (see `train::step_gradient`).
    pub first_layer_by_caller: bool,
    /// Where dropout masks come from.
    pub noise: Noise,
    /// How the dense layers' products multiply (the caller's first layer aside).
    pub precision: Precision,
    /// The parameters to read in place of the model's own: a trainer's copy, kept by its
    /// optimiser (`optim::ParamsCopy`), in f32 or rounded to bf16 ([`ParamsRef`]).
    pub params: Option<ParamsRef<'a>>,
}

/// One layer's buffers.
#[derive(Default)]
struct LayerBuffers {
    /// `[batch, n_out]`.
    output: Vec<f32>,
    /// Batch norm: what its backward pass needs.
    stats: BatchStats,
    /// Dropout: d(output)/d(input) per element.
    mask: Vec<f32>,
}

/// Buffers for one batch of activations and gradients, reused across batches.
#[derive(Default)]
pub struct Workspace {
    layers: Vec<LayerBuffers>,
    /// dL/d(output) of the layer being differentiated, and dL/d(input) it produces.
    delta: Vec<f32>,
    delta_prev: Vec<f32>,
    /// The transposed input gradient before it is transposed back (`Dense::input_grad`).
    scratch: Vec<f32>,
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
        if batch <= self.batch_capacity && self.layers.len() == model.layers.len() {
            return;
        }
        // Deltas are layer outputs or, for layers after the first, inputs: both are some n_out.
        let widest = model.layers.iter().map(Layer::n_out).max().unwrap_or(0);
        self.layers = model
            .layers
            .iter()
            .map(|l| LayerBuffers {
                output: vec![0.0; batch * l.n_out()],
                stats: BatchStats::default(),
                mask: if matches!(l, Layer::Dropout(_)) { vec![0.0; batch * l.n_out()] } else { Vec::new() },
            })
            .collect();
        self.delta = vec![0.0; batch * widest];
        self.delta_prev = vec![0.0; batch * widest];
        self.scratch = vec![0.0; batch * widest];
        self.batch_capacity = batch;
    }

    /// Where the first layer's output for `batch` rows goes when the caller computes it
    /// ([`StepOptions::first_layer_by_caller`]); grows the buffers as needed.
    pub fn first_layer_output_mut(&mut self, model: &Sequential, batch: usize) -> &mut [f32] {
        self.reserve(model, batch);
        &mut self.layers[0].output[..batch * model.layers[0].n_out()]
    }

    /// dL/dz of the first layer after a backward pass (`[batch, n_out]` of the first layer).
    pub fn first_layer_delta(&self, model: &Sequential, batch: usize) -> &[f32] {
        &self.delta[..batch * model.layers[0].n_out()]
    }

    fn output_mut(&mut self, model: &Sequential, batch: usize) -> &mut [f32] {
        let n = batch * model.output_dim();
        let last = self.layers.len() - 1;
        &mut self.layers[last].output[..n]
    }
}
