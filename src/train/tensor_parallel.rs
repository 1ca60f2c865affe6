//! The tensor-parallel training step ([`Parallelism::Tensor`](super::Parallelism)): every
//! thread takes the whole batch through every layer, for its own block of each layer's units.
//!
//! Thread `t` of `T` holds rows `R_t` of every weight matrix (for the first layer, a block of
//! the input features, as in the data-parallel step) and the columns `C_t` of every layer's
//! output, `R_t` of a layer being `C_t` of the layer before. Forward, it multiplies its
//! columns of the layer's input by its rows of the weights, a partial product of the whole
//! output; the threads trade the blocks of their partial products (thread `s` receives every
//! `[:, C_s]`), and each sums its columns, adds the bias and applies the activation. Every
//! thread sums the output layer's partial products and computes the loss. Backward, each
//! thread takes dL/dz for its columns, the threads trade them so each has all of dL/dz, and
//! each computes its rows of the weight gradient and its columns of dL/dx. Dropout and batch
//! norm work column by column, so each thread runs them on its own columns; batch norm's
//! statistics are per column over the batch, which each thread has whole, and the moving
//! averages move with the threads' statistics gathered.
//!
//! So the weights, their gradient and the optimiser's state stay with the thread that owns
//! them: what moves between cores is one `[batch, width / T]` block per layer and direction
//! (8a: 41 rounds of 6 KB per step), where the data-parallel step moves every hidden layer's
//! gradient and weights. For that, each thread's parameters must also lie together in
//! memory: with each layer's rows interleaved between the threads (the model's layout), the
//! cores' prefetchers pull in each other's rows at every boundary, and the optimiser alone
//! took 400 us per step with the vCPUs on different dies (270 us data-parallel, 80-100 us
//! with this layout). So for an epoch the trainer moves the parameters, and the optimiser's
//! per-parameter state, into thread-major order ([`Layout`]), and back at its end.

use std::ops::Range;

use super::Batch;
use crate::kernels::bf16::{Bf16Kernel, round_to_bf16_with};
use crate::kernels::gemm::{Blocking, Epilogue, MatMut, MatRef};
use crate::kernels::gemm_bf16::{Bf16Ref, Operand};
use crate::kernels::softmax::{softmax_cross_entropy, softmax_cross_entropy_grad};
use crate::kernels::vector::activation_backward_with_bias_grad;
use crate::kernels::vector::dot;
use crate::kernels::{Activation, Precision};
use crate::nn::batch_norm::{BatchNorm, BatchStats};
use crate::nn::{Dense, Layer, Noise, Sequential};
use crate::optim::{Gradient, Optimizer, Owners, Params, ParamsCopy};
use crate::parallel::{Exchange, Member, map_parts};
use crate::{Error, Result};

/// Block `t` of `0..n` cut into `parts` contiguous blocks.
fn block(n: usize, t: usize, parts: usize) -> Range<usize> {
    n * t / parts..n * (t + 1) / parts
}

/// Thread-major order of a model's parameters: thread 0's weight rows and bias block of every
/// layer (batch norm: its blocks of gamma and beta), in layer order, then thread 1's, and so on.
struct Layout {
    /// The ranges of the model's parameter vector, in thread-major order.
    segments: Vec<Range<usize>>,
    /// Per thread and layer: where its weight rows and its bias block (batch norm: gamma's
    /// and beta's blocks) start, thread-major.
    blocks: Vec<Vec<(usize, usize)>>,
    /// Where each thread's parameters end, thread-major.
    thread_ends: Vec<usize>,
}

