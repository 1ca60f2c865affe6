//! Data: CIFAR-10 binaries read through `memmap2`, seeded shuffling, and batches converted
//! from bytes to `f32` into a reused buffer (the data set is never copied whole into f32).
//! Imports `kernels` (byte conversion), `rng` and `error`; nothing of `nn`, `optim` or `train`.

pub mod cifar;
pub mod fetch;

pub use cifar::{Cifar10, Split, standardise_from};
