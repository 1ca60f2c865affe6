//! Reading and writing whole models ([`SavedModel`]) in the container of [`super`]: needs a
//! heap (the `alloc` feature).

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use byteorder::{ByteOrder, LittleEndian as LE};

use super::{
    CHECKSUM_BYTES, ContainerError, DTYPE_BF16, DTYPE_F32, DTYPE_INT8, DTYPE_INT8_U8, HEADER_BYTES, InputQuant,
    LAYER_ALPHA_DROPOUT, LAYER_BATCH_NORM, LAYER_DENSE, LAYER_DROPOUT, MAGIC, PREPROCESS_SCALE, PREPROCESS_STANDARDISE,
    VERSION, WeightType, activation_code, activation_from_code, check_container,
};
use crate::kernels::Activation;
use crate::kernels::int8::{
    MAX_INPUTS, U8Quant, pack_groups_of_4, packed_column_sum, packed_len, packed_padding_is_zero, unpack_groups_of_4,
};
use crate::kernels::quant::{bf16_from_f32, f32_from_bf16, quantize_per_column};
use crate::nn::dropout::DropoutKind;
use crate::nn::{Initializer, Layer, LayerSpec, Preprocess, Sequential};
use crate::{Error, Result};

/// A model with the preprocessing its inputs need.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedModel {
    pub model: Sequential,
    pub preprocess: Preprocess,
}

/// Serialises `saved` with f32 weights (see `FORMAT.md`).
pub fn to_bytes(saved: &SavedModel) -> Vec<u8> {
    to_bytes_as(saved, WeightType::F32)
}

/// Serialises `saved` with its dense weights stored as `weights` (biases stay f32);
/// [`WeightType::Int8`] layers quantise their inputs dynamically.
pub fn to_bytes_as(saved: &SavedModel, weights: WeightType) -> Vec<u8> {
    let dynamic = vec![InputQuant::Dynamic; saved.model.layers().len()];
    encode(saved, weights, &dynamic)
}

/// Serialises `saved` with int8 dense layers whose inputs are quantised as `inputs` says
/// (one entry per layer; only dense layers' entries are used).
///
/// # Panics
/// If `inputs` does not have one entry per layer.
pub fn to_bytes_int8(saved: &SavedModel, inputs: &[InputQuant]) -> Vec<u8> {
    encode(saved, WeightType::Int8, inputs)
}

fn encode(saved: &SavedModel, weights: WeightType, inputs: &[InputQuant]) -> Vec<u8> {
    assert_eq!(inputs.len(), saved.model.layers().len(), "one input quantisation per layer");
    let mut payload = Writer(Vec::with_capacity(saved.model.num_params() * 4 + 256));
    let model = &saved.model;
    payload.u32(model.input_dim() as u32);
    match &saved.preprocess {
        Preprocess::Scale(factor) => {
            payload.u8(PREPROCESS_SCALE);
            payload.f32(*factor);
        }
        Preprocess::Standardise { mean, inv_std } => {
            payload.u8(PREPROCESS_STANDARDISE);
            payload.f32s(mean);
            payload.f32s(inv_std);
        }
    }
    payload.u32(model.layers().len() as u32);
    for (layer, input) in model.layers().iter().zip(inputs) {
        let kind = match layer {
            Layer::Dense(_) => LAYER_DENSE,
            Layer::BatchNorm(_) => LAYER_BATCH_NORM,
            Layer::Dropout(d) if d.kind == DropoutKind::Standard => LAYER_DROPOUT,
            Layer::Dropout(_) => LAYER_ALPHA_DROPOUT,
        };
        payload.u8(kind);
        payload.u32(layer.n_in() as u32);
        payload.u32(layer.n_out() as u32);
        match layer {
            Layer::Dense(d) => {
                payload.activation(d.activation);
                payload.u8(weights.code());
                let w = d.weights(&model.params);
                match weights {
                    WeightType::F32 => payload.f32s(w),
                    WeightType::Bf16 => {
                        w.iter().for_each(|&v| payload.0.extend_from_slice(&bf16_from_f32(v).to_le_bytes()))
                    }
                    WeightType::Int8Weights => {
                        let (scales, q) = quantize_per_column(w, d.n_in, d.n_out);
                        payload.f32s(&scales);
                        payload.0.extend(q.iter().map(|&v| v as u8));
                    }
                    WeightType::Int8 => {
                        let (scales, q) = quantize_per_column(w, d.n_in, d.n_out);
                        payload.f32s(&scales);
                        let input = match input {
                            InputQuant::Dynamic => U8Quant { scale: 0.0, zero_point: 0 },
                            InputQuant::Static(quant) => *quant,
                        };
                        payload.f32(input.scale);
                        payload.u8(input.zero_point);
                        let packed = pack_groups_of_4(&q, d.n_in, d.n_out);
                        (0..d.n_out).for_each(|j| payload.u32(packed_column_sum(&packed, d.n_out, j) as u32));
                        payload.0.extend(packed.iter().map(|&v| v as u8));
                    }
                }
                payload.f32s(d.bias(&model.params));
            }
            Layer::BatchNorm(b) => {
                payload.activation(b.activation);
                payload.f32(b.momentum);
                payload.f32(b.epsilon);
                payload.f32s(b.gamma(&model.params));
                payload.f32s(b.beta(&model.params));
                payload.f32s(b.moving_mean(&model.state));
                payload.f32s(b.moving_var(&model.state));
            }
            Layer::Dropout(d) => payload.f32(d.rate),
        }
    }
    let has_kinds_of_2 = model.layers().iter().any(|l| !matches!(l, Layer::Dense(_)));
    let version = match weights {
        WeightType::F32 if has_kinds_of_2 => 2,
        WeightType::F32 => 1,
        WeightType::Bf16 | WeightType::Int8Weights => 3,
        WeightType::Int8 => 4,
    };
    seal(&MAGIC, version, &payload.0)
}

