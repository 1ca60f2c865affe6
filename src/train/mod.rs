//! Training: the fit loop, its callbacks (early stopping, save-best checkpoints), per-epoch
//! history, evaluation, and the run directory a `simdnn train` writes. Imports `nn`,
//! `optim`, `data` and `fsutil`; the CLI is a thin layer over [`run::train_run`].

pub mod callbacks;
pub mod compare;
pub mod config;
pub mod deploy;
pub mod history;
pub mod lr_find;
pub mod mc;
pub mod resume;
pub mod run;
mod tensor_parallel;

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::data::Split;
use crate::data::cifar::IMAGE_BYTES;
use crate::kernels::Precision;
use crate::kernels::bf16::{Bf16Kernel, round_to_bf16_with};
use crate::nn::{Layer, Noise, ParamsRef, Preprocess, Sequential, StepOptions, Workspace};
use crate::optim::schedule::{ReduceOnPlateau, Schedule};
use crate::optim::{Gradient, Optimizer, Owners, Params, ParamsCopy};
use crate::rng::{seeded, shuffle};
use crate::{Error, Result};
use tensor_parallel::TensorParallel;

pub use callbacks::{EarlyStopping, SaveBest, Verdict};
pub use config::TrainConfig;
pub use history::EpochRecord;

/// Records evaluated per forward pass outside training (large enough for the GEMM to
/// split across threads, small enough to stay in cache).
const EVAL_BATCH: usize = 500;

/// What the fit loop reports as it goes (the CLI draws progress from it).
pub enum Event<'a> {
    EpochStart {
        epoch: usize,
        steps: usize,
    },
    /// After each optimisation step: the running mean loss and accuracy of the epoch.
    Step {
        step: usize,
        loss: f64,
        accuracy: f64,
    },
    EpochEnd(&'a EpochRecord),
    /// Before the first epoch: something the user asked for that this run does not do, and why.
    Warning(String),
}

/// Mean loss and accuracy of `model` on `split`.
pub fn evaluate(model: &Sequential, split: &Split<'_>, preprocess: &Preprocess) -> (f64, f64) {
    use rayon::prelude::*;
    let indices: Vec<u32> = (0..split.len() as u32).collect();
    // Chunks spread over threads, each with its own buffers; the sums run in chunk order, so
    // the result does not depend on the thread count.
    let per_chunk: Vec<(f64, usize)> = indices
        .par_chunks(EVAL_BATCH)
        .map_init(
            || (Workspace::new(model, EVAL_BATCH), vec![0f32; EVAL_BATCH * IMAGE_BYTES], vec![0u8; EVAL_BATCH]),
            |(ws, x, y), chunk| {
                let n = chunk.len();
                split.fill_batch(chunk, preprocess, &mut x[..n * IMAGE_BYTES], &mut y[..n]);
                model.evaluate_batch(&x[..n * IMAGE_BYTES], &y[..n], ws)
            },
        )
        .collect();
    let (loss, correct) = per_chunk.iter().fold((0f64, 0usize), |(l, c), &(l2, c2)| (l + l2, c + c2));
    let n = split.len().max(1) as f64;
    (loss / n, correct as f64 / n)
}

/// The records of one mini-batch, not yet converted.
#[derive(Clone, Copy)]
struct Batch<'a> {
    split: &'a Split<'a>,
    indices: &'a [u32],
    preprocess: &'a Preprocess,
    /// The next step's records, prefetched while this step computes.
    next: &'a [u32],
}

/// Splits `rows` (each `width` long) at the given row bounds.
fn split_rows<'a, T>(mut rows: &'a mut [T], bounds: &[(usize, usize)], width: usize) -> Vec<&'a mut [T]> {
    bounds
        .iter()
        .map(|&(lo, hi)| {
            let (part, rest) = std::mem::take(&mut rows).split_at_mut((hi - lo) * width);
            rows = rest;
            part
        })
        .collect()
}

/// One thread's share of a training step.
struct Shard {
    ws: Workspace,
    grads: Vec<f32>,
}

/// One thread's share of the first layer in a data-parallel step: a contiguous range of the
/// input features, which is also a range of the first layer's weight rows.
struct FirstLayerPart {
    features: Range<usize>,
    /// `[batch, features.len()]`: those pixels of the batch, converted.
    inputs: Vec<f32>,
    /// `[batch, n_out]`: `inputs` times the weight rows `features`.
    partial: Vec<f32>,
}

