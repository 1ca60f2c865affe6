//! Optimisers, written element by element as in their references, over the model's flat
//! parameter vector. Imports only `core`/`alloc` (and `rayon` with `std`, to split the
//! element loop across threads: every element's update is independent, so the result does
//! not depend on the split). No knowledge of data, files or layers: a data-parallel
//! gradient arrives as the shards' buffers ([`Gradient`]).
//!
//! Each optimiser follows Keras 3's update rule and defaults, because Keras is what users
//! compare against; each step is checked in `tests/optim.rs` against values computed by hand.

use alloc::vec;
use alloc::vec::Vec;

use crate::kernels::bf16::{Bf16Kernel, round_to_bf16_with};
use crate::kernels::scalar::{sqrt, sqrtf};

pub mod lr_range;
pub mod schedule;

/// One optimisation step over all parameters.
pub trait Optimizer: Send {
    /// `params -= update(grads)` at learning rate `lr`; advances the step counter.
    fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) {
        self.apply(params.into(), grads.into(), lr);
    }
    /// [`Optimizer::step`] on a gradient that may come in data-parallel shards, keeping a
    /// copy of the parameters up to date when [`Params::copy`] is given.
    fn apply(&mut self, params: Params<'_>, grads: Gradient<'_>, lr: f32);
    /// Steps taken so far.
    fn iterations(&self) -> u64;
    /// Sets the momentum for the next steps (1cycle's momentum cycling). Only SGD has a
    /// momentum to set; the others ignore it.
    fn set_momentum(&mut self, _momentum: f32) {}
    /// Everything carried from one step to the next, to save with a resumable run.
    fn state(&self) -> OptimizerState;
    /// Continues from a saved [`Optimizer::state`] of an optimiser of the same kind and size.
    fn restore(&mut self, state: &OptimizerState) -> crate::Result<()>;
}

/// An optimiser's step count, scalar state (Nadam's momentum product, SGD's current
/// momentum) and per-parameter slots, as [`Optimizer::state`] exports them.
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState {
    pub t: u64,
    pub scalars: Vec<f64>,
    pub slots: Vec<f32>,
}

impl OptimizerState {
    fn check(&self, scalars: usize, slots: usize) -> crate::Result<()> {
        if self.scalars.len() != scalars || self.slots.len() != slots {
            return Err(crate::Error::format(alloc::format!(
                "optimizer state has {} scalars and {} slot values, expected {scalars} and {slots}",
                self.scalars.len(),
                self.slots.len()
            )));
        }
        Ok(())
    }
}

/// The optimisers' names and settings, as chosen on the command line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerConfig {
    Sgd { momentum: f32, nesterov: bool },
    Adam { beta1: f32, beta2: f32, epsilon: f32 },
    AdamW { beta1: f32, beta2: f32, epsilon: f32, weight_decay: f32 },
    Nadam { beta1: f32, beta2: f32, epsilon: f32 },
    RmsProp { rho: f32, epsilon: f32 },
    AdaGrad { initial_accumulator: f32, epsilon: f32 },
}

impl OptimizerConfig {
    pub const NAMES: &'static str = "sgd, adam, adamw, nadam, rmsprop, adagrad";