/// The container every simdnn file shares: magic, version, flags (none defined), payload
/// length, payload, CRC-32 of everything before it.
pub(crate) fn seal(magic: &[u8; 8], version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Writer(Vec::with_capacity(HEADER_BYTES + payload.len() + CHECKSUM_BYTES));
    out.0.extend_from_slice(magic);
    out.u32(version);
    out.u32(0);
    out.u64(payload.len() as u64);
    out.0.extend_from_slice(payload);
    let crc = crc32fast::hash(&out.0);
    out.u32(crc);
    out.0
}

/// Checks a [`seal`]ed file (`what` names its kind in errors) and returns its version and a
/// reader over the payload. Versions above `max_version` are rejected by name.
pub(crate) fn unseal<'a>(bytes: &'a [u8], magic: &[u8; 8], what: &str, max_version: u32) -> Result<(u32, Reader<'a>)> {
    let (version, payload) = check_container(bytes, magic, max_version).map_err(|e| {
        Error::format(match e {
            ContainerError::TooShort { len } => {
                format!("{len} bytes is too short for a {what} (at least {})", HEADER_BYTES + CHECKSUM_BYTES)
            }
            ContainerError::Magic => format!("not a simdnn {what} (wrong magic bytes)"),
            ContainerError::Version(v) => format!(
                "format version {v} is not supported: this simdnn reads versions 1 to {max_version} (a newer simdnn wrote it?)"
            ),
            ContainerError::Flags(f) => format!("unknown flags {f:#x}"),
            ContainerError::Length { declared, actual } => format!(
                "header says the payload is {declared} bytes but the file holds {actual} (truncated or extended)"
            ),
            ContainerError::Checksum { stored, computed } => {
                format!("checksum mismatch (stored {stored:08x}, computed {computed:08x}): the file is corrupted")
            }
        })
    })?;
    Ok((version, Reader { bytes: payload, pos: 0 }))
}

/// Parses a model file; quantised weights come back as the f32 values they stand for.
/// Every malformed input gives `Error::Format`.
pub fn from_bytes(bytes: &[u8]) -> Result<SavedModel> {
    from_bytes_typed(bytes).map(|(saved, _)| saved)
}

