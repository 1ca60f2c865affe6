//! The deployable inference path: a model read in place from a `&[u8]` (for example
//! `include_bytes!` of a `.simdnn` file), and prediction into caller-provided scratch memory.
//! Builds without `std`; loading and predicting allocate nothing, and errors are plain
//! values ([`InferError`]), so a device needs no allocator. Imports `kernels` (activations,
//! softmax), the container check of `format` and `rng`; never `train` or `data`.
//!
//! Weights are read where they lie in the file (f32, bf16 or int8 with per-channel scales):
//! tensors sit at byte offsets with no alignment, so the kernels use unaligned loads. MC dropout recomputes only
//! the layers from the first dropout on, from an activation saved in the scratch memory.

use core::fmt;

use wide::f32x16;

use crate::format::{
    ContainerError, DTYPE_BF16, DTYPE_F32, DTYPE_INT8, DTYPE_INT8_U8, LAYER_ALPHA_DROPOUT, LAYER_BATCH_NORM,
    LAYER_DENSE, LAYER_DROPOUT, MAGIC, PREPROCESS_SCALE, PREPROCESS_STANDARDISE, VERSION, activation_from_code,
    check_container,
};
use crate::kernels::Activation;
use crate::kernels::activation::{SELU_ALPHA, SELU_SCALE};
use crate::kernels::bf16::{gemv_bf16, round_to_bf16};
use crate::kernels::int8::{
    MAX_INPUTS, U8Quant, gemv_u8_i8, min_max, packed_column_sum, packed_len, packed_padding_is_zero, quantize_u8,
};
use crate::kernels::scalar::sqrtf;
use crate::kernels::softmax::softmax_rows;
use crate::rng::{seeded, uniform_f32};

/// Layers a model may have (a fixed table: loading allocates nothing).
pub const MAX_LAYERS: usize = 64;

/// Why a model cannot be loaded or run. `Copy`, allocation-free.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InferError {
    Container(ContainerError),
    /// The payload ends inside a field.
    Truncated,
    TooManyLayers(u32),
    /// Layer `index` is malformed (unknown kind or activation, wrong sizes).
    BadLayer(u32),
    BadPreprocess,
    /// Bytes after the last layer, or a last layer that is not dense with softmax.
    BadModel,
    ScratchTooSmall {
        needed: usize,
    },
    /// The input is not a whole number of images of `expected` bytes.
    InputSize {
        expected: usize,
    },
    /// The output buffer must hold `expected` floats.
    OutputSize {
        expected: usize,
    },
}

impl fmt::Display for InferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InferError::Container(e) => write!(f, "bad model file: {e:?}"),
            InferError::Truncated => write!(f, "bad model file: truncated"),
            InferError::TooManyLayers(n) => write!(f, "bad model file: {n} layers (at most {MAX_LAYERS})"),
            InferError::BadLayer(i) => write!(f, "bad model file: layer {i} is malformed"),
            InferError::BadPreprocess => write!(f, "bad model file: unknown preprocessing"),
            InferError::BadModel => write!(f, "bad model file: not a sequential softmax classifier"),
            InferError::ScratchTooSmall { needed } => write!(f, "scratch memory too small: needs {needed} floats"),
            InferError::InputSize { expected } => {
                write!(f, "input has the wrong size: expected {expected} bytes per image")
            }
            InferError::OutputSize { expected } => {
                write!(f, "output buffer has the wrong size: expected {expected} floats")
            }
        }
    }
}

/// A little-endian f32 tensor in the model's bytes.
#[derive(Clone, Copy, Debug)]
struct Tensor<'a> {
    bytes: &'a [u8],
}