    /// Keras's defaults for the named optimiser.
    pub fn keras_default(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "sgd" => OptimizerConfig::Sgd { momentum: 0.0, nesterov: false },
            "adam" => OptimizerConfig::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-7 },
            "adamw" => OptimizerConfig::AdamW { beta1: 0.9, beta2: 0.999, epsilon: 1e-7, weight_decay: 0.004 },
            "nadam" => OptimizerConfig::Nadam { beta1: 0.9, beta2: 0.999, epsilon: 1e-7 },
            "rmsprop" => OptimizerConfig::RmsProp { rho: 0.9, epsilon: 1e-7 },
            "adagrad" => OptimizerConfig::AdaGrad { initial_accumulator: 0.1, epsilon: 1e-7 },
            _ => return None,
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            OptimizerConfig::Sgd { .. } => "sgd",
            OptimizerConfig::Adam { .. } => "adam",
            OptimizerConfig::AdamW { .. } => "adamw",
            OptimizerConfig::Nadam { .. } => "nadam",
            OptimizerConfig::RmsProp { .. } => "rmsprop",
            OptimizerConfig::AdaGrad { .. } => "adagrad",
        }
    }

    /// The settings as (name, value) pairs, for reports and `config.json`.
    pub fn settings(&self) -> Vec<(&'static str, f32)> {
        match *self {
            OptimizerConfig::Sgd { momentum, nesterov } => {
                alloc::vec![("momentum", momentum), ("nesterov", if nesterov { 1.0 } else { 0.0 })]
            }
            OptimizerConfig::Adam { beta1, beta2, epsilon } | OptimizerConfig::Nadam { beta1, beta2, epsilon } => {
                alloc::vec![("beta1", beta1), ("beta2", beta2), ("epsilon", epsilon)]
            }
            OptimizerConfig::AdamW { beta1, beta2, epsilon, weight_decay } => {
                alloc::vec![("beta1", beta1), ("beta2", beta2), ("epsilon", epsilon), ("weight_decay", weight_decay)]
            }
            OptimizerConfig::RmsProp { rho, epsilon } => alloc::vec![("rho", rho), ("epsilon", epsilon)],
            OptimizerConfig::AdaGrad { initial_accumulator, epsilon } => {
                alloc::vec![("initial_accumulator", initial_accumulator), ("epsilon", epsilon)]
            }
        }
    }

    /// Sets the named setting (as [`OptimizerConfig::settings`] names them); false when this
    /// optimiser has no such setting.
    pub fn set(&mut self, key: &str, value: f32) -> bool {
        let slot = match (self, key) {
            (OptimizerConfig::Sgd { momentum, .. }, "momentum") => momentum,
            (OptimizerConfig::Sgd { nesterov, .. }, "nesterov") => {
                *nesterov = value != 0.0;
                return true;
            }
            (
                OptimizerConfig::Adam { beta1, .. }
                | OptimizerConfig::AdamW { beta1, .. }
                | OptimizerConfig::Nadam { beta1, .. },
                "beta1",
            ) => beta1,
            (
                OptimizerConfig::Adam { beta2, .. }
                | OptimizerConfig::AdamW { beta2, .. }
                | OptimizerConfig::Nadam { beta2, .. },
                "beta2",
            ) => beta2,
            (
                OptimizerConfig::Adam { epsilon, .. }
                | OptimizerConfig::AdamW { epsilon, .. }
                | OptimizerConfig::Nadam { epsilon, .. }
                | OptimizerConfig::RmsProp { epsilon, .. }
                | OptimizerConfig::AdaGrad { epsilon, .. },
                "epsilon",
            ) => epsilon,
            (OptimizerConfig::AdamW { weight_decay, .. }, "weight_decay") => weight_decay,
            (OptimizerConfig::RmsProp { rho, .. }, "rho") => rho,
            (OptimizerConfig::AdaGrad { initial_accumulator, .. }, "initial_accumulator") => initial_accumulator,
            _ => return false,
        };
        *slot = value;
        true
    }

    /// A fresh optimiser for `n` parameters.
    pub fn build(self, n: usize) -> alloc::boxed::Box<dyn Optimizer> {
        use alloc::boxed::Box;
        match self {
            OptimizerConfig::Sgd { momentum, nesterov } => Box::new(Sgd::new(n, momentum, nesterov)),
            OptimizerConfig::Adam { beta1, beta2, epsilon } => Box::new(Adam::new(n, beta1, beta2, epsilon, 0.0)),
            OptimizerConfig::AdamW { beta1, beta2, epsilon, weight_decay } => {
                Box::new(Adam::new(n, beta1, beta2, epsilon, weight_decay))
            }
            OptimizerConfig::Nadam { beta1, beta2, epsilon } => Box::new(Nadam::new(n, beta1, beta2, epsilon)),
            OptimizerConfig::RmsProp { rho, epsilon } => Box::new(RmsProp::new(n, rho, epsilon)),
            OptimizerConfig::AdaGrad { initial_accumulator, epsilon } => {
                Box::new(AdaGrad::new(n, initial_accumulator, epsilon))
            }
        }
    }
}

