//! The `.simdnn` model file: a versioned, little-endian, checksummed container for a
//! [`Sequential`] model and its input preprocessing. `FORMAT.md` is the specification;
//! this file implements it. Builds without `std`: reading takes a `&[u8]`.
//!
//! Reading validates every count and size against the bytes that remain *before* using it,
//! so a hostile header cannot make the reader allocate more than the file's own size, and
//! any malformed input is an `Err`, never a panic.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use byteorder::{ByteOrder, LittleEndian as LE};

use crate::kernels::Activation;
use crate::nn::{Preprocess, Sequential};
use crate::{Error, Result};

/// First 8 bytes: a non-ASCII byte, the name, and the CR LF / ^Z / LF sequence that reveals
/// text-mode transfers (the PNG trick).
pub const MAGIC: [u8; 8] = *b"\x89SDN\r\n\x1a\n";
/// The version this build writes; it reads every version up to this one.
pub const VERSION: u32 = 1;
const HEADER_BYTES: usize = 8 + 4 + 4 + 8;
const CHECKSUM_BYTES: usize = 4;

const LAYER_DENSE: u8 = 1;
const DTYPE_F32: u8 = 0;
const PREPROCESS_SCALE: u8 = 0;
const PREPROCESS_STANDARDISE: u8 = 1;

/// A model with the preprocessing its inputs need.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedModel {
    pub model: Sequential,
    pub preprocess: Preprocess,
}

/// Serialises `saved` (see `FORMAT.md`).
pub fn to_bytes(saved: &SavedModel) -> Vec<u8> {
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
    for layer in model.layers() {
        let (code, param) = activation_code(layer.activation);
        payload.u8(LAYER_DENSE);
        payload.u32(layer.n_in as u32);
        payload.u32(layer.n_out as u32);
        payload.u8(code);
        payload.f32(param);
        payload.u8(DTYPE_F32);
        payload.f32s(layer.weights(&model.params));
        payload.f32s(layer.bias(&model.params));
    }
    let payload = payload.0;
    let mut out = Writer(Vec::with_capacity(HEADER_BYTES + payload.len() + CHECKSUM_BYTES));
    out.0.extend_from_slice(&MAGIC);
    out.u32(VERSION);
    out.u32(0); // flags: none defined in version 1
    out.u64(payload.len() as u64);
    out.0.extend_from_slice(&payload);
    let crc = crc32fast::hash(&out.0);
    out.u32(crc);
    out.0
}

/// Parses a model file. Every malformed input gives `Error::Format`.
pub fn from_bytes(bytes: &[u8]) -> Result<SavedModel> {
    if bytes.len() < HEADER_BYTES + CHECKSUM_BYTES {
        return Err(Error::format(format!(
            "{} bytes is too short for a model file (at least {})",
            bytes.len(),
            HEADER_BYTES + CHECKSUM_BYTES
        )));
    }
    if bytes[..8] != MAGIC {
        return Err(Error::format("not a simdnn model file (wrong magic bytes)"));
    }
    let version = LE::read_u32(&bytes[8..12]);
    if version == 0 || version > VERSION {
        return Err(Error::format(format!(
            "format version {version} is not supported: this simdnn reads versions 1 to {VERSION} (a newer simdnn wrote it?)"
        )));
    }
    let flags = LE::read_u32(&bytes[12..16]);
    if flags != 0 {
        return Err(Error::format(format!("unknown flags {flags:#x} for version {version}")));
    }
    let payload_len = LE::read_u64(&bytes[16..24]);
    let expected = (bytes.len() - HEADER_BYTES - CHECKSUM_BYTES) as u64;
    if payload_len != expected {
        return Err(Error::format(format!(
            "header says the payload is {payload_len} bytes but the file holds {expected} (truncated or extended)"
        )));
    }
    let (body, crc) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
    let (stored, actual) = (LE::read_u32(crc), crc32fast::hash(body));
    if stored != actual {
        return Err(Error::format(format!(
            "checksum mismatch (stored {stored:08x}, computed {actual:08x}): the file is corrupted"
        )));
    }
    let mut r = Reader { bytes: &body[HEADER_BYTES..], pos: 0 };
    let input_dim = r.count("input size")?;
    let preprocess = match r.u8()? {
        PREPROCESS_SCALE => Preprocess::Scale(r.f32()?),
        PREPROCESS_STANDARDISE => Preprocess::Standardise { mean: r.f32s(input_dim)?, inv_std: r.f32s(input_dim)? },
        other => return Err(Error::format(format!("unknown preprocessing kind {other}"))),
    };
    let n_layers = r.count("layer count")?;
    // Each layer takes at least 15 bytes of header: reject counts the file cannot hold.
    if n_layers > r.remaining() / 15 {
        return Err(Error::format(format!("{n_layers} layers cannot fit in the {} bytes left", r.remaining())));
    }
    let mut shapes = Vec::with_capacity(n_layers);
    let mut tensors = Vec::with_capacity(n_layers);
    let mut n_in_expected = input_dim;
    for i in 0..n_layers {
        let kind = r.u8()?;
        if kind != LAYER_DENSE {
            return Err(Error::format(format!("layer {i}: unknown layer kind {kind}")));
        }
        let n_in = r.count("layer input size")?;
        let n_out = r.count("layer output size")?;
        if n_in != n_in_expected {
            return Err(Error::format(format!("layer {i} takes {n_in} inputs but receives {n_in_expected}")));
        }
        let activation = activation_from_code(r.u8()?, r.f32()?)
            .ok_or_else(|| Error::format(format!("layer {i}: unknown activation")))?;
        let dtype = r.u8()?;
        if dtype != DTYPE_F32 {
            return Err(Error::format(format!("layer {i}: unknown tensor type {dtype}")));
        }
        let weights_len =
            n_in.checked_mul(n_out).ok_or_else(|| Error::format(format!("layer {i}: {n_in} x {n_out} overflows")))?;
        tensors.push((r.f32s(weights_len)?, r.f32s(n_out)?));
        shapes.push((n_out, activation));
        n_in_expected = n_out;
    }
    if r.remaining() != 0 {
        return Err(Error::format(format!("{} unexpected bytes after the last layer", r.remaining())));
    }
    let mut model = Sequential::with_shapes(input_dim, &shapes).map_err(|e| Error::format(format!("{e}")))?;
    let mut params = Vec::with_capacity(model.num_params());
    for (w, b) in tensors {
        params.extend_from_slice(&w);
        params.extend_from_slice(&b);
    }
    model.params = params;
    Ok(SavedModel { model, preprocess })
}

