//! The `.simdnn` model file: a versioned, little-endian, checksummed container for a
//! `Sequential` model and its input preprocessing. `FORMAT.md` is the specification. This
//! module holds what needs no heap (the container's check, the codes, which the inference
//! path reads in place); `codec`, with the `alloc` feature, reads and writes whole models.
//!
//! Reading validates every count and size against the bytes that remain *before* using it,
//! so a hostile header cannot make the reader allocate more than the file's own size, and
//! any malformed input is an `Err`, never a panic.

use byteorder::{ByteOrder, LittleEndian as LE};

use crate::kernels::Activation;
use crate::kernels::int8::U8Quant;

#[cfg(feature = "alloc")]
mod codec;
#[cfg(feature = "std")] // for the resumable training state
pub(crate) use codec::{Reader, Writer, seal, unseal};
#[cfg(feature = "alloc")]
pub use codec::{SavedModel, from_bytes, from_bytes_typed, to_bytes, to_bytes_as, to_bytes_int8};

/// First 8 bytes: a non-ASCII byte, the name, and the CR LF / ^Z / LF sequence that reveals
/// text-mode transfers (the PNG trick).
pub const MAGIC: [u8; 8] = *b"\x89SDN\r\n\x1a\n";
/// The newest version this build reads (it reads every version up to this one). Version 2
/// added batch-norm and dropout layers (version 1 files hold dense layers only); version 3,
/// bf16 and int8 dense weights; version 4, int8 layers with u8 inputs. Writers use the lowest version that holds the file.
pub const VERSION: u32 = 4;
const HEADER_BYTES: usize = 8 + 4 + 4 + 8;
const CHECKSUM_BYTES: usize = 4;

pub(crate) const LAYER_DENSE: u8 = 1;
pub(crate) const LAYER_BATCH_NORM: u8 = 2;
pub(crate) const LAYER_DROPOUT: u8 = 3;
pub(crate) const LAYER_ALPHA_DROPOUT: u8 = 4;
pub(crate) const DTYPE_F32: u8 = 0;
pub(crate) const DTYPE_BF16: u8 = 1;
pub(crate) const DTYPE_INT8: u8 = 2;
pub(crate) const DTYPE_INT8_U8: u8 = 3;

/// How dense weights are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightType {
    F32,
    /// The top 16 bits of each f32, rounded to nearest even: half the size. The inference
    /// path rounds each layer's input to bf16 too (the products are then exact in f32).
    Bf16,
    /// Symmetric int8 weights with one f32 scale per output channel (a quarter of the size);
    /// activations stay f32 (version 3).
    Int8Weights,
    /// Int8 weights as [`WeightType::Int8Weights`], and each dense layer's input quantised
    /// to u8, so the products are integer dot products (version 4). The input ranges are
    /// calibrated ([`to_bytes_int8`]) or taken per input at run time.
    Int8,
}

impl WeightType {
    pub const NAMES: &'static str = "f32, bf16, int8, int8-weights";

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "f32" => Some(WeightType::F32),
            "bf16" => Some(WeightType::Bf16),
            "int8" => Some(WeightType::Int8),
            "int8-weights" => Some(WeightType::Int8Weights),
            _ => None,
        }
    }

    /// Whether the inference path also narrows each dense layer's input (bf16: rounded to
    /// bf16; int8: quantised to u8), so that only it computes what a device computes; f32 and
    /// int8-weights layers compute in f32 from the widened weights, as the training model
    /// does with the values [`from_bytes`] returns.
    pub fn narrows_inputs(self) -> bool {
        matches!(self, WeightType::Bf16 | WeightType::Int8)
    }

    #[cfg(feature = "alloc")] // for the writer (`codec`)
    pub(crate) fn code(self) -> u8 {
        match self {
            WeightType::F32 => DTYPE_F32,
            WeightType::Bf16 => DTYPE_BF16,
            WeightType::Int8Weights => DTYPE_INT8,
            WeightType::Int8 => DTYPE_INT8_U8,
        }
    }
}

/// How an int8 dense layer ([`WeightType::Int8`]) quantises its input to u8.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum InputQuant {
    /// From each input's own range, at run time.
    Dynamic,
    /// A fixed range, calibrated on sample data.
    Static(U8Quant),
}

pub(crate) const PREPROCESS_SCALE: u8 = 0;
pub(crate) const PREPROCESS_STANDARDISE: u8 = 1;

/// What is wrong with a container, without allocating (the inference path reports it as is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerError {
    TooShort { len: usize },
    Magic,
    Version(u32),
    Flags(u32),
    Length { declared: u64, actual: u64 },
    Checksum { stored: u32, computed: u32 },
}

/// Checks a container written by this module (magic, version, flags, length, CRC-32) and returns
/// its version and payload.
pub fn check_container<'a>(
    bytes: &'a [u8],
    magic: &[u8; 8],
    max_version: u32,
) -> core::result::Result<(u32, &'a [u8]), ContainerError> {
    if bytes.len() < HEADER_BYTES + CHECKSUM_BYTES {
        return Err(ContainerError::TooShort { len: bytes.len() });
    }
    if bytes[..8] != *magic {
        return Err(ContainerError::Magic);
    }
    let version = LE::read_u32(&bytes[8..12]);
    if version == 0 || version > max_version {
        return Err(ContainerError::Version(version));
    }
    let flags = LE::read_u32(&bytes[12..16]);
    if flags != 0 {
        return Err(ContainerError::Flags(flags));
    }
    let declared = LE::read_u64(&bytes[16..24]);
    let actual = (bytes.len() - HEADER_BYTES - CHECKSUM_BYTES) as u64;
    if declared != actual {
        return Err(ContainerError::Length { declared, actual });
    }
    let (body, crc) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
    let (stored, computed) = (LE::read_u32(crc), crc32fast::hash(body));
    if stored != computed {
        return Err(ContainerError::Checksum { stored, computed });
    }
    Ok((version, &body[HEADER_BYTES..]))
}

#[cfg(feature = "alloc")] // for the writer (`codec`)
pub(crate) fn activation_code(act: Activation) -> (u8, f32) {
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

pub(crate) fn activation_from_code(code: u8, param: f32) -> Option<Activation> {
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