/// What an optimiser step writes: the parameters and, when given, a copy of them.
pub struct Params<'a> {
    pub values: &'a mut [f32],
    pub copy: Option<ParamsCopy<'a>>,
}

impl<'a> From<&'a mut [f32]> for Params<'a> {
    fn from(values: &'a mut [f32]) -> Self {
        Params { values, copy: None }
    }
}

/// A copy of the parameters that an optimiser step rewrites as it updates them, for the
/// products of a data-parallel step to read: each part is written by the thread that updates
/// those parameters, right after it does. The parameters themselves are then read and written
/// by that thread alone: when the other core has read a cache line, writing it must first
/// invalidate the other core's copy, which takes several times longer when the host has put
/// the two vCPUs on different dies (8a, f32, vCPUs apart: optimiser phase 1.42-1.52 -> 0.81-0.83
/// s per 2 epochs).
pub enum ParamsCopy<'a> {
    /// Every parameter, rounded to bf16 as this CPU's bf16 products read them
    /// (`kernels::bf16::round_to_bf16_with`): bf16 products read their weights from it,
    /// rounded once per step instead of in every product, and the other core reads half the
    /// bytes.
    Bf16(&'a mut [u16]),
    /// The parameters from `from` on, as they are: `values[i]` is parameter `from + i` (a
    /// trainer's first layer, before `from`, is read by one core only and needs no copy).
    F32 { from: usize, values: &'a mut [f32] },
}

impl<'a> ParamsCopy<'a> {
    /// Splits off the copy of parameters `offset..end`, the front of what is left.
    fn split_front(&mut self, offset: usize, end: usize) -> ParamsCopy<'a> {
        match self {
            ParamsCopy::Bf16(rounded) => {
                let (front, tail) = core::mem::take(rounded).split_at_mut(end - offset);
                *rounded = tail;
                ParamsCopy::Bf16(front)
            }
            ParamsCopy::F32 { from, values } => {
                let start = (*from).max(offset);
                let (front, tail) = core::mem::take(values).split_at_mut(end.saturating_sub(start));
                *values = tail;
                *from = start + front.len();
                ParamsCopy::F32 { from: start, values: front }
            }
        }
    }

    /// Writes this part, the copy of `params` (its whole in bf16; in f32 the end of it, as
    /// the copied parameters run to the last).
    fn write(self, kernel: Bf16Kernel, params: &[f32]) {
        match self {
            ParamsCopy::Bf16(rounded) => round_to_bf16_with(kernel, params, rounded),
            ParamsCopy::F32 { values, .. } => values.copy_from_slice(&params[params.len() - values.len()..]),
        }
    }
}

/// The gradient an optimiser step reads.
///
/// In data-parallel training each shard of the batch leaves its own gradient; the step adds
/// them as it reads them (in shard order, so the bits depend only on the shard count) instead
/// of a separate pass summing them first. Parameters before `summed_from` (the first layer's
/// weights, whose gradient is one product over the whole batch) are read from `first` alone.
#[derive(Clone, Copy, Debug)]
pub struct Gradient<'a> {
    /// The gradient, or the first shard's.
    pub first: &'a [f32],
    /// The other shards' gradients, added to `first` from `summed_from` on.
    pub others: &'a [&'a [f32]],
    /// The first parameter whose gradient is summed over the shards (`first.len()` when
    /// there is one gradient).
    pub summed_from: usize,
    /// Which thread updates which parameters.
    pub owners: Owners<'a>,
}