/// [`from_bytes`], also saying how the dense weights were stored (the narrowest type of any
/// layer).
pub fn from_bytes_typed(bytes: &[u8]) -> Result<(SavedModel, WeightType)> {
    // Versions share every encoding; 1 allows dense layers only, 2 f32 weights only.
    let (version, mut r) = unseal(bytes, &MAGIC, "model file", VERSION)?;
    let mut stored = WeightType::F32;
    let input_dim = r.count("input size")?;
    let preprocess = match r.u8()? {
        PREPROCESS_SCALE => Preprocess::Scale(r.f32()?),
        PREPROCESS_STANDARDISE => Preprocess::Standardise { mean: r.f32s(input_dim)?, inv_std: r.f32s(input_dim)? },
        other => return Err(Error::format(format!("unknown preprocessing kind {other}"))),
    };
    let n_layers = r.count("layer count")?;
    // Each layer takes at least 13 bytes: reject counts the file cannot hold.
    if n_layers > r.remaining() / 13 {
        return Err(Error::format(format!("{n_layers} layers cannot fit in the {} bytes left", r.remaining())));
    }
    let mut specs = Vec::with_capacity(n_layers);
    // Each layer's numbers in file order: dense weights then bias; batch-norm gamma, beta,
    // moving mean, moving variance.
    let mut tensors: Vec<Vec<Vec<f32>>> = Vec::with_capacity(n_layers);
    let mut width = input_dim;
    for i in 0..n_layers {
        let kind = r.u8()?;
        if !(LAYER_DENSE..=LAYER_ALPHA_DROPOUT).contains(&kind) {
            return Err(Error::format(format!("layer {i}: unknown layer kind {kind}")));
        }
        if kind != LAYER_DENSE && version < 2 {
            return Err(Error::format(format!("layer {i}: kind {kind} needs format version 2, file says {version}")));
        }
        let n_in = r.count("layer input size")?;
        let n_out = r.count("layer output size")?;
        if n_in != width {
            return Err(Error::format(format!("layer {i} takes {n_in} inputs but receives {width}")));
        }
        if kind != LAYER_DENSE && n_out != n_in {
            return Err(Error::format(format!(
                "layer {i}: a batch-norm or dropout layer must keep its width ({n_in} -> {n_out})"
            )));
        }
        let bad_activation = || Error::format(format!("layer {i}: unknown activation"));
        match kind {
            LAYER_DENSE => {
                let activation = activation_from_code(r.u8()?, r.f32()?).ok_or_else(bad_activation)?;
                let dtype = r.u8()?;
                let weights = n_in
                    .checked_mul(n_out)
                    .ok_or_else(|| Error::format(format!("layer {i}: {n_in} x {n_out} overflows")))?;
                let w = match dtype {
                    DTYPE_F32 => r.f32s(weights)?,
                    DTYPE_BF16 if version >= 3 => {
                        stored = WeightType::Bf16;
                        let raw =
                            r.take(weights.checked_mul(2).ok_or_else(|| Error::format("tensor size overflows"))?)?;
                        raw.chunks_exact(2).map(|b| f32_from_bf16(u16::from_le_bytes([b[0], b[1]]))).collect()
                    }
                    DTYPE_INT8 if version >= 3 => {
                        stored = WeightType::Int8Weights;
                        let scales = r.f32s(n_out)?;
                        let raw = r.take(weights)?;
                        raw.iter().enumerate().map(|(k, &q)| q as i8 as f32 * scales[k % n_out]).collect()
                    }
                    DTYPE_INT8_U8 if version >= 4 => {
                        stored = WeightType::Int8;
                        let (scales, packed) = read_int8_u8(&mut r, i, n_in, n_out)?;
                        let q = unpack_groups_of_4(&packed, n_in, n_out);
                        q.iter().enumerate().map(|(k, &q)| q as f32 * scales[k % n_out]).collect()
                    }
                    other => {
                        return Err(Error::format(format!(
                            "layer {i}: unknown tensor type {other} for version {version}"
                        )));
                    }
                };
                tensors.push(vec![w, r.f32s(n_out)?]);
                specs.push(LayerSpec::Dense { units: n_out, activation, init: Initializer::GlorotUniform });
            }
            LAYER_BATCH_NORM => {
                let activation = activation_from_code(r.u8()?, r.f32()?).ok_or_else(bad_activation)?;
                let (momentum, epsilon) = (r.f32()?, r.f32()?);
                tensors.push(vec![r.f32s(n_in)?, r.f32s(n_in)?, r.f32s(n_in)?, r.f32s(n_in)?]);
                specs.push(LayerSpec::BatchNorm { activation, momentum, epsilon });
            }
            LAYER_DROPOUT | LAYER_ALPHA_DROPOUT => {
                let rate = r.f32()?;
                tensors.push(Vec::new());
                specs.push(if kind == LAYER_DROPOUT {
                    LayerSpec::Dropout { rate }
                } else {
                    LayerSpec::AlphaDropout { rate }
                });
            }
            _ => unreachable!("layer kinds are checked above"),
        }
        width = n_out;
    }
    if r.remaining() != 0 {
        return Err(Error::format(format!("{} unexpected bytes after the last layer", r.remaining())));
    }
    let mut model = Sequential::build(input_dim, &specs).map_err(|e| Error::format(format!("{e}")))?;
    let (mut params, mut state) = (Vec::with_capacity(model.num_params()), Vec::with_capacity(model.num_state()));
    for (layer, t) in model.layers().iter().zip(tensors) {
        match layer {
            Layer::Dense(_) => t.iter().for_each(|v| params.extend_from_slice(v)),
            Layer::BatchNorm(_) => {
                t[..2].iter().for_each(|v| params.extend_from_slice(v));
                t[2..].iter().for_each(|v| state.extend_from_slice(v));
            }
            Layer::Dropout(_) => {}
        }
    }
    (model.params, model.state) = (params, state);
    Ok((SavedModel { model, preprocess }, stored))
}