/// Buffers a training step reuses from one batch to the next.
struct StepBuffers {
    /// One per thread: each computes the gradient of its slice of every batch.
    shards: Vec<Shard>,
    /// With a dense first layer, one per shard; else empty.
    first_parts: Vec<FirstLayerPart>,
    /// dL/dz of the first layer for the whole batch, gathered from the shards.
    first_delta: Vec<f32>,
    /// The converted batch, when the first layer is not dense (the parts convert their own
    /// features otherwise).
    x: Vec<f32>,
    y: Vec<u8>,
}

impl StepBuffers {
    fn new(model: &Sequential, batch_size: usize, threads: usize) -> Self {
        let shards = (0..threads)
            .map(|_| Shard {
                ws: Workspace::new(model, batch_size.div_ceil(threads)),
                grads: vec![0.0; model.num_params()],
            })
            .collect();
        let first_width = model.layers()[0].n_out();
        let dense_first = model.layers()[0].as_dense().is_some();
        let first_parts = if !dense_first {
            Vec::new()
        } else {
            (0..threads)
                .map(|p| {
                    let features = IMAGE_BYTES * p / threads..IMAGE_BYTES * (p + 1) / threads;
                    FirstLayerPart {
                        inputs: vec![0.0; batch_size * features.len()],
                        partial: vec![0.0; batch_size * first_width],
                        features,
                    }
                })
                .collect()
        };
        StepBuffers {
            shards,
            first_parts,
            first_delta: Vec::with_capacity(batch_size * first_width),
            x: if dense_first { Vec::new() } else { vec![0.0; batch_size * IMAGE_BYTES] },
            y: vec![0; batch_size],
        }
    }
}

/// Where a trainer's time went, in seconds summed over the steps and epochs it ran. The
/// phases of a step run one after another, each spread over the threads, so on a machine
/// whose cores are shared these show which phase waits on a slow core: compare them between
/// `--threads 1` and the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct PhaseSeconds {
    /// Reading the batch, the first layer's forward pass, and every shard's forward and
    /// backward pass (all of the gradient when the model runs as one shard).
    pub gradient: f64,
    /// The first layer's weight gradient over the whole batch, after the shards (models
    /// whose first layer is dense).
    pub first_layer_weight_grad: f64,
    /// The optimiser's update.
    pub optimizer: f64,
    /// The validation pass at each epoch's end.
    pub validation: f64,
}