impl<'a> From<&'a [f32]> for Gradient<'a> {
    fn from(grads: &'a [f32]) -> Self {
        Gradient { first: grads, others: &[], summed_from: grads.len(), owners: Owners::Even }
    }
}

/// How an optimiser step shares the parameters between threads: each thread should update
/// the parameters whose gradient its own cache holds.
#[derive(Clone, Copy, Debug)]
pub enum Owners<'a> {
    /// `..summed_from` and `summed_from..` each cut into one even part per thread of the
    /// pool (one thread below `PARALLEL_MIN` parameters): what a data-parallel trainer's
    /// shards and first layer hold.
    Even,
    /// Runs of parameters ending at `ends` (increasing, the last at the parameter count),
    /// run `i` updated by the `i % threads`-th task: a tensor-parallel trainer's ownership.
    Runs { threads: usize, ends: &'a [usize] },
}

/// Below this many parameters the element loop runs on one thread: a thread hand-off costs
/// more than it saves.
#[cfg(feature = "std")]
const PARALLEL_MIN: usize = 1 << 15;

/// Calls `update(param, grad, state)` for every parameter, with its `S` floats of `state`
/// (stored side by side).
///
/// Split across threads by position, not by work stealing, as [`Gradient::owners`] says: by
/// default `..summed_from` and `summed_from..` are each cut into one even part per thread,
/// and part `t` of both goes to the `t`-th task, the first running on the calling thread.
/// The data-parallel trainer splits the first
/// layer's weight rows (its forward pass and weight gradient) the same way, and its shards in
/// the same order, so each thread mostly updates parameters that its own cache holds and, in
/// the first layer, that no other core has read: when the host places the two vCPUs far
/// apart, moving gradients between cores made this loop several times slower, and
/// invalidating another core's copies of the weights about twice as slow.
fn for_each_param<const S: usize>(
    params: Params<'_>,
    state: &mut [f32],
    grads: Gradient<'_>,
    update: impl Fn(&mut f32, f32, &mut [f32; S]) + Sync,
) {
    let Params { values: params, copy } = params;
    let n = params.len();
    let copied = match &copy {
        Some(ParamsCopy::Bf16(rounded)) => rounded.len(),
        Some(ParamsCopy::F32 { from, values }) => from + values.len(),
        None => n,
    };
    assert_eq!(copied, n, "optimizer: {n} parameters but a copy that ends at {copied}");
    let mut rest_c = copy;
    assert!(
        grads.first.len() == n && grads.others.iter().all(|g| g.len() == n),
        "optimizer: {n} parameters but gradients of {} floats",
        grads.first.len()
    );
    assert!(grads.summed_from <= n, "optimizer: summed_from {} beyond {n} parameters", grads.summed_from);
    assert_eq!(state.len(), n * S, "optimizer: built for {} parameters, given {n}", state.len() / S.max(1));
    let (threads, ends) = match grads.owners {
        Owners::Even => {
            #[cfg(feature = "std")]
            let threads = if n > PARALLEL_MIN { rayon::current_num_threads() } else { 1 };
            #[cfg(not(feature = "std"))]
            let threads = 1;
            let halves = [(0, grads.summed_from), (grads.summed_from, n)];
            (
                threads,
                halves.iter().flat_map(|&(lo, hi)| (1..=threads).map(move |t| lo + (hi - lo) * t / threads)).collect(),
            )
        }
        Owners::Runs { threads, ends } => {
            assert!(
                threads > 0 && ends.last() == Some(&n) && ends.windows(2).all(|w| w[0] <= w[1]),
                "optimizer: runs for {threads} threads do not cover {n} parameters in order"
            );
            (threads, ends.to_vec())
        }
    };
    let mut parts: Vec<Vec<Piece<'_>>> = (0..threads).map(|_| Vec::new()).collect();
    let (mut rest_p, mut rest_s, mut offset) = (params, state, 0);
    let starts = core::iter::once(0).chain(ends.iter().copied());
    for (i, (start, end)) in starts.zip(ends.iter().copied()).enumerate() {
        // A run across `summed_from` goes as two pieces (`update_range` reads one side of it).
        for piece_end in [grads.summed_from.clamp(start, end), end] {
            let (p, tail_p) = core::mem::take(&mut rest_p).split_at_mut(piece_end - offset);
            let (s, tail_s) = core::mem::take(&mut rest_s).split_at_mut((piece_end - offset) * S);
            let c = rest_c.as_mut().map(|rest| rest.split_front(offset, piece_end));
            if !p.is_empty() {
                parts[i % threads].push(Piece { offset, params: p, copy: c, state: s });
            }
            (rest_p, rest_s, offset) = (tail_p, tail_s, piece_end);
        }
    }
    let run = |part: Vec<Piece<'_>>| {
        for piece in part {
            update_range(piece, grads, &update);
        }
    };
    #[cfg(feature = "std")]
    if threads > 1 {
        crate::parallel::map_parts(parts, run);
        return;
    }
    parts.into_iter().for_each(run);
}

