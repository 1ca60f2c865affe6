//! Scalar functions that `core` lacks, for code that builds without `std`. With `std` they
//! are its methods, which compile to the CPU's instruction and so let the optimisers' loops
//! vectorise; without it, `libm`'s. Both round correctly (IEEE 754), so the bits agree.

/// The square root of `x`.
#[inline(always)]
pub fn sqrtf(x: f32) -> f32 {
    #[cfg(feature = "std")]
    return x.sqrt();
    #[cfg(not(feature = "std"))]
    return libm::sqrtf(x);
}

/// The square root of `x`.
#[inline(always)]
pub fn sqrt(x: f64) -> f64 {
    #[cfg(feature = "std")]
    return x.sqrt();
    #[cfg(not(feature = "std"))]
    return libm::sqrt(x);
}