/// One training step's gradient, left in the shards' `grads` (see [`shards_gradient`]).
/// Returns the batch's summed loss, its correct count and how many shards took part (fewer
/// than all when the batch has fewer rows than there are shards: the others' buffers hold an
/// earlier step's gradient).
///
/// A model whose first layer is not dense runs as one shard, a plain forward and backward
/// pass. Otherwise data parallelism (one shard per thread, or one for a model with batch
/// norm, whose batch statistics need the whole batch in one place), except for the first
/// layer, which is split by input features: each thread
/// converts its features of the whole batch and multiplies them by those rows of the
/// weights; then the batch is split into one contiguous slice of rows per shard, and each
/// finishes the first layer for its rows (summing the partial products) and runs the other
/// layers forward and backward; last, each thread computes the rows of the first layer's
/// weight gradient for its features, over the whole batch, into `shards[0].grads`. The
/// optimiser splits the parameters the same way (`optim::for_each_param`) and adds the other
/// shards' gradients as it reads them. So the first layer's weights (61 % of 8a's
/// parameters) and their gradient stay on one core: shared between cores, every update had
/// to invalidate the other core's copies and every forward pass fetch them back. The splits
/// and the order of the sums depend only on the thread count, so a given thread count always
/// gives the same bits. Every dense layer's products multiply in `precision`.
#[allow(clippy::too_many_arguments)]
fn step_gradient(
    model: &Sequential,
    batch: Batch<'_>,
    noise: Noise,
    precision: Precision,
    copy: Option<ParamsRef<'_>>,
    buffers: &mut StepBuffers,
    phases: &mut PhaseSeconds,
) -> (f64, usize, usize) {
    let start = Instant::now();
    let n = batch.indices.len();
    let scale = 1.0 / n as f32;
    let StepBuffers { shards, first_parts, first_delta, x, y } = buffers;
    let y = &mut y[..n];
    if first_parts.is_empty() {
        let x = &mut x[..n * IMAGE_BYTES];
        batch.split.fill_batch(batch.indices, batch.preprocess, x, y);
        batch.split.prefetch(batch.next, 0..IMAGE_BYTES);
        let options = StepOptions { noise, precision, params: copy, ..StepOptions::default() };
        let shard = &mut shards[0];
        let (loss, correct) = model.loss_and_grad_scaled(x, y, &mut shard.ws, &mut shard.grads, scale, options);
        phases.gradient += start.elapsed().as_secs_f64();
        return (loss, correct, 1);
    }
    let Some(first) = model.layers()[0].as_dense() else {
        unreachable!("first layer parts exist only for a dense first layer (StepBuffers::new)")
    };
    let width = first.n_out;
    crate::parallel::map_parts(first_parts.iter_mut().collect(), |part| {
        let inputs = &mut part.inputs[..n * part.features.len()];
        batch.split.fill_features(batch.indices, batch.preprocess, inputs, part.features.clone());
        batch.split.prefetch(batch.next, part.features.clone());
        // This thread's rows of the weights are read and updated by this thread only.
        let params = ParamsRef { values: &model.params, rounded: copy.and_then(|c| c.rounded) };
        first.forward_part(params, inputs, part.features.clone(), &mut part.partial[..n * width], n, precision);
    });
    let parts = shards.len().min(n);
    let bounds: Vec<(usize, usize)> = (0..parts).map(|p| (n * p / parts, n * (p + 1) / parts)).collect();
    let first_parts = &*first_parts;
    let tasks: Vec<_> = shards[..parts].iter_mut().zip(split_rows(y, &bounds, 1)).zip(&bounds).collect();
    let results = crate::parallel::map_parts(tasks, |((shard, ys), &(lo, hi))| {
        batch.split.fill_labels(&batch.indices[lo..hi], ys);
        let partials = first_parts.iter().map(|part| &part.partial[..n * width]);
        first.forward_from_parts(&model.params, partials, lo..hi, shard.ws.first_layer_output_mut(model, hi - lo));
        let noise = Noise { first_row: lo, ..noise };
        let options = StepOptions { first_layer_by_caller: true, noise, precision, params: copy };
        model.loss_and_grad_scaled(&[], ys, &mut shard.ws, &mut shard.grads, scale, options)
    });
    let first_start = Instant::now();
    phases.gradient += (first_start - start).as_secs_f64();
    first_delta.clear();
    for (shard, &(lo, hi)) in shards.iter().zip(&bounds) {
        first_delta.extend_from_slice(shard.ws.first_layer_delta(model, hi - lo));
    }
    let feature_bounds: Vec<(usize, usize)> = first_parts.iter().map(|p| (p.features.start, p.features.end)).collect();
    let weight_rows = split_rows(&mut shards[0].grads[first.weight_range()], &feature_bounds, width);
    let first_delta = &*first_delta;
    crate::parallel::map_parts(first_parts.iter().zip(weight_rows).collect(), |(part, dw)| {
        let inputs = &part.inputs[..n * part.features.len()];
        first.weight_grad_part(inputs, part.features.clone(), first_delta, dw, n, precision);
    });
    phases.first_layer_weight_grad += first_start.elapsed().as_secs_f64();
    let (loss, correct) = results.iter().fold((0.0, 0), |(l, c), &(l2, c2)| (l + l2, c + c2));
    (loss, correct, parts)
}

/// The gradient as [`step_gradient`] left it: `first` (the first shard's buffer) holds the
/// first layer's weight gradient for the whole batch, and every shard (`others` after the
/// first) its own part of the rest.
fn shards_gradient<'g>(model: &Sequential, first: &'g [f32], others: &'g [&'g [f32]]) -> Gradient<'g> {
    let summed_from = match (others.is_empty(), model.layers()[0].as_dense()) {
        (false, Some(first_layer)) => first_layer.weight_range().end,
        _ => first.len(),
    };
    Gradient { first, others, summed_from, owners: Owners::Even }
}

/// Where the parameters that both cores read begin, in a data-parallel step: after the first
/// layer's weights (`shards_gradient`'s `summed_from`).
fn shared_params(model: &Sequential) -> usize {
    model.layers()[0].as_dense().map_or(0, |first| first.weight_range().end)
}