/// A run of parameters for one thread: the index of its first parameter, the parameters,
/// their copy (if kept) and their state.
struct Piece<'p> {
    offset: usize,
    params: &'p mut [f32],
    copy: Option<ParamsCopy<'p>>,
    state: &'p mut [f32],
}

/// Parameters updated before their copy is written: few enough that they are still in L1
/// when it is.
const COPY_CHUNK: usize = 2048;

/// [`for_each_param`]'s loop over one piece, which lies on one side of `grads.summed_from`.
fn update_range<const S: usize>(piece: Piece<'_>, grads: Gradient<'_>, update: &impl Fn(&mut f32, f32, &mut [f32; S])) {
    let Piece { offset, params, copy: Some(mut copy), state } = piece else {
        let Piece { offset, params, state, .. } = piece;
        return update_values(offset, params, state, grads, update);
    };
    let (kernel, mut state) = (Bf16Kernel::detect(), state);
    for (c, params) in params.chunks_mut(COPY_CHUNK).enumerate() {
        let (chunk_state, rest) = core::mem::take(&mut state).split_at_mut(params.len() * S);
        state = rest;
        let chunk_offset = offset + c * COPY_CHUNK;
        update_values(chunk_offset, params, chunk_state, grads, update);
        copy.split_front(chunk_offset, chunk_offset + params.len()).write(kernel, params);
    }
}

/// The update of the parameters `offset..offset + params.len()`.
fn update_values<const S: usize>(
    offset: usize,
    params: &mut [f32],
    state: &mut [f32],
    grads: Gradient<'_>,
    update: &impl Fn(&mut f32, f32, &mut [f32; S]),
) {
    let first = &grads.first[offset..offset + params.len()];
    // One pass: the shards' gradients are added as the update reads them.
    match grads.others {
        _ if offset < grads.summed_from || grads.others.is_empty() => {
            update_each(params, state, first.iter().copied(), update)
        }
        [other] => update_each(params, state, first.iter().zip(&other[offset..]).map(|(a, b)| a + b), update),
        others => {
            let sum = |(i, &a): (usize, &f32)| others.iter().fold(a, |g, other| g + other[offset + i]);
            update_each(params, state, first.iter().enumerate().map(sum), update)
        }
    }
}

