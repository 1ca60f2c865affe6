//! Layers over the kernels, and the sequential model that owns their parameters.
//! Imports `kernels`, `rng` and `error`; nothing of `optim`, `data` or `train`.
//!
//! All trainable parameters of a model live in one flat vector (and their gradients in a
//! second of the same layout), as in llm.c: an optimiser step is then one loop over one slice,
//! and saving or restoring weights is one copy.

pub mod batch_norm;
pub mod dense;
pub mod dropout;
pub mod init;
pub mod model;
pub mod preprocess;

pub use dense::{Dense, ParamsRef};
pub use dropout::Noise;
pub use init::Initializer;
pub use model::{Layer, LayerSpec, Mode, Sequential, StepOptions, Workspace};
pub use preprocess::Preprocess;