impl Tensor<'_> {
    fn get(&self, i: usize) -> f32 {
        f32::from_bits(self.bits(i))
    }

    /// Value `i` as its 32 raw bits (the tensor of an int8 layer's weight sums holds i32s).
    fn bits(&self, i: usize) -> u32 {
        let b = &self.bytes[4 * i..4 * i + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Values `i..i+16`.
    fn load16(&self, i: usize) -> f32x16 {
        let b = &self.bytes[4 * i..4 * i + 64];
        // SAFETY: `b` holds 64 readable bytes (the slice above checked it); the f32s are
        // little-endian like every target the crate builds for (lib.rs), and read_unaligned
        // has no alignment needs.
        f32x16::new(unsafe { core::ptr::read_unaligned(b.as_ptr() as *const [f32; 16]) })
    }
}

/// A dense layer's weights as stored (`[n_in, n_out]` row-major).
#[derive(Clone, Copy, Debug)]
enum Weights<'a> {
    /// Widened to f32 and multiplied with the f32 input by [`gemv`].
    Wide(WideWeights<'a>),
    /// bf16 bits, little-endian: multiplied with the input rounded to bf16
    /// ([`crate::kernels::bf16`]).
    Bf16(&'a [u8]),
    /// Int8 weights times the input quantised to u8 ([`dense_int8`]).
    Int8U8(Int8Layer<'a>),
}

/// Weights that [`gemv`] widens to f32.
#[derive(Clone, Copy, Debug)]
enum WideWeights<'a> {
    F32(Tensor<'a>),
    /// One scale per output channel, then the int8 values.
    Int8 {
        scales: Tensor<'a>,
        q: &'a [u8],
    },
}

/// Int8 weights in groups of four inputs, multiplied with the layer's input quantised to u8
/// (see [`crate::kernels::int8`]).
#[derive(Clone, Copy, Debug)]
struct Int8Layer<'a> {
    /// One per output channel.
    scales: Tensor<'a>,
    /// `None`: from each input's range.
    input: Option<U8Quant>,
    /// Per output, the sum of its weights (i32): what the input's zero point adds.
    sums: Tensor<'a>,
    packed: &'a [i8],
}

impl WideWeights<'_> {
    /// Weights `at..at+16` as f32 (int8: unscaled).
    #[inline(always)]
    fn load16(&self, at: usize) -> f32x16 {
        match *self {
            WideWeights::F32(t) => t.load16(at),
            WideWeights::Int8 { q, .. } => {
                let b = &q[at..at + 16];
                let wide8 = wide::i8x16::new(core::array::from_fn(|k| b[k] as i8));
                f32x16::from_i32x16(wide::i32x16::from(wide::i16x16::from(wide8)))
            }
        }
    }

    #[inline(always)]
    fn get(&self, at: usize) -> f32 {
        match *self {
            WideWeights::F32(t) => t.get(at),
            WideWeights::Int8 { q, .. } => q[at] as i8 as f32,
        }
    }

    /// Output channel `j`'s scale (1 unless int8).
    fn scale(&self, j: usize) -> f32 {
        match self {
            WideWeights::Int8 { scales, .. } => scales.get(j),
            WideWeights::F32(_) => 1.0,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Op<'a> {
    Empty,
    Dense {
        n_in: usize,
        n_out: usize,
        act: Activation,
        w: Weights<'a>,
        b: Tensor<'a>,
    },
    BatchNorm {
        f: usize,
        act: Activation,
        eps: f32,
        gamma: Tensor<'a>,
        beta: Tensor<'a>,
        mean: Tensor<'a>,
        var: Tensor<'a>,
    },
    Dropout {
        f: usize,
        rate: f32,
        alpha: bool,
    },
}

#[derive(Clone, Copy, Debug)]
enum Pre<'a> {
    Scale(f32),
    Standardise { mean: Tensor<'a>, inv_std: Tensor<'a> },
}

/// A model borrowed from its file's bytes.
#[derive(Clone, Debug)]
pub struct Model<'a> {
    input_dim: usize,
    pre: Pre<'a>,
    ops: [Op<'a>; MAX_LAYERS],
    n_ops: usize,
    widest: usize,
    classes: usize,
    /// The first layer is int8 with the preprocessing's scale as its input scale: it takes
    /// the image's bytes as they are (the quantisation of `byte * scale` gives `byte` back).
    bytes_into_first_layer: bool,
}

/// A cursor over the payload that checks every length before reading.
struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], InferError> {
        if n > self.bytes.len() {
            return Err(InferError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, InferError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, InferError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn f32(&mut self) -> Result<f32, InferError> {
        Ok(f32::from_bits(self.u32()?))
    }
    fn size(&mut self, layer: u32) -> Result<usize, InferError> {
        match self.u32()? {
            0 => Err(InferError::BadLayer(layer)),
            n => Ok(n as usize),
        }
    }
    fn tensor(&mut self, n: usize) -> Result<Tensor<'a>, InferError> {
        Ok(Tensor { bytes: self.take(n.checked_mul(4).ok_or(InferError::Truncated)?)? })
    }

    /// An int8 layer with u8 inputs (`FORMAT.md`), its weight sums and padding checked.
    fn int8_layer(&mut self, layer: u32, n_in: usize, n_out: usize) -> Result<Int8Layer<'a>, InferError> {
        let bad = InferError::BadLayer(layer);
        if n_in > MAX_INPUTS {
            return Err(bad);
        }
        let scales = self.tensor(n_out)?;
        let input = match (self.f32()?, self.u8()?) {
            (0.0, 0) => None,
            (scale, zero_point) if scale.is_finite() && scale > 0.0 => Some(U8Quant { scale, zero_point }),
            _ => return Err(bad),
        };
        let sums = self.tensor(n_out)?;
        let packed: &[i8] = wide::bytemuck::cast_slice(self.take(packed_len(n_in, n_out).ok_or(bad)?)?);
        if !packed_padding_is_zero(packed, n_in, n_out)
            || (0..n_out).any(|j| packed_column_sum(packed, n_out, j) as u32 != sums.bits(j))
        {
            return Err(bad);
        }
        Ok(Int8Layer { scales, input, sums, packed })
    }
}

impl<'a> Model<'a> {
    /// Reads a `.simdnn` file (versions 1 and 2) in place. Every size is checked against the
    /// bytes before it is used; malformed input is an error, never a panic.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, InferError> {
        let (version, payload) = check_container(bytes, &MAGIC, VERSION).map_err(InferError::Container)?;
        let mut c = Cursor { bytes: payload };
        let input_dim = c.size(0)?;
        let pre = match c.u8()? {
            PREPROCESS_SCALE => Pre::Scale(c.f32()?),
            PREPROCESS_STANDARDISE => Pre::Standardise { mean: c.tensor(input_dim)?, inv_std: c.tensor(input_dim)? },
            _ => return Err(InferError::BadPreprocess),
        };
        let n = c.u32()?;
        if n as usize > MAX_LAYERS || n == 0 {
            return Err(InferError::TooManyLayers(n));
        }
        let mut model = Model {
            input_dim,
            pre,
            ops: [Op::Empty; MAX_LAYERS],
            n_ops: n as usize,
            widest: input_dim,
            classes: 0,
            bytes_into_first_layer: false,
        };
        let mut width = input_dim;
        for i in 0..n {
            let kind = c.u8()?;
            let (n_in, n_out) = (c.size(i)?, c.size(i)?);
            if n_in != width || (kind != LAYER_DENSE && (n_out != n_in || version < 2)) {
                return Err(InferError::BadLayer(i));
            }
            let op = match kind {
                LAYER_DENSE => {
                    let act = activation_from_code(c.u8()?, c.f32()?).ok_or(InferError::BadLayer(i))?;
                    if (act == Activation::Softmax) != (i + 1 == n) {
                        return Err(InferError::BadLayer(i));
                    }
                    let count = n_in.checked_mul(n_out).ok_or(InferError::BadLayer(i))?;
                    let w = match c.u8()? {
                        DTYPE_F32 => Weights::Wide(WideWeights::F32(c.tensor(count)?)),
                        DTYPE_BF16 if version >= 3 => {
                            Weights::Bf16(c.take(count.checked_mul(2).ok_or(InferError::Truncated)?)?)
                        }
                        DTYPE_INT8 if version >= 3 => {
                            Weights::Wide(WideWeights::Int8 { scales: c.tensor(n_out)?, q: c.take(count)? })
                        }
                        DTYPE_INT8_U8 if version >= 4 => Weights::Int8U8(c.int8_layer(i, n_in, n_out)?),
                        _ => return Err(InferError::BadLayer(i)),
                    };
                    Op::Dense { n_in, n_out, act, w, b: c.tensor(n_out)? }
                }
                LAYER_BATCH_NORM => {
                    let act = activation_from_code(c.u8()?, c.f32()?).ok_or(InferError::BadLayer(i))?;
                    let (_momentum, eps) = (c.f32()?, c.f32()?);
                    if act == Activation::Softmax || !(eps.is_finite() && eps > 0.0) {
                        return Err(InferError::BadLayer(i));
                    }
                    let (gamma, beta, mean, var) = (c.tensor(n_in)?, c.tensor(n_in)?, c.tensor(n_in)?, c.tensor(n_in)?);
                    Op::BatchNorm { f: n_in, act, eps, gamma, beta, mean, var }
                }
                LAYER_DROPOUT | LAYER_ALPHA_DROPOUT => {
                    let rate = c.f32()?;
                    if !(0.0..1.0).contains(&rate) {
                        return Err(InferError::BadLayer(i));
                    }
                    Op::Dropout { f: n_in, rate, alpha: kind == LAYER_ALPHA_DROPOUT }
                }
                _ => return Err(InferError::BadLayer(i)),
            };
            model.ops[i as usize] = op;
            width = n_out;
            model.widest = model.widest.max(width);
        }
        if !c.bytes.is_empty() || !matches!(model.ops[model.n_ops - 1], Op::Dense { act: Activation::Softmax, .. }) {
            return Err(InferError::BadModel);
        }
        model.classes = width;
        model.bytes_into_first_layer = match (model.pre, model.ops[0]) {
            (Pre::Scale(factor), Op::Dense { w: Weights::Int8U8(Int8Layer { input: Some(q), .. }), .. }) => {
                q.scale == factor && q.zero_point == 0
            }
            _ => false,
        };
        Ok(model)
    }

    /// Bytes per input image.
    pub fn input_len(&self) -> usize {
        self.input_dim
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Floats of scratch memory that [`Model::predict`] and [`Model::predict_mc`] need.
    pub fn scratch_len(&self) -> usize {
        let w = self.widest;
        // Activations (two), MC's saved prefix, mean and deviation, then the int8 layers'
        // i32 accumulators and the narrow copy of a layer's input (u8 or bf16).
        3 * w + 2 * self.classes + w + w.div_ceil(2)
    }

    /// Class probabilities of one image (its raw bytes), in the first `classes()` floats of
    /// the returned slice of `scratch`.
    pub fn predict<'s>(&self, image: &[u8], scratch: &'s mut [f32]) -> Result<&'s [f32], InferError> {
        self.check(image, scratch)?;
        let Scratch { a, b, mut ints, .. } = self.split(scratch);
        let in_a = self.run_prefix(image, self.n_ops, a, b, &mut ints);
        let out = if in_a { &mut a[..self.classes] } else { &mut b[..self.classes] };
        softmax_rows(out, self.classes);
        Ok(out)
    }

    /// Class probabilities of many images (`images` holds them back to back, `input_len()`
    /// bytes each) into `probs` (`classes()` floats per image), one image at a time through
    /// the same scratch memory.
    pub fn predict_batch(&self, images: &[u8], probs: &mut [f32], scratch: &mut [f32]) -> Result<(), InferError> {
        let n = images.len() / self.input_dim;
        if !images.len().is_multiple_of(self.input_dim) {
            return Err(InferError::InputSize { expected: self.input_dim });
        }
        if probs.len() != n * self.classes {
            return Err(InferError::OutputSize { expected: n * self.classes });
        }
        for (image, out) in images.chunks_exact(self.input_dim).zip(probs.chunks_exact_mut(self.classes)) {
            out.copy_from_slice(self.predict(image, scratch)?);
        }
        Ok(())
    }

    /// Whether the model has a dropout layer (without one, every MC dropout sample is the same).
    pub fn has_dropout(&self) -> bool {
        self.ops[..self.n_ops].iter().any(|op| matches!(op, Op::Dropout { .. }))
    }

    /// MC dropout: the mean and standard deviation of the class probabilities over `samples`
    /// stochastic passes with dropout on (sample `s` draws masks from `(seed, s)`). The
    /// layers before the first dropout run once.
    pub fn predict_mc<'s>(
        &self,
        image: &[u8],
        samples: usize,
        seed: u64,
        scratch: &'s mut [f32],
    ) -> Result<(&'s [f32], &'s [f32]), InferError> {
        self.check(image, scratch)?;
        let Scratch { a, b, saved, mean, std, mut ints } = self.split(scratch);
        let first_dropout =
            self.ops[..self.n_ops].iter().position(|op| matches!(op, Op::Dropout { .. })).unwrap_or(self.n_ops);
        let prefix_in_a = self.run_prefix(image, first_dropout, a, b, &mut ints);
        saved.copy_from_slice(if prefix_in_a { a } else { b });
        mean.fill(0.0);
        std.fill(0.0);
        for s in 0..samples.max(1) {
            a.copy_from_slice(saved);
            let in_a = self.run_range(first_dropout..self.n_ops, a, b, &mut ints, Some((seed, s as u64)));
            let probs = if in_a { &mut a[..self.classes] } else { &mut b[..self.classes] };
            softmax_rows(probs, self.classes);
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
        Ok((mean, std))
    }

    fn check(&self, image: &[u8], scratch: &[f32]) -> Result<(), InferError> {
        if image.len() != self.input_dim {
            return Err(InferError::InputSize { expected: self.input_dim });
        }
        if scratch.len() < self.scratch_len() {
            return Err(InferError::ScratchTooSmall { needed: self.scratch_len() });
        }
        Ok(())
    }

    /// Cuts `scratch` (at least `scratch_len()` floats) into its buffers.
    fn split<'s>(&self, scratch: &'s mut [f32]) -> Scratch<'s> {
        let w = self.widest;
        let (a, rest) = scratch.split_at_mut(w);
        let (b, rest) = rest.split_at_mut(w);
        let (saved, rest) = rest.split_at_mut(w);
        let (mean, rest) = rest.split_at_mut(self.classes);
        let (std, rest) = rest.split_at_mut(self.classes);
        let (acc, rest) = rest.split_at_mut(w);
        let narrow = &mut rest[..w.div_ceil(2)];
        Scratch { a, b, saved, mean, std, ints: IntScratch { narrow, acc: wide::bytemuck::cast_slice_mut(acc) } }
    }

    fn preprocess(&self, image: &[u8], out: &mut [f32]) {
        match self.pre {
            Pre::Scale(s) => out.iter_mut().zip(image).for_each(|(o, &p)| *o = p as f32 * s),
            Pre::Standardise { mean, inv_std } => {
                for (i, (o, &p)) in out.iter_mut().zip(image).enumerate() {
                    *o = (p as f32 - mean.get(i)) * inv_std.get(i);
                }
            }
        }
    }

    /// Runs layers `0..end` on `image`; returns whether the result is in `a`.
    fn run_prefix(&self, image: &[u8], end: usize, a: &mut [f32], b: &mut [f32], ints: &mut IntScratch<'_>) -> bool {
        match (self.bytes_into_first_layer && end > 0, self.pre, self.ops[0]) {
            (true, Pre::Scale(scale), Op::Dense { n_out, act, w: Weights::Int8U8(layer), b: bias, .. }) => {
                let quant = U8Quant { scale, zero_point: 0 };
                dense_int8(image, quant, &layer, bias, ints.acc, &mut a[..n_out]);
                act.forward(&mut a[..n_out]);
                self.run_range(1..end, a, b, ints, None)
            }
            _ => {
                self.preprocess(image, a);
                self.run_range(0..end, a, b, ints, None)
            }
        }
    }

    /// Runs `layers` from the values in `a`, ping-ponging between `a` and `b`; returns
    /// whether the result is in `a`.
    fn run_range(
        &self,
        layers: core::ops::Range<usize>,
        a: &mut [f32],
        b: &mut [f32],
        ints: &mut IntScratch<'_>,
        noise: Option<(u64, u64)>,
    ) -> bool {
        let mut in_a = true;
        for (l, op) in self.ops[layers.clone()].iter().enumerate() {
            let (src, dst) = if in_a { (&mut *a, &mut *b) } else { (&mut *b, &mut *a) };
            match *op {
                Op::Dense { n_in, n_out, act, w, b: bias } => {
                    let (x, y) = (&src[..n_in], &mut dst[..n_out]);
                    match w {
                        Weights::Int8U8(layer) => {
                            let quant = layer.input.unwrap_or_else(|| {
                                let (lo, hi) = min_max(x);
                                U8Quant::covering(lo, hi)
                            });
                            let (x_u8, acc) = ints.bytes(n_in);
                            quantize_u8(x, quant, x_u8);
                            dense_int8(x_u8, quant, &layer, bias, acc, y);
                        }
                        Weights::Bf16(weights) => {
                            let x_bf16 = ints.halves(n_in);
                            round_to_bf16(x, x_bf16);
                            gemv_bf16(x_bf16, weights, n_out, y);
                            y.iter_mut().enumerate().for_each(|(j, v)| *v += bias.get(j));
                        }
                        Weights::Wide(w) => gemv(x, w, bias, n_out, y),
                    }
                    act.forward(&mut dst[..n_out]);
                    in_a = !in_a;
                }
                Op::BatchNorm { f, act, eps, gamma, beta, mean, var } => {
                    for (j, v) in src[..f].iter_mut().enumerate() {
                        let scale = gamma.get(j) / libm::sqrtf(var.get(j) + eps);
                        *v = (*v - mean.get(j)) * scale + beta.get(j);
                    }
                    act.forward(&mut src[..f]);
                }
                Op::Dropout { f, rate, alpha } => {
                    if let Some((seed, sample)) = noise {
                        dropout(&mut src[..f], rate, alpha, seed, sample, (layers.start + l) as u64);
                    }
                }
                Op::Empty => {}
            }
        }
        in_a
    }
}