/// The buffer of a [`Trainer`]'s copy of the parameters (`optim::ParamsCopy`).
enum CopyBuffer {
    /// All of them, rounded to bf16.
    Bf16(Vec<u16>),
    /// As long as the parameters; those before [`shared_params`] are not kept (NaN).
    F32(Vec<f32>),
}

/// How far an unfinished epoch got (all zero: not started).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EpochProgress {
    /// The next batch of the epoch's order to train on.
    pub next_step: usize,
    pub loss_sum: f64,
    pub correct: usize,
    pub seen: usize,
    /// Wall time spent on the epoch so far.
    pub seconds: f64,
    /// The rate of the last step taken.
    pub lr: f32,
}

/// How [`Trainer::run_epoch`] ended.
pub enum EpochOutcome {
    Finished(EpochRecord),
    /// The stop flag was raised: the epoch stopped after a whole step.
    Interrupted(EpochProgress),
}

/// One optimisation step, for the per-step log (`steps.csv`).
#[derive(Clone, Debug, PartialEq)]
pub struct StepRecord {
    pub step: u64,
    pub epoch: usize,
    pub lr: f32,
    pub momentum: Option<f32>,
    /// The batch's mean loss.
    pub loss: f64,
}

/// The per-step log as CSV.
pub fn steps_csv(steps: &[StepRecord]) -> String {
    use std::fmt::Write;
    let mut out = String::from("step,epoch,lr,momentum,loss\n");
    for s in steps {
        let momentum = s.momentum.map(|m| m.to_string()).unwrap_or_default();
        let _ = writeln!(out, "{},{},{},{momentum},{}", s.step, s.epoch, s.lr, s.loss);
    }
    out
}

/// The state of one training run, between epochs.
pub struct Trainer<'a> {
    /// Read with [`Trainer::model`], changed with [`Trainer::model_mut`].
    model: Sequential,
    pub optimizer: Box<dyn Optimizer>,
    pub preprocess: Preprocess,
    pub train: Split<'a>,
    pub val: Split<'a>,
    pub batch_size: usize,
    /// The base learning rate the schedule scales (reduced by plateau scheduling).
    pub lr: f32,
    pub seed: u64,
    /// The rate (and, for SGD, momentum) at each optimisation step.
    pub schedule: Schedule,
    /// Performance scheduling, applied at each epoch's end.
    pub plateau: Option<ReduceOnPlateau>,
    /// Optimisation steps taken so far, across epochs.
    pub global_step: u64,
    /// When set, every step's rate, momentum and loss are appended here.
    pub step_log: Option<Vec<StepRecord>>,
    /// Where this trainer's time went so far.
    pub phases: PhaseSeconds,
    /// How the dense layers' products multiply in training steps (f32, or bf16 with f32
    /// sums); the optimiser and evaluation always run in f32.
    pub precision: Precision,
    /// The copy of the parameters that a step's products read and the optimiser rewrites as
    /// it updates them (`optim::ParamsCopy`); made at the first step that uses it, dropped
    /// when the parameters change otherwise ([`Trainer::model_mut`]).
    copy: Option<CopyBuffer>,
    /// How an epoch's steps split their work between threads.
    pub parallelism: Parallelism,
    /// While an epoch runs tensor-parallel steps, their parameters, optimiser state and
    /// buffers ([`Trainer::run_epoch`] makes it and puts the parameters back at the end).
    tensor: Option<TensorParallel>,
    buffers: StepBuffers,
    order: Vec<u32>,
}

/// A [`Trainer`] while [`Trainer::with_epoch_steps`] runs: it takes steps, nothing else, as
/// its model's parameters may lie in another order meanwhile.
pub struct EpochSteps<'t, 'a> {
    trainer: &'t mut Trainer<'a>,
}

impl EpochSteps<'_, '_> {
    /// [`Trainer::step`], tensor-parallel when the trainer's epochs are.
    pub fn step(&mut self, epoch: usize, step: usize, lr: f32, momentum: Option<f32>) -> Result<(f64, usize, usize)> {
        self.trainer.step(epoch, step, lr, momentum)
    }
}

