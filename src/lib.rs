//! simdnn: deep dense networks on CPUs.
//!
//! Dependencies point one way (see `README.md`, "Architecture"):
//! `kernels` <- `nn` <- `optim`, and `format`; these build without `std`
//! (`--no-default-features --features alloc`: `#![no_std]` + `alloc`). `infer`, the inference
//! path, and the kernels it runs need no heap either (`--no-default-features`). `data` <-
//! `train` and the CLI need `std`, as does `parallel`, the fork-join that the GEMM, the
//! optimisers and the trainer use with it.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

// The model file, the bf16 pair words and the int8 groups are read in place, little-endian.
// On s390x (big-endian, under qemu) the bf16 and int8 kernels' tests fail: refuse to build
// rather than compute wrong answers.
#[cfg(target_endian = "big")]
compile_error!("simdnn supports little-endian targets only (x86-64, AArch64, 32-bit ARM, RISC-V, ...)");

#[cfg(feature = "alloc")]
extern crate alloc;

#[cfg(feature = "alloc")]
pub mod error;
pub mod format;
pub mod infer;
pub mod kernels;
#[cfg(feature = "alloc")]
pub mod nn;
#[cfg(feature = "alloc")]
pub mod optim;
pub mod rng;

#[cfg(feature = "std")]
pub mod bench;
#[cfg(feature = "std")]
pub mod data;
#[cfg(feature = "std")]
pub mod fsutil;
#[cfg(feature = "std")]
pub mod hugepages;
#[cfg(feature = "std")]
pub mod parallel;
#[cfg(feature = "std")]
pub mod train;

#[cfg(feature = "alloc")]
pub use error::{Error, Result};