/// The caller's scratch memory, cut into buffers.
struct Scratch<'s> {
    a: &'s mut [f32],
    b: &'s mut [f32],
    saved: &'s mut [f32],
    mean: &'s mut [f32],
    std: &'s mut [f32],
    ints: IntScratch<'s>,
}

/// What int8 and bf16 layers compute with: room for the input in a narrow type, and int8's
/// i32 sums.
struct IntScratch<'s> {
    /// Half a float per input: a layer's input as u8 or bf16.
    narrow: &'s mut [f32],
    acc: &'s mut [i32],
}

impl IntScratch<'_> {
    /// Room for `n` u8 inputs, and the accumulators.
    fn bytes(&mut self, n: usize) -> (&mut [u8], &mut [i32]) {
        (&mut wide::bytemuck::cast_slice_mut::<f32, u8>(self.narrow)[..n], self.acc)
    }

    /// Room for `n` bf16 inputs.
    fn halves(&mut self, n: usize) -> &mut [u16] {
        &mut wide::bytemuck::cast_slice_mut::<f32, u16>(self.narrow)[..n]
    }
}

/// `y = dequantised(x Q) + b` for u8 inputs `x` standing for `(x - zero_point) * scale`:
/// `y[j] = (acc[j] - zero_point * sum_i q[i][j]) * scale * scale_j + b[j]`.
fn dense_int8(x: &[u8], quant: U8Quant, layer: &Int8Layer<'_>, bias: Tensor<'_>, acc: &mut [i32], y: &mut [f32]) {
    let acc = &mut acc[..y.len()];
    gemv_u8_i8(x, layer.packed, y.len(), acc);
    for (j, (out, &sum)) in y.iter_mut().zip(acc.iter()).enumerate() {
        // In i64: the correction and the sum each fit an i32, their difference may not.
        let centred = sum as i64 - quant.zero_point as i64 * layer.sums.bits(j) as i32 as i64;
        *out = centred as f32 * (quant.scale * layer.scales.get(j)) + bias.get(j);
    }
}