/// `update` for each parameter with its gradient (from `grads`) and state.
fn update_each<const S: usize>(
    params: &mut [f32],
    state: &mut [f32],
    grads: impl Iterator<Item = f32>,
    update: &impl Fn(&mut f32, f32, &mut [f32; S]),
) {
    if S == 0 {
        // No state to zip with (`chunks_exact_mut` needs a non-zero size).
        params.iter_mut().zip(grads).for_each(|(p, g)| update(p, g, &mut [0.0; S]));
        return;
    }
    for ((p, g), s) in params.iter_mut().zip(grads).zip(state.chunks_exact_mut(S.max(1))) {
        let s: &mut [f32; S] = s.try_into().unwrap_or_else(|_| unreachable!("chunks of S"));
        update(p, g, s);
    }
}

/// [`for_each_param`] for optimisers without state.
fn for_each_stateless(params: Params<'_>, grads: Gradient<'_>, update: impl Fn(&mut f32, f32) + Sync) {
    for_each_param::<0>(params, &mut [], grads, |p, g, _| update(p, g));
}

/// Per-parameter state, `S` floats per parameter stored side by side (for Adam: m then v),
/// so one part of the parameters and its state split across threads together.
struct Slots<const S: usize> {
    state: Vec<f32>,
}

impl<const S: usize> Slots<S> {
    fn new(n: usize, init: f32) -> Self {
        Slots { state: vec![init; n * S] }
    }

    /// Calls `update(param, grad, state)` for every parameter.
    fn for_each(
        &mut self,
        params: Params<'_>,
        grads: Gradient<'_>,
        update: impl Fn(&mut f32, f32, &mut [f32; S]) + Sync,
    ) {
        for_each_param(params, &mut self.state, grads, update);
    }
}

/// Stochastic gradient descent with optional (Nesterov) momentum, as Keras's `SGD`:
/// `v = momentum * v - lr * g`; then `p += v`, or with Nesterov `p += momentum * v - lr * g`.
pub struct Sgd {
    n: usize,
    momentum: f32,
    nesterov: bool,
    velocity: Slots<1>,
    t: u64,
}

impl Sgd {
    pub fn new(n: usize, momentum: f32, nesterov: bool) -> Self {
        // Plain SGD keeps no state.
        let slots = if momentum != 0.0 { n } else { 0 };
        Sgd { n, momentum, nesterov, velocity: Slots::new(slots, 0.0), t: 0 }
    }
}

impl Optimizer for Sgd {
    fn set_momentum(&mut self, momentum: f32) {
        // Plain SGD keeps no velocity: it starts at zero when momentum first appears.
        if self.momentum == 0.0 && momentum != 0.0 && self.velocity.state.is_empty() {
            self.velocity = Slots::new(self.n, 0.0);
        }
        self.momentum = momentum;
    }

    fn apply(&mut self, params: Params<'_>, grads: Gradient<'_>, lr: f32) {
        self.t += 1;
        let (momentum, nesterov) = (self.momentum, self.nesterov);
        if momentum == 0.0 {
            assert_eq!(
                params.values.len(),
                self.n,
                "optimizer: built for {} parameters, given {}",
                self.n,
                params.values.len()
            );
            for_each_stateless(params, grads, |p, g| *p -= lr * g);
            return;
        }
        self.velocity.for_each(params, grads, |p, g, [v]| {
            *v = momentum * *v - lr * g;
            *p += if nesterov { momentum * *v - lr * g } else { *v };
        });
    }

    fn iterations(&self) -> u64 {
        self.t
    }

    fn state(&self) -> OptimizerState {
        OptimizerState { t: self.t, scalars: vec![self.momentum as f64], slots: self.velocity.state.clone() }
    }

    fn restore(&mut self, state: &OptimizerState) -> crate::Result<()> {
        // Plain SGD keeps no velocity until momentum appears: either length is valid.
        let slots = if state.slots.is_empty() { 0 } else { self.n };
        state.check(1, slots)?;
        (self.t, self.momentum, self.velocity.state) = (state.t, state.scalars[0] as f32, state.slots.clone());
        Ok(())
    }
}