impl Layout {
    fn new(layers: &[Layer], threads: usize) -> Self {
        let (mut segments, mut blocks, mut thread_ends, mut at) = (Vec::new(), Vec::new(), Vec::new(), 0);
        for t in 0..threads {
            let mut thread_blocks = Vec::with_capacity(layers.len());
            for layer in layers {
                // The thread's two runs of the layer's parameters.
                let [first, second] = match layer {
                    Layer::Dense(d) => {
                        let (weights, bias) = (d.weight_range().start, d.weight_range().end);
                        let (rows, cols) = (block(d.n_in, t, threads), block(d.n_out, t, threads));
                        [
                            weights + rows.start * d.n_out..weights + rows.end * d.n_out,
                            bias + cols.start..bias + cols.end,
                        ]
                    }
                    // Gamma's block then beta's, as `BatchNorm` reads them (see `Shared::batch_norm`).
                    Layer::BatchNorm(bn) => {
                        let (cols, beta) = (block(bn.features, t, threads), bn.param_offset + bn.features);
                        [bn.param_offset + cols.start..bn.param_offset + cols.end, beta + cols.start..beta + cols.end]
                    }
                    Layer::Dropout(_) => [0..0, 0..0],
                };
                thread_blocks.push((at, at + first.len()));
                at += first.len() + second.len();
                segments.extend([first, second]);
            }
            blocks.push(thread_blocks);
            thread_ends.push(at);
        }
        Layout { segments, blocks, thread_ends }
    }

    /// `canonical` (the model's order, `per_param` values per parameter) in thread-major order.
    fn to_thread_major<T: Copy>(&self, canonical: &[T], per_param: usize) -> Vec<T> {
        let mut out = Vec::with_capacity(canonical.len());
        for s in &self.segments {
            out.extend_from_slice(&canonical[s.start * per_param..s.end * per_param]);
        }
        out
    }

    /// The inverse of [`Layout::to_thread_major`], into `canonical`.
    fn to_canonical<T: Copy>(&self, thread_major: &[T], per_param: usize, canonical: &mut [T]) {
        let mut at = 0;
        for s in &self.segments {
            let len = s.len() * per_param;
            canonical[s.start * per_param..][..len].copy_from_slice(&thread_major[at..at + len]);
            at += len;
        }
    }
}

/// The parameters, optimiser state and buffers of tensor-parallel steps, for one epoch.
pub(super) struct TensorParallel {
    threads: Vec<ThreadBuffers>,
    exchange: Exchange,
    layout: Layout,
    /// The parameters in thread-major order.
    params: Vec<f32>,
    /// In bf16, the parameters rounded, which the products read (kept by the optimiser, as
    /// `optim::ParamsCopy::Bf16`).
    rounded: Option<Vec<u16>>,
    /// The gradient, thread-major.
    grads: Vec<f32>,
    /// Per batch-norm layer, the last batch's statistics of all its columns (gathered from
    /// the threads' for the moving averages).
    batch_stats: Vec<BatchStats>,
}

/// One thread's buffers.
struct ThreadBuffers {
    /// `[batch, this thread's input features]`, converted.
    inputs: Vec<f32>,
    /// Per layer but the last, `[batch, this thread's columns]` of its output.
    outputs: Vec<Vec<f32>>,
    /// Per dropout layer, `[batch, this thread's columns]`: d(output)/d(input) (empty for
    /// the other layers).
    masks: Vec<Vec<f32>>,
    /// Per batch-norm layer, this thread's columns' batch statistics (empty for the others).
    stats: Vec<BatchStats>,
    /// `[batch, widest layer]`: this thread's partial product of a layer's output.
    partial: Vec<f32>,
    /// `[batch, widest layer]`: the output layer's logits, then dL/dz of the layer being
    /// differentiated, all columns.
    dz: Vec<f32>,
    /// `[batch, widest block]`: dL/d(output) of the layer being differentiated for this
    /// thread's columns, and the dL/dx it produces.
    delta: Vec<f32>,
    delta_prev: Vec<f32>,
    /// The transposed input gradient (`Dense::input_grad_from`).
    scratch: Vec<f32>,
    /// `[widest layer]`: the column sums of a dL/dz (`Shared::input_norm_grads`).
    column_sums: Vec<f32>,
}