/// `y = x W + b` for one input row; `W` is `[x.len(), n_out]` row-major (int8: `W = Q
/// diag(scales)`, applied once per output after the sum).
fn gemv(x: &[f32], w: WideWeights<'_>, b: Tensor<'_>, n_out: usize, y: &mut [f32]) {
    const BLOCK: usize = 8; // vectors of 16 outputs kept in registers
    let full = n_out - n_out % 16;
    for j0 in (0..full).step_by(16 * BLOCK) {
        let vectors = ((full - j0) / 16).min(BLOCK);
        let mut acc = [f32x16::ZERO; BLOCK];
        for (i, &xi) in x.iter().enumerate() {
            let xv = f32x16::splat(xi);
            for (v, a) in acc.iter_mut().enumerate().take(vectors) {
                *a = xv.mul_add(w.load16(i * n_out + j0 + 16 * v), *a);
            }
        }
        for (v, a) in acc.iter().enumerate().take(vectors) {
            let j = j0 + 16 * v;
            let scale = f32x16::new(core::array::from_fn(|k| w.scale(j + k)));
            y[j..j + 16].copy_from_slice(&a.mul_add(scale, b.load16(j)).to_array());
        }
    }
    if full == n_out {
        return;
    }
    // The last, partial vector of outputs: a full 16-wide load reads into the next row, whose
    // values land in lanes that are dropped; only the rows where that would run past the
    // tensor go element by element.
    let n_in = x.len();
    // Row i's load covers [i n_out + full, i n_out + full + 16), which must end by n_in n_out.
    let total = n_in * n_out;
    let vector_rows = if total >= full + 16 { ((total - full - 16) / n_out + 1).min(n_in) } else { 0 };
    let mut acc = f32x16::ZERO;
    for (i, &xi) in x.iter().enumerate().take(vector_rows) {
        acc = f32x16::splat(xi).mul_add(w.load16(i * n_out + full), acc);
    }
    let lanes = acc.to_array();
    for (k, out) in y[full..n_out].iter_mut().enumerate() {
        let j = full + k;
        let rest =
            x[vector_rows..].iter().enumerate().fold(0.0, |s, (r, &xi)| s + xi * w.get((vector_rows + r) * n_out + j));
        *out = (lanes[k] + rest) * w.scale(j) + b.get(j);
    }
}

/// Dropout or alpha dropout with Keras's constants (see [`crate::nn::dropout`]).
fn dropout(x: &mut [f32], rate: f32, alpha: bool, seed: u64, sample: u64, layer: u64) {
    let rate64 = rate as f64;
    let (dropped, a, b) = if alpha {
        let alpha_p = -(SELU_SCALE as f64) * SELU_ALPHA as f64;
        let a = 1.0 / libm::sqrt((1.0 - rate64) * (1.0 + rate64 * alpha_p * alpha_p));
        (alpha_p as f32, a as f32, (-a * alpha_p * rate64) as f32)
    } else {
        (0.0, (1.0 / (1.0 - rate64)) as f32, 0.0)
    };
    let mut rng = seeded(seed, sample.wrapping_mul(0x1_0000_0001).wrapping_add(layer << 48));
    for v in x.iter_mut() {
        *v = if uniform_f32(&mut rng) >= rate { a * *v + b } else { a * dropped + b };
    }
}