/// Adam (Kingma & Ba, 2015) in Keras's "epsilon hat" form, with decoupled weight decay
/// (AdamW, Loshchilov & Hutter, 2019) when `weight_decay > 0`, applied first as Keras does:
/// `p -= lr * wd * p`; `m += (g - m)(1 - b1)`; `v += (g^2 - v)(1 - b2)`;
/// `p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)`.
pub struct Adam {
    beta1: f32,
    beta2: f32,
    epsilon: f32,
    weight_decay: f32,
    moments: Slots<2>,
    t: u64,
}

impl Adam {
    pub fn new(n: usize, beta1: f32, beta2: f32, epsilon: f32, weight_decay: f32) -> Self {
        Adam { beta1, beta2, epsilon, weight_decay, moments: Slots::new(n, 0.0), t: 0 }
    }
}

impl Optimizer for Adam {
    fn apply(&mut self, params: Params<'_>, grads: Gradient<'_>, lr: f32) {
        self.t += 1;
        let t = self.t as f64;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.epsilon);
        let alpha = (lr as f64 * sqrt(1.0 - libm::pow(b2 as f64, t)) / (1.0 - libm::pow(b1 as f64, t))) as f32;
        let decay = lr * self.weight_decay;
        self.moments.for_each(params, grads, |p, g, [m, v]| {
            *p -= decay * *p;
            *m += (g - *m) * (1.0 - b1);
            *v += (g * g - *v) * (1.0 - b2);
            *p -= alpha * *m / (sqrtf(*v) + eps);
        });
    }

    fn iterations(&self) -> u64 {
        self.t
    }

    fn state(&self) -> OptimizerState {
        OptimizerState { t: self.t, scalars: Vec::new(), slots: self.moments.state.clone() }
    }

    fn restore(&mut self, state: &OptimizerState) -> crate::Result<()> {
        state.check(0, self.moments.state.len())?;
        self.t = state.t;
        self.moments.state.copy_from_slice(&state.slots);
        Ok(())
    }
}

/// Nadam: Adam with Nesterov momentum (Dozat, 2016), in Keras 3's variant, which uses
/// Dozat's momentum schedule `u_t = b1 (1 - 0.5 * 0.96^t)` and its running product
/// `U_t = u_1 ... u_t`:
/// `m_hat = u_{t+1} m / (1 - U_t u_{t+1}) + (1 - u_t) g / (1 - U_t)`,
/// `v_hat = v / (1 - b2^t)`, `p -= lr * m_hat / (sqrt(v_hat) + eps)`.
/// Keras's variant (not PyTorch's `NAdam`, whose schedule decays with 0.96^(0.004 t)) so
/// that the notebook's recipe trains the same way here as there.
pub struct Nadam {
    beta1: f32,
    beta2: f32,
    epsilon: f32,
    /// `U_t`, the running product of the momentum schedule (f64: it is a product of
    /// thousands of factors).
    u_product: f64,
    moments: Slots<2>,
    t: u64,
}

impl Nadam {
    pub fn new(n: usize, beta1: f32, beta2: f32, epsilon: f32) -> Self {
        Nadam { beta1, beta2, epsilon, u_product: 1.0, moments: Slots::new(n, 0.0), t: 0 }
    }

    fn momentum_schedule(beta1: f32, t: u64) -> f64 {
        beta1 as f64 * (1.0 - 0.5 * libm::pow(0.96, t as f64))
    }
}

impl Optimizer for Nadam {
    fn apply(&mut self, params: Params<'_>, grads: Gradient<'_>, lr: f32) {
        self.t += 1;
        let (b1, b2, eps) = (self.beta1, self.beta2, self.epsilon);
        let u_t = Self::momentum_schedule(b1, self.t);
        let u_next = Self::momentum_schedule(b1, self.t + 1);
        self.u_product *= u_t;
        let m_coef = (u_next / (1.0 - self.u_product * u_next)) as f32;
        let g_coef = ((1.0 - u_t) / (1.0 - self.u_product)) as f32;
        let v_coef = (1.0 / (1.0 - libm::pow(b2 as f64, self.t as f64))) as f32;
        self.moments.for_each(params, grads, |p, g, [m, v]| {
            *m += (g - *m) * (1.0 - b1);
            *v += (g * g - *v) * (1.0 - b2);
            let m_hat = m_coef * *m + g_coef * g;
            let v_hat = *v * v_coef;
            *p -= lr * m_hat / (sqrtf(v_hat) + eps);
        });
    }

