//! Element-wise activations, vectorised with `wide::f32x16`, and their derivatives.
//!
//! Derivatives are computed from the activation's *output* `y`, never its input: every
//! activation here is monotonic with a sign-preserving output, so `y` alone determines the
//! slope. The forward pass then keeps only outputs, and the dense layer's backward pass needs
//! no second `exp`. Scalar twins live in [`super::reference`].
//!
//! Error bounds against the twins (tested in `tests/kernels.rs` over [-30, 30]):
//! ELU/SELU/logistic/tanh within 4 ULP or 1e-7 absolute; ReLU, leaky ReLU, identity exact.

use wide::f32x16;

use super::simd::{map_in_place, zip_in_place};

/// SELU's fixed point constants (Klambauer et al., 2017).
pub const SELU_ALPHA: f32 = 1.673_263_2;
pub const SELU_SCALE: f32 = 1.050_701;

/// An activation applied element by element (softmax, row by row).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Identity,
    Relu,
    LeakyRelu {
        alpha: f32,
    },
    Elu {
        alpha: f32,
    },
    Selu,
    Tanh,
    Logistic,
    /// Row-wise; only valid on the output layer, where it is fused with the cross-entropy.
    Softmax,
}

impl Activation {
    /// Keras's default ELU (alpha = 1).
    pub const ELU: Activation = Activation::Elu { alpha: 1.0 };
    /// Keras's default leaky ReLU (alpha = 0.3 in Keras 2, 0.2 in Keras 3's `leaky_relu`).
    pub const LEAKY_RELU: Activation = Activation::LeakyRelu { alpha: 0.2 };

    /// Every element-wise activation, with Keras's default parameters (softmax, row-wise,
    /// is not one).
    pub const ELEMENT_WISE: [Activation; 7] = [
        Activation::Identity,
        Activation::Relu,
        Activation::LEAKY_RELU,
        Activation::ELU,
        Activation::Selu,
        Activation::Tanh,
        Activation::Logistic,
    ];

    /// The names accepted by [`Activation::parse`].
    pub const NAMES: &'static str = "identity, relu, leaky_relu, elu, selu, tanh, logistic (sigmoid), softmax";

    /// Parses a Keras-style name: `elu`, `leaky_relu`, `sigmoid`, ... (`elu:0.5` sets alpha).
    pub fn parse(name: &str) -> Option<Activation> {
        let (base, param) = match name.split_once(':') {
            Some((b, p)) => (b, Some(p.parse::<f32>().ok().filter(|a| a.is_finite() && *a > 0.0)?)),
            None => (name, None),
        };
        let is = |names: &[&str]| names.iter().any(|n| base.eq_ignore_ascii_case(n));
        let act = match param {
            None if is(&["identity", "linear"]) => Activation::Identity,
            None if is(&["relu"]) => Activation::Relu,
            a if is(&["leaky_relu", "leakyrelu"]) => Activation::LeakyRelu { alpha: a.unwrap_or(0.2) },
            a if is(&["elu"]) => Activation::Elu { alpha: a.unwrap_or(1.0) },
            None if is(&["selu"]) => Activation::Selu,
            None if is(&["tanh"]) => Activation::Tanh,
            None if is(&["logistic", "sigmoid"]) => Activation::Logistic,
            None if is(&["softmax"]) => Activation::Softmax,
            _ => return None,
        };
        Some(act)
    }

    /// Whether the activation is applied row-wise rather than element-wise.
    pub fn is_row_wise(self) -> bool {
        matches!(self, Activation::Softmax)
    }

    /// `f(x)` for 16 lanes. Softmax is row-wise and passes through unchanged here.
    #[inline(always)]
    pub fn forward_vec(self, x: f32x16) -> f32x16 {
        match self {
            Activation::Identity | Activation::Softmax => x,
            Activation::Relu => x.max(f32x16::ZERO),
            Activation::LeakyRelu { alpha } => x.simd_lt(f32x16::ZERO).select(x * f32x16::splat(alpha), x),
            Activation::Elu { alpha } => {
                let neg = f32x16::splat(alpha) * expm1_non_positive(x);
                x.simd_lt(f32x16::ZERO).select(neg, x)
            }
            Activation::Selu => {
                let neg = f32x16::splat(SELU_ALPHA) * expm1_non_positive(x);
                f32x16::splat(SELU_SCALE) * x.simd_lt(f32x16::ZERO).select(neg, x)
            }
            Activation::Tanh => x.tanh(),
            Activation::Logistic => f32x16::ONE / (f32x16::ONE + (-x).exp()),
        }
    }

    /// `f'(x)` expressed through `y = f(x)`, for 16 lanes. Softmax's derivative is fused with
    /// the cross-entropy (see [`super::softmax`]) and is 1 here.
    #[inline(always)]
    pub fn derivative_from_output_vec(self, y: f32x16) -> f32x16 {
        let negative = y.simd_lt(f32x16::ZERO);
        match self {
            Activation::Identity | Activation::Softmax => f32x16::ONE,
            Activation::Relu => y.simd_gt(f32x16::ZERO).select(f32x16::ONE, f32x16::ZERO),
            Activation::LeakyRelu { alpha } => negative.select(f32x16::splat(alpha), f32x16::ONE),
            // y = a(e^x - 1) for x < 0, so f'(x) = a e^x = y + a.
            Activation::Elu { alpha } => negative.select(y + f32x16::splat(alpha), f32x16::ONE),
            Activation::Selu => negative.select(y + f32x16::splat(SELU_SCALE * SELU_ALPHA), f32x16::splat(SELU_SCALE)),
            Activation::Tanh => f32x16::ONE - y * y,
            Activation::Logistic => y * (f32x16::ONE - y),
        }
    }