impl TensorParallel {
    /// Why a model cannot take these steps on `threads` threads, if it cannot: they need two
    /// threads or more, the last layer dense and every layer at least `threads` units wide.
    /// (Batch norm is one of the layers that suit them best: each thread has every row of
    /// the batch for its columns, so their statistics.)
    pub(super) fn unsupported(model: &Sequential, threads: usize) -> Option<String> {
        let layers = model.layers();
        let narrowest = layers.iter().map(|l| l.n_in().min(l.n_out())).min().unwrap_or(0);
        if threads < 2 {
            Some(format!("they need two threads or more, and this run has {threads}"))
        } else if !matches!(layers.last(), Some(Layer::Dense(_))) {
            Some("they need a dense output layer".into())
        } else if narrowest < threads {
            Some(format!(
                "they need every layer at least as wide as the thread count ({threads}); the narrowest has {narrowest}"
            ))
        } else {
            None
        }
    }

    /// Starts an epoch of tensor-parallel steps on `threads` threads for batches of up to
    /// `batch` rows: takes the model's parameters and `optimizer`'s state into thread-major
    /// order (until [`TensorParallel::finish`]). `model` must be
    /// [supported](TensorParallel::supports).
    pub(super) fn start(
        model: &Sequential,
        optimizer: &mut dyn Optimizer,
        precision: Precision,
        batch: usize,
        threads: usize,
    ) -> Result<Self> {
        let layers = model.layers();
        let layout = Layout::new(layers, threads);
        reorder_optimizer_state(optimizer, model.num_params(), |slots, per| layout.to_thread_major(slots, per))?;
        let params = layout.to_thread_major(&model.params, 1);
        let rounded = (precision == Precision::Bf16).then(|| {
            let mut rounded = vec![0; params.len()];
            round_to_bf16_with(Bf16Kernel::detect(), &params, &mut rounded);
            rounded
        });
        let widest = layers.iter().map(Layer::n_out).max().unwrap_or(0);
        let widest_block = layers.iter().map(|l| l.n_out().div_ceil(threads)).max().unwrap_or(0);
        let own = |l: &Layer, t| vec![0.0; batch * block(l.n_out(), t, threads).len()];
        let buffers = (0..threads)
            .map(|t| ThreadBuffers {
                inputs: vec![0.0; batch * block(layers[0].n_in(), t, threads).len()],
                outputs: layers[..layers.len() - 1].iter().map(|l| own(l, t)).collect(),
                masks: layers
                    .iter()
                    .map(|l| if matches!(l, Layer::Dropout(_)) { own(l, t) } else { Vec::new() })
                    .collect(),
                stats: layers.iter().map(|_| BatchStats::default()).collect(),
                partial: vec![0.0; batch * widest],
                dz: vec![0.0; batch * widest],
                delta: vec![0.0; batch * widest_block],
                delta_prev: vec![0.0; batch * widest_block],
                scratch: vec![0.0; batch * widest_block],
                column_sums: vec![0.0; widest],
            })
            .collect();
        Ok(TensorParallel {
            threads: buffers,
            exchange: Exchange::new(threads, batch * widest),
            grads: vec![0.0; params.len()],
            batch_stats: layers.iter().map(|_| BatchStats::default()).collect(),
            params,
            rounded,
            layout,
        })
    }

    /// Ends the epoch: the parameters and the optimiser's state back in the model's order.
    pub(super) fn finish(self, model: &mut Sequential, optimizer: &mut dyn Optimizer) -> Result<()> {
        self.layout.to_canonical(&self.params, 1, &mut model.params);
        reorder_optimizer_state(optimizer, model.num_params(), |slots, per| {
            let mut canonical = slots.to_vec();
            self.layout.to_canonical(slots, per, &mut canonical);
            canonical
        })
    }