/// How the steps of [`Trainer::run_epoch`] split their work between threads. Each gives the
/// same bits for a given thread count, but not the same as the other (the sums run in other
/// orders).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Parallelism {
    /// Each thread a slice of the batch, the first layer split by input features (see
    /// `step_gradient`). A model with batch norm runs as one slice (its statistics need the
    /// whole batch): only its large products use more than one thread.
    #[default]
    Data,
    /// Each thread a block of every layer's units, over the whole batch (see
    /// `tensor_parallel`): far less traffic between the cores, but 41 short waits per 8a
    /// step; batch norm too (each thread has the whole batch for its columns). A lone
    /// [`Trainer::step`] runs data-parallel.
    Tensor,
}

impl Parallelism {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "data" => Some(Parallelism::Data),
            "tensor" => Some(Parallelism::Tensor),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Parallelism::Data => "data",
            Parallelism::Tensor => "tensor",
        }
    }
}

impl<'a> Trainer<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        model: Sequential,
        optimizer: Box<dyn Optimizer>,
        preprocess: Preprocess,
        train: Split<'a>,
        val: Split<'a>,
        batch_size: usize,
        lr: f32,
        seed: u64,
    ) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::config("--batch-size", "must be at least 1"));
        }
        if train.is_empty() || val.is_empty() {
            return Err(Error::config(
                "--val-size",
                format!("needs records on both sides ({} training, {} validation)", train.len(), val.len()),
            ));
        }
        if model.input_dim() != IMAGE_BYTES {
            return Err(Error::Shape(format!(
                "the model takes {} inputs but images have {IMAGE_BYTES}",
                model.input_dim()
            )));
        }
        // Slices of at least 8 rows: thinner ones would cost the GEMMs more than they gain.
        // Batch norm needs the whole batch's statistics, and the first layer split by
        // features a dense first layer: such models run as one shard (the GEMMs still split
        // large products across threads).
        let shardable = !model.has_batch_norm() && matches!(model.layers()[0], Layer::Dense(_));
        let threads = if shardable { rayon::current_num_threads().clamp(1, batch_size.div_ceil(8).max(1)) } else { 1 };
        let buffers = StepBuffers::new(&model, batch_size, threads);
        let order = (0..train.len() as u32).collect();
        Ok(Trainer {
            model,
            optimizer,
            preprocess,
            train,
            val,
            batch_size,
            lr,
            seed,
            schedule: Schedule::Constant,
            plateau: None,
            global_step: 0,
            step_log: None,
            phases: PhaseSeconds::default(),
            precision: Precision::F32,
            copy: None,
            parallelism: Parallelism::Data,
            tensor: None,
            buffers,
            order,
        })
    }

    /// One pass over the shuffled training split (from where `from` left off), then
    /// validation. `epoch` is 1-based and seeds the shuffle, so any epoch can be replayed or
    /// continued on its own. When `stop` is raised, returns after the current step with the
    /// progress so far.
    pub fn run_epoch(
        &mut self,
        epoch: usize,
        from: EpochProgress,
        stop: Option<&AtomicBool>,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<EpochOutcome> {
        let start = Instant::now();
        let _warm = crate::parallel::KeepWarm::start();
        self.shuffle(epoch);
        let steps = self.order.len().div_ceil(self.batch_size);
        on_event(Event::EpochStart { epoch, steps });
        let steps_done = self.in_epoch_layout(|trainer| trainer.run_steps(epoch, from, steps, stop, on_event))?;
        let p = match steps_done? {
            (p, true) => p,
            (mut p, false) => {
                p.seconds += start.elapsed().as_secs_f64();
                return Ok(EpochOutcome::Interrupted(p));
            }
        };
        let validation_start = Instant::now();
        let (val_loss, val_accuracy) = evaluate(&self.model, &self.val, &self.preprocess);
        self.phases.validation += validation_start.elapsed().as_secs_f64();
        if let Some(plateau) = &mut self.plateau {
            self.lr = plateau.update(val_loss, self.lr);
        }
        let seen = p.seen.max(1) as f64;
        Ok(EpochOutcome::Finished(EpochRecord {
            epoch,
            loss: p.loss_sum / seen,
            accuracy: p.correct as f64 / seen,
            val_loss,
            val_accuracy,
            lr: p.lr,
            seconds: p.seconds + start.elapsed().as_secs_f64(),
        }))
    }

    /// Steps `from.next_step..steps` of the epoch, until `stop` is raised. Returns the
    /// progress, and whether every step ran.
    fn run_steps(
        &mut self,
        epoch: usize,
        from: EpochProgress,
        steps: usize,
        stop: Option<&AtomicBool>,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<(EpochProgress, bool)> {
        let mut p = from;
        for step in p.next_step..steps {
            if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                p.next_step = step;
                return Ok((p, false));
            }
            p.lr = self.schedule.lr(self.lr, self.global_step);
            let momentum = self.schedule.momentum(self.global_step);
            let (loss, ok, n) = self.step(epoch, step, p.lr, momentum)?;
            if let Some(log) = &mut self.step_log {
                log.push(StepRecord { step: self.global_step, epoch, lr: p.lr, momentum, loss: loss / n as f64 });
            }
            p.loss_sum += loss;
            p.correct += ok;
            p.seen += n;
            on_event(Event::Step {
                step: step + 1,
                loss: p.loss_sum / p.seen as f64,
                accuracy: p.correct as f64 / p.seen as f64,
            });
        }
        Ok((p, true))
    }

    /// Runs `f`, whose steps are taken as [`Trainer::run_epoch`] takes them: with
    /// [`Parallelism::Tensor`] (and a model and thread pool it suits), the parameters and the
    /// optimiser's state are in the tensor-parallel steps' order meanwhile, and back in the
    /// model's order when `f` returns. For benchmarks and loops of steps of one's own; call
    /// it inside the thread pool whose threads should take part.
    pub fn with_epoch_steps<R>(&mut self, f: impl FnOnce(&mut EpochSteps<'_, 'a>) -> R) -> Result<R> {
        self.in_epoch_layout(|trainer| f(&mut EpochSteps { trainer }))
    }

    fn in_epoch_layout<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> Result<R> {
        self.start_tensor_parallel()?;
        let out = f(self);
        self.finish_tensor_parallel()?;
        Ok(out)
    }

    /// Why the epochs run data-parallel steps although [`Trainer::parallelism`] asks for
    /// tensor-parallel ones (on the calling thread's pool), if they do.
    pub fn tensor_parallel_declined(&self) -> Option<String> {
        let threads = rayon::current_num_threads();
        (self.parallelism == Parallelism::Tensor).then(|| TensorParallel::unsupported(&self.model, threads)).flatten()
    }

    /// With [`Parallelism::Tensor`], more than one thread and a model it takes, moves the
    /// parameters and the optimiser's state into the tensor-parallel steps' order for the
    /// epoch ([`Trainer::finish_tensor_parallel`] moves them back).
    fn start_tensor_parallel(&mut self) -> Result<()> {
        // Every thread takes the whole batch, so even batches too small to slice use them all.
        let threads = rayon::current_num_threads();
        if self.parallelism == Parallelism::Tensor && TensorParallel::unsupported(&self.model, threads).is_none() {
            let optimizer = &mut *self.optimizer;
            self.tensor =
                Some(TensorParallel::start(&self.model, optimizer, self.precision, self.batch_size, threads)?);
            // The data-parallel steps' copy would go stale.
            self.copy = None;
        }
        Ok(())
    }

    fn finish_tensor_parallel(&mut self) -> Result<()> {
        match self.tensor.take() {
            Some(tensor) => tensor.finish(&mut self.model, &mut *self.optimizer),
            None => Ok(()),
        }
    }

    /// Keras shuffles the whole training set each epoch; here the order depends only on
    /// (seed, epoch), so any epoch can be replayed.
    pub fn shuffle(&mut self, epoch: usize) {
        self.order.iter_mut().enumerate().for_each(|(i, o)| *o = i as u32);
        shuffle(&mut seeded(self.seed, 1_000_000 + epoch as u64), &mut self.order);
    }

    /// The model being trained.
    pub fn model(&self) -> &Sequential {
        &self.model
    }

    /// The model, to change its parameters or state between steps.
    pub fn model_mut(&mut self) -> &mut Sequential {
        // The copy may no longer match: the next step makes it again.
        self.copy = None;
        &mut self.model
    }

    /// One optimisation step on batch `step` of the current order, at rate `lr` (and SGD
    /// momentum, when scheduled). Returns the batch's summed loss, correct count and size.
    /// Data-parallel, but within [`Trainer::run_epoch`] or [`Trainer::with_epoch_steps`]
    /// with [`Parallelism::Tensor`].
    pub fn step(&mut self, epoch: usize, step: usize, lr: f32, momentum: Option<f32>) -> Result<(f64, usize, usize)> {
        self.prepare_copy();
        let lo = step * self.batch_size;
        let end = (lo + self.batch_size).min(self.order.len());
        let (batch, next) = (&self.order[lo..end], &self.order[end..(end + self.batch_size).min(self.order.len())]);
        let n = batch.len();
        let noise = Noise { seed: self.seed, step: ((epoch as u64) << 32) + step as u64, first_row: 0 };
        let copy = self.copy.as_ref().map(|copy| match copy {
            CopyBuffer::Bf16(rounded) => ParamsRef { values: &self.model.params, rounded: Some(rounded) },
            CopyBuffer::F32(values) => ParamsRef { values, rounded: None },
        });
        let batch = Batch { split: &self.train, indices: batch, preprocess: &self.preprocess, next };
        let (loss, ok, shards_used) = match &mut self.tensor {
            Some(tensor) => {
                let start = Instant::now();
                let labels = &mut self.buffers.y[..n];
                self.train.fill_labels(batch.indices, labels);
                let (loss, ok) = tensor.gradient(&self.model, batch, labels, noise, self.precision);
                self.phases.gradient += start.elapsed().as_secs_f64();
                (loss, ok, 1)
            }
            None => step_gradient(&self.model, batch, noise, self.precision, copy, &mut self.buffers, &mut self.phases),
        };
        if !loss.is_finite() {
            return Err(Error::Diverged { epoch, step: step + 1, loss: loss as f32, suggested_lr: lr / 10.0 });
        }
        if let Some(m) = momentum {
            self.optimizer.set_momentum(m);
        }
        let optimizer_start = Instant::now();
        let shards = &self.buffers.shards;
        if let Some(tensor) = &mut self.tensor {
            tensor.update(&mut *self.optimizer, lr);
        } else {
            let others: Vec<&[f32]> = shards[1..shards_used].iter().map(|s| &s.grads[..]).collect();
            let gradient = shards_gradient(&self.model, &shards[0].grads, &others);
            let copy = self.copy.as_mut().map(|copy| match copy {
                CopyBuffer::Bf16(rounded) => ParamsCopy::Bf16(rounded),
                CopyBuffer::F32(values) => {
                    let from = shared_params(&self.model);
                    ParamsCopy::F32 { from, values: &mut values[from..] }
                }
            });
            self.optimizer.apply(Params { values: &mut self.model.params, copy }, gradient, lr);
        }
        self.phases.optimizer += optimizer_start.elapsed().as_secs_f64();
        if let Some(tensor) = &mut self.tensor {
            tensor.update_moving_stats(&mut self.model);
        } else if shards.len() == 1 {
            self.model.update_moving_stats(&shards[0].ws);
        }
        self.global_step += 1;
        Ok((loss, ok, n))
    }

    /// Makes the copy of the parameters this step's products read, unless it is there: in
    /// bf16, all of them rounded; in f32 with more than one shard, those that both cores read
    /// (the first layer's weights are each read by the thread that updates them). One thread
    /// in f32 reads the parameters themselves.
    fn prepare_copy(&mut self) {
        if self.tensor.is_some() {
            // The tensor-parallel steps keep their own.
            return;
        }
        let shared = self.buffers.shards.len() > 1 && !self.buffers.first_parts.is_empty();
        self.copy = match (self.precision, self.copy.take()) {
            (Precision::Bf16, Some(CopyBuffer::Bf16(rounded))) => Some(CopyBuffer::Bf16(rounded)),
            (Precision::Bf16, _) => {
                let mut rounded = vec![0; self.model.params.len()];
                round_to_bf16_with(Bf16Kernel::detect(), &self.model.params, &mut rounded);
                Some(CopyBuffer::Bf16(rounded))
            }
            (Precision::F32, Some(CopyBuffer::F32(values))) if shared => Some(CopyBuffer::F32(values)),
            (Precision::F32, _) if shared => {
                let mut values = self.model.params.clone();
                // Never read (see above); NaN would show if it were.
                values[..shared_params(&self.model)].fill(f32::NAN);
                Some(CopyBuffer::F32(values))
            }
            (Precision::F32, _) => None,
        };
    }

    /// Optimisation steps per epoch.
    pub fn steps_per_epoch(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }
}
