//! The leaf of the crate: SIMD compute kernels over `f32` slices. Imports only `core`,
//! `wide` and `libm` (and `rayon`, with `std`, in the GEMM driver).
//!
//! Every kernel has a plain scalar twin in [`reference`](mod@reference); the twin is the specification, and
//! tests and fuzz targets compare each kernel against it.

pub mod activation;
pub mod bf16;
#[cfg(feature = "alloc")]
pub mod gemm;
#[cfg(feature = "alloc")]
pub mod gemm_bf16;
pub mod int8;
pub mod quant;
pub mod reference;
pub mod scalar;
pub mod softmax;
pub mod transpose;
pub mod vector;

mod simd;

pub use activation::Activation;
#[cfg(feature = "alloc")]
pub use gemm::{Blocking, Epilogue, MatMut, MatRef, gemm};
#[cfg(feature = "alloc")]
pub use gemm_bf16::Precision;