    /// One step's gradient of the mean loss over `batch` (whose labels are `labels`, whose
    /// dropout masks come from `noise`), the products multiplying in `precision`. Returns the
    /// batch's summed loss and correct count.
    pub(super) fn gradient(
        &mut self,
        model: &Sequential,
        batch: Batch<'_>,
        labels: &[u8],
        noise: Noise,
        precision: Precision,
    ) -> (f64, usize) {
        let layers = model.layers();
        let parts = self.threads.len();
        // Each thread's part of the gradient, cut per layer into its weight rows and bias
        // (batch norm: gamma and beta, then nothing; dropout: nothing).
        let mut rest = &mut self.grads[..];
        let mut owned: Vec<Vec<&mut [f32]>> = Vec::with_capacity(parts);
        for t in 0..parts {
            let mut runs = Vec::with_capacity(2 * layers.len());
            for layer in layers {
                let (w_len, b_len) = match layer {
                    Layer::Dense(d) => (block(d.n_in, t, parts).len() * d.n_out, block(d.n_out, t, parts).len()),
                    // Gamma's and beta's blocks in one run, as `BatchNorm::backward` writes them.
                    Layer::BatchNorm(bn) => (2 * block(bn.features, t, parts).len(), 0),
                    Layer::Dropout(_) => (0, 0),
                };
                let (w, tail) = std::mem::take(&mut rest).split_at_mut(w_len);
                let (b, tail) = tail.split_at_mut(b_len);
                runs.extend([w, b]);
                rest = tail;
            }
            owned.push(runs);
        }
        let shared = Shared {
            parts,
            input_norm: matches!(layers, [Layer::BatchNorm(bn), Layer::Dense(_), ..] if bn.activation == Activation::Identity),
            layers,
            noise,
            params: &self.params,
            rounded: self.rounded.as_deref(),
            blocks: &self.layout.blocks,
            precision,
            labels,
        };
        let exchange = &self.exchange;
        let tasks: Vec<_> = self.threads.iter_mut().zip(owned).enumerate().collect();
        let results =
            map_parts(tasks, |(t, (buffers, grads))| shared.run(t, buffers, batch, grads, exchange.member(t)));
        results[0]
    }

    /// Moves the model's batch-norm moving averages towards the statistics of the batch of
    /// the last [`TensorParallel::gradient`].
    pub(super) fn update_moving_stats(&mut self, model: &mut Sequential) {
        let parts = self.threads.len();
        for (l, layer) in model.layers().iter().enumerate() {
            if let Layer::BatchNorm(bn) = layer {
                let all = &mut self.batch_stats[l];
                all.mean.clear();
                all.var.clear();
                for t in 0..parts {
                    debug_assert_eq!(self.threads[t].stats[l].mean.len(), block(bn.features, t, parts).len());
                    all.mean.extend_from_slice(&self.threads[t].stats[l].mean);
                    all.var.extend_from_slice(&self.threads[t].stats[l].var);
                }
            }
        }
        model.update_moving_stats_with(|l| &self.batch_stats[l]);
    }

    /// The optimiser's step on the gradient of [`TensorParallel::gradient`], each thread
    /// updating its own parameters (and their rounded copy, in bf16).
    pub(super) fn update(&mut self, optimizer: &mut dyn Optimizer, lr: f32) {
        let owners = Owners::Runs { threads: self.threads.len(), ends: &self.layout.thread_ends };
        let gradient = Gradient { first: &self.grads, others: &[], summed_from: self.grads.len(), owners };
        let copy = self.rounded.as_deref_mut().map(ParamsCopy::Bf16);
        optimizer.apply(Params { values: &mut self.params, copy }, gradient, lr);
    }
}

/// Reorders an optimiser's per-parameter state (`slots.len() / n` values per parameter) with
/// `reorder(slots, per_param)`.
fn reorder_optimizer_state(
    optimizer: &mut dyn Optimizer,
    n: usize,
    reorder: impl FnOnce(&[f32], usize) -> Vec<f32>,
) -> Result<()> {
    let mut state = optimizer.state();
    if state.slots.is_empty() {
        return Ok(());
    }
    if n == 0 || !state.slots.len().is_multiple_of(n) {
        return Err(Error::Shape(format!("optimizer state of {} values for {n} parameters", state.slots.len())));
    }
    state.slots = reorder(&state.slots, state.slots.len() / n);
    optimizer.restore(&state)
}

/// What every thread's share of a step reads.
struct Shared<'a> {
    parts: usize,
    /// Whether the model normalises its inputs (batch norm without activation) right before
    /// the first dense layer, as the notebook's 8c does: see `Shared::input_norm_grads`.
    input_norm: bool,
    layers: &'a [Layer],
    noise: Noise,
    /// Thread-major, as [`Layout`].
    params: &'a [f32],
    rounded: Option<&'a [u16]>,
    blocks: &'a [Vec<(usize, usize)>],
    precision: Precision,
    labels: &'a [u8],
}