/// An int8 layer with u8 inputs after its dtype byte, checked as the inference reader checks
/// it; returns the weight scales and the packed weights. The input quantisation is checked
/// and dropped: the f32 model these readers build computes in f32.
fn read_int8_u8(r: &mut Reader<'_>, layer: usize, n_in: usize, n_out: usize) -> Result<(Vec<f32>, Vec<i8>)> {
    let bad = |what: String| Error::format(format!("layer {layer}: {what}"));
    if n_in > MAX_INPUTS {
        return Err(bad(format!("{n_in} inputs is too many for an int8 layer (at most {MAX_INPUTS})")));
    }
    let scales = r.f32s(n_out)?;
    let (input_scale, zero_point) = (r.f32()?, r.u8()?);
    if !(input_scale == 0.0 && zero_point == 0 || input_scale.is_finite() && input_scale > 0.0) {
        return Err(bad(format!("bad input quantisation (scale {input_scale}, zero point {zero_point})")));
    }
    let sums: Vec<i32> = r.take(n_out * 4)?.chunks_exact(4).map(LE::read_i32).collect();
    let len = packed_len(n_in, n_out).ok_or_else(|| bad(String::from("weights overflow")))?;
    let packed: Vec<i8> = r.take(len)?.iter().map(|&b| b as i8).collect();
    if !packed_padding_is_zero(&packed, n_in, n_out) {
        return Err(bad(String::from("non-zero padding in the int8 weights")));
    }
    if let Some(j) = (0..n_out).find(|&j| packed_column_sum(&packed, n_out, j) != sums[j]) {
        return Err(bad(format!("the stored weight sum of output {j} does not match the weights")));
    }
    Ok((scales, packed))
}

pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn u32(&mut self, v: u32) {
        let mut b = [0; 4];
        LE::write_u32(&mut b, v);
        self.0.extend_from_slice(&b);
    }
    pub(crate) fn u64(&mut self, v: u64) {
        let mut b = [0; 8];
        LE::write_u64(&mut b, v);
        self.0.extend_from_slice(&b);
    }
    #[cfg(feature = "std")] // for the resumable training state
    pub(crate) fn f64(&mut self, v: f64) {
        self.u64(v.to_bits());
    }
    pub(crate) fn f32(&mut self, v: f32) {
        self.u32(v.to_bits());
    }
    fn activation(&mut self, act: Activation) {
        let (code, param) = activation_code(act);
        self.u8(code);
        self.f32(param);
    }
    pub(crate) fn f32s(&mut self, vs: &[f32]) {
        let start = self.0.len();
        self.0.resize(start + vs.len() * 4, 0);
        LE::write_f32_into(vs, &mut self.0[start..]);
    }
}

/// A cursor that checks the remaining length before every read.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&[u8]> {
        if n > self.remaining() {
            return Err(Error::format(format!(
                "truncated: needs {n} more bytes at payload offset {}, {} left",
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    #[cfg(feature = "std")] // for the resumable training state
    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(LE::read_u32(self.take(4)?))
    }

    #[cfg(feature = "std")] // for the resumable training state
    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(LE::read_u64(self.take(8)?))
    }

    #[cfg(feature = "std")] // for the resumable training state
    pub(crate) fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_bits(self.u64()?))
    }

    pub(crate) fn f32(&mut self) -> Result<f32> {
        Ok(LE::read_f32(self.take(4)?))
    }

    /// A u32 size that must be at least 1.
    pub(crate) fn count(&mut self, what: &str) -> Result<usize> {
        match LE::read_u32(self.take(4)?) {
            0 => Err(Error::format(format!("{what} is 0"))),
            n => Ok(n as usize),
        }
    }

    /// `n` f32 values; the length is checked before anything is allocated.
    pub(crate) fn f32s(&mut self, n: usize) -> Result<Vec<f32>> {
        let bytes = n.checked_mul(4).ok_or_else(|| Error::format(String::from("tensor size overflows")))?;
        let raw = self.take(bytes)?;
        let mut out = alloc::vec![0f32; n];
        LE::read_f32_into(raw, &mut out);
        Ok(out)
    }
}
