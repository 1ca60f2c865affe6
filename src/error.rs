//! The crate's one error type. Every message names what was wrong (the file, the record, the
//! flag) and, where it helps, what is accepted. Imports nothing of the crate.

use alloc::string::String;

#[cfg(feature = "std")]
use std::path::PathBuf;

pub type Result<T, E = Error> = core::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting that cannot work (a flag, a preset, a layer size).
    #[error("invalid setting `{name}`: {reason}")]
    Config { name: String, reason: String },

    /// A model file that is truncated, corrupted, or of an unknown version.
    #[error("bad model file{}: {reason}", source_name.as_ref().map(|s| alloc::format!(" {s}")).unwrap_or_default())]
    Format { source_name: Option<String>, reason: String },

    /// An in-memory data record that is not a valid CIFAR-10 record.
    #[error("record {index}: {reason}")]
    Record { index: usize, reason: String },

    /// Shapes that do not fit together (a model fed the wrong input size, say).
    #[error("shape mismatch: {0}")]
    Shape(String),

    /// A data file that is missing, truncated or holds invalid records.
    #[cfg(feature = "std")]
    #[error("{}: {reason}", path.display())]
    Data { path: PathBuf, reason: String },

    /// An operating-system error on a named file.
    #[cfg(feature = "std")]
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    /// Downloading the data set failed.
    #[cfg(feature = "std")]
    #[error("download failed: {0}")]
    Download(String),

    /// Training was asked to stop (Ctrl-C); its state is saved.
    #[cfg(feature = "std")]
    #[error(
        "training interrupted at epoch {epoch}, step {step}; its state is saved: resume with `simdnn train --resume {}`",
        dir.display()
    )]
    Interrupted { dir: PathBuf, epoch: usize, step: usize },

    /// The training loss became NaN or infinite.
    #[error(
        "training diverged at epoch {epoch}, step {step}: loss is {loss}; the last good \
         checkpoint is kept. Try a lower learning rate (for example --lr {suggested_lr:e})"
    )]
    Diverged { epoch: usize, step: usize, loss: f32, suggested_lr: f32 },
}

impl Error {
    pub fn config(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config { name: name.into(), reason: reason.into() }
    }

    pub fn format(reason: impl Into<String>) -> Self {
        Error::Format { source_name: None, reason: reason.into() }
    }

    #[cfg(feature = "std")]
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    #[cfg(feature = "std")]
    pub fn data(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Data { path: path.into(), reason: reason.into() }
    }

    /// Names the file a format error came from.
    pub fn in_file(self, name: impl Into<String>) -> Self {
        match self {
            Error::Format { reason, .. } => Error::Format { source_name: Some(name.into()), reason },
            other => other,
        }
    }
}