impl Shared<'_> {
    /// Dense layer `l`.
    fn dense(&self, l: usize) -> &Dense {
        self.layers[l].as_dense().expect("parameters belong to dense layers")
    }

    /// Thread `t`'s weight rows of dense layer `l` as its products read them.
    fn weights(&self, t: usize, l: usize) -> Operand<'_> {
        let d = self.dense(l);
        let rows = block(d.n_in, t, self.parts).len();
        let span = self.blocks[t][l].0..self.blocks[t][l].0 + rows * d.n_out;
        match (self.precision, self.rounded) {
            (Precision::Bf16, Some(rounded)) => Bf16Ref::new(&rounded[span], rows, d.n_out).into(),
            _ => MatRef::new(&self.params[span], rows, d.n_out).into(),
        }
    }

    /// Batch-norm layer `l` (`bn`) for thread `t`'s columns alone, and the parameters it reads:
    /// the thread's blocks of gamma and beta, one after the other in the thread-major
    /// parameters as in a batch-norm layer's. (Its `state_offset` means nothing: the moving
    /// averages move with the threads' statistics gathered, `update_moving_stats`.)
    fn batch_norm(&self, bn: &BatchNorm, t: usize, l: usize) -> (BatchNorm, &[f32]) {
        let features = block(bn.features, t, self.parts).len();
        let columns = BatchNorm { features, param_offset: 0, state_offset: 0, ..bn.clone() };
        (columns, &self.params[self.blocks[t][l].0..][..2 * features])
    }

    /// The input batch norm's gradient (`norm_grads`: thread `t`'s gamma then beta blocks)
    /// and the first dense layer's weight gradient (`grad`: thread `t`'s rows), from `grad`
    /// holding `g = x_hat^T dz` for that layer's `dz`, without the dense layer's dL/dx, which
    /// the standard way needs and which is an eighth of an 8c step (`[batch, width] x
    /// [width, thread's inputs]`). With `y = gamma x_hat + beta` the dense layer's input,
    /// `W` its weights and `s` the column sums of `dz`: dL/dy = dz W^T, so `dbeta_j = sum_k
    /// W_jk s_k`, `dgamma_j = sum_k W_jk g_jk`, and the weight gradient `y^T dz` is `gamma_j
    /// g_jk + beta_j s_k`.
    fn input_norm_grads(&self, t: usize, dz: &[f32], grad: &mut [f32], norm_grads: &mut [f32], sums: &mut [f32]) {
        let Layer::BatchNorm(bn) = &self.layers[0] else { unreachable!("input_norm: layer 0 is batch norm") };
        let (_, params) = self.batch_norm(bn, t, 0);
        let width = self.dense(1).n_out;
        let (gamma, beta) = params.split_at(params.len() / 2);
        let (d_gamma, d_beta) = norm_grads.split_at_mut(gamma.len());
        let sums = &mut sums[..width];
        sums.fill(0.0);
        dz.chunks_exact(width).for_each(|row| add(sums, row));
        let w = &self.params[self.blocks[t][1].0..][..gamma.len() * width];
        for (j, (w_row, g_row)) in w.chunks_exact(width).zip(grad.chunks_exact_mut(width)).enumerate() {
            d_gamma[j] = dot(w_row, g_row);
            d_beta[j] = dot(w_row, sums);
            g_row.iter_mut().zip(&*sums).for_each(|(g, &s)| *g = gamma[j] * *g + beta[j] * s);
        }
    }

    /// Thread `s`'s block of dense layer `l`'s bias.
    fn bias(&self, s: usize, l: usize) -> &[f32] {
        &self.params[self.blocks[s][l].1..][..block(self.dense(l).n_out, s, self.parts).len()]
    }

    /// Thread `t`'s forward and backward pass, writing its part of the gradient (`grads`:
    /// per layer its weight rows then its bias block; batch norm, its gamma and beta blocks
    /// then nothing). Returns the batch's summed loss and correct count (every thread
    /// computes them).
    fn run(
        &self,
        t: usize,
        b: &mut ThreadBuffers,
        batch: Batch<'_>,
        mut grads: Vec<&mut [f32]>,
        mut ex: Member<'_>,
    ) -> (f64, usize) {
        let (parts, n, precision) = (self.parts, self.labels.len(), self.precision);
        let last = self.layers.len() - 1;
        let features = block(self.layers[0].n_in(), t, parts);
        batch.split.fill_features(
            batch.indices,
            batch.preprocess,
            &mut b.inputs[..n * features.len()],
            features.clone(),
        );
        batch.split.prefetch(batch.next, features);

        for (l, layer) in self.layers.iter().enumerate() {
            // Dropout and batch norm work column by column: each thread on its own columns.
            let d = match layer {
                Layer::Dense(d) => d,
                Layer::Dropout(d) => {
                    let cols = block(d.features, t, parts);
                    let own = n * cols.len();
                    let (x, y) = columns_in_out(&b.inputs, &mut b.outputs, l, own);
                    d.forward_columns(x, y, &mut b.masks[l][..own], l, self.noise, cols);
                    continue;
                }
                Layer::BatchNorm(bn) => {
                    let (bn, params) = self.batch_norm(bn, t, l);
                    let (x, y) = columns_in_out(&b.inputs, &mut b.outputs, l, n * bn.features);
                    bn.forward_train(params, x, y, n, &mut b.stats[l]);
                    continue;
                }
            };
            let rows = block(d.n_in, t, parts).len();
            let x = if l == 0 { &b.inputs } else { &b.outputs[l - 1] };
            let partial = &mut b.partial[..n * d.n_out];
            let (x, out) = (MatRef::new(&x[..n * rows], n, rows), MatMut::new(partial, n, d.n_out));
            precision.gemm(&Blocking::SERIAL, 1.0, x, self.weights(t, l), 0.0, out, Epilogue::NONE);
            if l < last {
                // Thread s receives [:, C_s]; the box holds the blocks in thread order.
                ex.publish(|out| {
                    for s in (0..parts).filter(|&s| s != t) {
                        let cols = block(d.n_out, s, parts);
                        copy_columns(partial, d.n_out, cols.clone(), &mut out[n * cols.start..][..n * cols.len()]);
                    }
                });
                ex.wait();
                let cols = block(d.n_out, t, parts);
                let out = &mut b.outputs[l][..n * cols.len()];
                copy_columns(partial, d.n_out, cols.clone(), out);
                for s in (0..parts).filter(|&s| s != t) {
                    add(out, &ex.inbox(s)[n * cols.start..][..n * cols.len()]);
                }
                add_to_rows(out, self.bias(t, l));
                d.activation.forward(out);
            } else {
                ex.publish(|out| out[..partial.len()].copy_from_slice(partial));
                ex.wait();
                // Summed in thread order by every thread: all get the same logits.
                let logits = &mut b.dz[..n * d.n_out];
                logits.fill(0.0);
                for s in 0..parts {
                    add(logits, if s == t { partial } else { &ex.inbox(s)[..n * d.n_out] });
                }
                for row in logits.chunks_exact_mut(d.n_out) {
                    for s in 0..parts {
                        add(&mut row[block(d.n_out, s, parts)], self.bias(s, l));
                    }
                }
            }
        }
        let classes = self.layers[last].n_out();
        let dz_out = &mut b.dz[..n * classes];
        let (loss, correct) = softmax_cross_entropy(dz_out, classes, self.labels);
        softmax_cross_entropy_grad(dz_out, classes, self.labels, 1.0 / n as f32);

        for (l, layer) in self.layers.iter().enumerate().rev() {
            let (b_grad, w_grad) = (grads.pop().expect("a bias run per layer"), grads.pop().expect("a weight run"));
            let d = match layer {
                Layer::Dense(d) => d,
                Layer::Dropout(d) => {
                    let own = n * block(d.features, t, parts).len();
                    d.backward(&b.delta[..own], &b.masks[l][..own], &mut b.delta_prev[..own]);
                    std::mem::swap(&mut b.delta, &mut b.delta_prev);
                    continue;
                }
                // Its gradient came with the first dense layer's.
                Layer::BatchNorm(_) if l == 0 && self.input_norm => continue,
                Layer::BatchNorm(bn) => {
                    let (bn, params) = self.batch_norm(bn, t, l);
                    let own = n * bn.features;
                    let dx = (l > 0).then(|| &mut b.delta_prev[..own]);
                    bn.backward(params, &b.outputs[l][..own], &mut b.delta[..own], &b.stats[l], w_grad, dx, n);
                    std::mem::swap(&mut b.delta, &mut b.delta_prev);
                    continue;
                }
            };
            let (rows, cols) = (block(d.n_in, t, parts), block(d.n_out, t, parts));
            b_grad.fill(0.0);
            if l == last {
                for row in b.dz[..n * d.n_out].chunks_exact(d.n_out) {
                    add(b_grad, &row[cols.clone()]);
                }
            } else {
                let own = &mut b.delta[..n * cols.len()];
                activation_backward_with_bias_grad(d.activation, &b.outputs[l][..own.len()], own, cols.len(), b_grad);
                ex.publish(|out| out[..own.len()].copy_from_slice(own));
                ex.wait();
                for s in 0..parts {
                    let cols = block(d.n_out, s, parts);
                    let from = if s == t { &*own } else { &ex.inbox(s)[..n * cols.len()] };
                    for (dz_row, from_row) in b.dz.chunks_exact_mut(d.n_out).zip(from.chunks_exact(cols.len())) {
                        dz_row[cols.clone()].copy_from_slice(from_row);
                    }
                }
            }
            let dz = &b.dz[..n * d.n_out];
            if l == 1 && self.input_norm {
                // The weight gradient and the input batch norm's (layer 0's first run), no dL/dx.
                let x_hat = &b.stats[0].x_hat[..n * rows.len()];
                d.weight_grad_part(x_hat, rows.clone(), dz, w_grad, n, precision);
                self.input_norm_grads(t, dz, w_grad, &mut *grads[0], &mut b.column_sums);
                continue;
            }
            let x = if l == 0 { &b.inputs } else { &b.outputs[l - 1] };
            d.weight_grad_part(&x[..n * rows.len()], rows.clone(), dz, w_grad, n, precision);
            if l > 0 {
                let dx = &mut b.delta_prev[..n * rows.len()];
                d.input_grad_from(&Blocking::SERIAL, self.weights(t, l), dz, dx, n, &mut b.scratch, precision);
                std::mem::swap(&mut b.delta, &mut b.delta_prev);
            }
        }
        (loss, correct)
    }
}