fn activation_code(act: Activation) -> (u8, f32) {
    match act {
        Activation::Identity => (0, 0.0),
        Activation::Relu => (1, 0.0),
        Activation::LeakyRelu { alpha } => (2, alpha),
        Activation::Elu { alpha } => (3, alpha),
        Activation::Selu => (4, 0.0),
        Activation::Tanh => (5, 0.0),
        Activation::Logistic => (6, 0.0),
        Activation::Softmax => (7, 0.0),
    }
}

fn activation_from_code(code: u8, param: f32) -> Option<Activation> {
    let positive = (param.is_finite() && param > 0.0).then_some(param);
    Some(match code {
        0 => Activation::Identity,
        1 => Activation::Relu,
        2 => Activation::LeakyRelu { alpha: positive? },
        3 => Activation::Elu { alpha: positive? },
        4 => Activation::Selu,
        5 => Activation::Tanh,
        6 => Activation::Logistic,
        7 => Activation::Softmax,
        _ => return None,
    })
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        let mut b = [0; 4];
        LE::write_u32(&mut b, v);
        self.0.extend_from_slice(&b);
    }
    fn u64(&mut self, v: u64) {
        let mut b = [0; 8];
        LE::write_u64(&mut b, v);
        self.0.extend_from_slice(&b);
    }
    fn f32(&mut self, v: f32) {
        self.u32(v.to_bits());
    }
    fn f32s(&mut self, vs: &[f32]) {
        let start = self.0.len();
        self.0.resize(start + vs.len() * 4, 0);
        LE::write_f32_into(vs, &mut self.0[start..]);
    }
}

/// A cursor that checks the remaining length before every read.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
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

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn f32(&mut self) -> Result<f32> {
        Ok(LE::read_f32(self.take(4)?))
    }

    /// A u32 size that must be at least 1.
    fn count(&mut self, what: &str) -> Result<usize> {
        match LE::read_u32(self.take(4)?) {
            0 => Err(Error::format(format!("{what} is 0"))),
            n => Ok(n as usize),
        }
    }

    /// `n` f32 values; the length is checked before anything is allocated.
    fn f32s(&mut self, n: usize) -> Result<Vec<f32>> {
        let bytes = n.checked_mul(4).ok_or_else(|| Error::format(String::from("tensor size overflows")))?;
        let raw = self.take(bytes)?;
        let mut out = alloc::vec![0f32; n];
        LE::read_f32_into(raw, &mut out);
        Ok(out)
    }
}