    /// Applies the activation to every element of `xs` in place (softmax: unchanged).
    pub fn forward(self, xs: &mut [f32]) {
        if self != Activation::Identity && !self.is_row_wise() {
            map_in_place(xs, |x| self.forward_vec(x));
        }
    }

    /// Multiplies each upstream gradient `dy` by `f'` at the matching output `y`.
    pub fn backward(self, ys: &[f32], dys: &mut [f32]) {
        if self != Activation::Identity && !self.is_row_wise() {
            zip_in_place(dys, ys, |dy, y| dy * self.derivative_from_output_vec(y));
        }
    }
}

/// `exp(min(x, 0)) - 1`, the negative branch of ELU and SELU, within 2 ULP of
/// `libm::expm1f` (tested). Specialised to non-positive inputs, it needs none of the
/// overflow and special-value handling of a general `exp_m1`: this is the dense layers'
/// epilogue, run on every activation. NaN stays NaN.
///
/// `x = n ln2 + r` with `|r| <= ln2 / 2`; `expm1(r)` by its Taylor polynomial to degree 7
/// (error below 2^-27 on that interval); then `expm1(x) = 2^n expm1(r) + (2^n - 1)`, exact for
/// n = 0 so small inputs keep full relative precision.
#[inline(always)]
pub(crate) fn expm1_non_positive(x: f32x16) -> f32x16 {
    let c = |v: f32| f32x16::splat(v);
    // Below -87, expm1 is -1 in f32; the clamp keeps 2^n a normal number.
    let (x, n) = clamp_and_round(x);
    // ln 2 split in two so that n * LN2_HI is exact.
    let r = n.mul_neg_add(c(0.693_359_4), x);
    let r = n.mul_neg_add(c(-2.121_944_4e-4), r);
    let poly = c(1.0 / 5040.0)
        .mul_add(r, c(1.0 / 720.0))
        .mul_add(r, c(1.0 / 120.0))
        .mul_add(r, c(1.0 / 24.0))
        .mul_add(r, c(1.0 / 6.0))
        .mul_add(r, c(0.5));
    let expm1_r = (r * r).mul_add(poly, r);
    let two_n = exp2_int(n);
    two_n.mul_add(expm1_r, two_n - f32x16::ONE)
}

/// `x` clamped to [-87, 0] (NaN stays NaN) and `n = round(x log2 e)`.
///
/// With AVX-512 these are single instructions (`vminps`/`vmaxps` ordered to pass NaN through,
/// `vrndscaleps`): `wide`'s `min`, `max` and `round` handle NaN, signed zeros and ties away
/// from zero in extra instructions that this epilogue, run on every activation, does not
/// need. Ties to even (vs away) only changes which `n` an exact `.5` picks; `r` stays in range.
#[inline(always)]
fn clamp_and_round(x: f32x16) -> (f32x16, f32x16) {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    {
        use core::arch::x86_64::*;
        use core::mem::transmute;
        // SAFETY: AVX-512F is enabled at compile time; __m512 and f32x16 are both 16 f32s.
        unsafe {
            let v = transmute::<f32x16, __m512>(x);
            // vminps/vmaxps return their second operand when either is NaN.
            let v = _mm512_max_ps(_mm512_set1_ps(-87.0), _mm512_min_ps(_mm512_setzero_ps(), v));
            let scaled = _mm512_mul_ps(v, _mm512_set1_ps(core::f32::consts::LOG2_E));
            let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(scaled);
            (transmute::<__m512, f32x16>(v), transmute::<__m512, f32x16>(n))
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
    {
        let x = x.min(f32x16::ZERO).max(f32x16::splat(-87.0));
        (x, (x * f32x16::splat(core::f32::consts::LOG2_E)).round())
    }
}

/// `2^n` for whole `n` in [-126, 0] (one `vscalefps` with AVX-512, else built in the exponent
/// bits).
#[inline(always)]
fn exp2_int(n: f32x16) -> f32x16 {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
    {
        use core::arch::x86_64::*;
        use core::mem::transmute;
        // SAFETY: AVX-512F is enabled at compile time; __m512 and f32x16 are both 16 f32s.
        unsafe { transmute::<__m512, f32x16>(_mm512_scalef_ps(_mm512_set1_ps(1.0), transmute::<f32x16, __m512>(n))) }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx512f")))]
    {
        use wide::{bytemuck::cast, i32x16};
        cast((n.round_int() + i32x16::splat(127)) << 23u32)
    }
}

impl core::fmt::Display for Activation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Activation::Identity => write!(f, "identity"),
            Activation::Relu => write!(f, "relu"),
            Activation::LeakyRelu { alpha } => write!(f, "leaky_relu:{alpha}"),
            Activation::Elu { alpha } if *alpha == 1.0 => write!(f, "elu"),
            Activation::Elu { alpha } => write!(f, "elu:{alpha}"),
            Activation::Selu => write!(f, "selu"),
            Activation::Tanh => write!(f, "tanh"),
            Activation::Logistic => write!(f, "logistic"),
            Activation::Softmax => write!(f, "softmax"),
        }
    }
}