/// `out` (`[rows, cols.len()]`) = the columns `cols` of `m` (`[rows, width]`).
fn copy_columns(m: &[f32], width: usize, cols: Range<usize>, out: &mut [f32]) {
    if cols.is_empty() {
        return;
    }
    for (row, out_row) in m.chunks_exact(width).zip(out.chunks_exact_mut(cols.len())) {
        out_row.copy_from_slice(&row[cols.clone()]);
    }
}

/// Layer `l`'s input and output for one thread's columns (`own` values each): the thread's
/// inputs for the first layer, else the layer before's output.
fn columns_in_out<'b>(
    inputs: &'b [f32],
    outputs: &'b mut [Vec<f32>],
    l: usize,
    own: usize,
) -> (&'b [f32], &'b mut [f32]) {
    let (before, from_here) = outputs.split_at_mut(l);
    let x = if l == 0 { inputs } else { &before[l - 1] };
    (&x[..own], &mut from_here[0][..own])
}

fn add(acc: &mut [f32], v: &[f32]) {
    acc.iter_mut().zip(v).for_each(|(a, v)| *a += v);
}

/// Adds `v` to each row of `m` (rows as long as `v`).
fn add_to_rows(m: &mut [f32], v: &[f32]) {
    if v.is_empty() {
        return;
    }
    m.chunks_exact_mut(v.len()).for_each(|row| add(row, v));
}