    fn iterations(&self) -> u64 {
        self.t
    }

    fn state(&self) -> OptimizerState {
        OptimizerState { t: self.t, scalars: vec![self.u_product], slots: self.moments.state.clone() }
    }

    fn restore(&mut self, state: &OptimizerState) -> crate::Result<()> {
        state.check(1, self.moments.state.len())?;
        self.t = state.t;
        self.moments.state.copy_from_slice(&state.slots);
        self.u_product = state.scalars[0];
        Ok(())
    }
}

/// RMSProp (Hinton's lecture 6e), as Keras's `RMSprop` without momentum or centring:
/// `v = rho v + (1 - rho) g^2`; `p -= lr g / sqrt(v + eps)`.
pub struct RmsProp {
    rho: f32,
    epsilon: f32,
    mean_square: Slots<1>,
    t: u64,
}

impl RmsProp {
    pub fn new(n: usize, rho: f32, epsilon: f32) -> Self {
        RmsProp { rho, epsilon, mean_square: Slots::new(n, 0.0), t: 0 }
    }
}

impl Optimizer for RmsProp {
    fn apply(&mut self, params: Params<'_>, grads: Gradient<'_>, lr: f32) {
        self.t += 1;
        let (rho, eps) = (self.rho, self.epsilon);
        self.mean_square.for_each(params, grads, |p, g, [v]| {
            *v = rho * *v + (1.0 - rho) * g * g;
            *p -= lr * g / sqrtf(*v + eps);
        });
    }

    fn iterations(&self) -> u64 {
        self.t
    }

    fn state(&self) -> OptimizerState {
        OptimizerState { t: self.t, scalars: Vec::new(), slots: self.mean_square.state.clone() }
    }

    fn restore(&mut self, state: &OptimizerState) -> crate::Result<()> {
        state.check(0, self.mean_square.state.len())?;
        self.t = state.t;
        self.mean_square.state.copy_from_slice(&state.slots);
        Ok(())
    }
}

/// AdaGrad (Duchi et al., 2011), as Keras's `Adagrad` (accumulator starts at 0.1):
/// `a += g^2`; `p -= lr g / sqrt(a + eps)`.
pub struct AdaGrad {
    epsilon: f32,
    accumulator: Slots<1>,
    t: u64,
}

impl AdaGrad {
    pub fn new(n: usize, initial_accumulator: f32, epsilon: f32) -> Self {
        AdaGrad { epsilon, accumulator: Slots::new(n, initial_accumulator), t: 0 }
    }
}

impl Optimizer for AdaGrad {
    fn apply(&mut self, params: Params<'_>, grads: Gradient<'_>, lr: f32) {
        self.t += 1;
        let eps = self.epsilon;
        self.accumulator.for_each(params, grads, |p, g, [a]| {
            *a += g * g;
            *p -= lr * g / sqrtf(*a + eps);
        });
    }

    fn iterations(&self) -> u64 {
        self.t
    }

    fn state(&self) -> OptimizerState {
        OptimizerState { t: self.t, scalars: Vec::new(), slots: self.accumulator.state.clone() }
    }

    fn restore(&mut self, state: &OptimizerState) -> crate::Result<()> {
        state.check(0, self.accumulator.state.len())?;
        self.t = state.t;
        self.accumulator.state.copy_from_slice(&state.slots);
        Ok(())
    }
}
