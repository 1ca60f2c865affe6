//! The narrow-type inference kernels against their scalar twins, for every kernel this CPU
//! runs, over awkward shapes: `kernels::int8` (exact equality of the i32 accumulators) and
//! `kernels::bf16` (bit-for-bit equality of the f32 sums on normal numbers).

use simdnn::kernels::bf16::{Bf16Kernel, gemv_bf16_with, round_to_bf16, round_to_bf16_with};
use simdnn::kernels::int8::{
    Int8Kernel, U8Quant, gemv_u8_i8, gemv_u8_i8_with, min_max, pack_groups_of_4, packed_len, quantize_u8,
};
use simdnn::kernels::quant::bf16_from_f32;
use simdnn::kernels::reference;
use simdnn::rng::{Xoshiro, normal, seeded, uniform_f32};

fn kernels() -> Vec<Int8Kernel> {
    [Int8Kernel::Portable, Int8Kernel::Vnni].into_iter().filter(|k| k.available()).collect()
}

fn bytes(len: usize, rng: &mut Xoshiro) -> Vec<u8> {
    // A quarter at the extremes, where a saturating kernel (pmaddubsw) would go wrong.
    (0..len)
        .map(|_| match (uniform_f32(rng) * 8.0) as u32 {
            0 => 255,
            1 => 0,
            _ => (uniform_f32(rng) * 256.0) as u8,
        })
        .collect()
}

fn weights(len: usize, rng: &mut Xoshiro) -> Vec<i8> {
    (0..len)
        .map(|_| match (uniform_f32(rng) * 8.0) as u32 {
            0 => 127,
            1 => -128,
            _ => (uniform_f32(rng) * 256.0 - 128.0) as i8,
        })
        .collect()
}

#[test]
fn gemv_equals_the_twin_for_every_kernel_and_awkward_shape() {
    let kernels = kernels();
    eprintln!("int8 kernels on this CPU: {kernels:?} (detected: {:?})", Int8Kernel::detect());
    let mut failures = Vec::new();
    for n_in in [0, 1, 3, 4, 5, 7, 8, 31, 100, 257, 3072] {
        for n_out in [1, 4, 15, 16, 17, 100, 127, 128, 129, 300] {
            let mut rng = seeded(n_in as u64, n_out as u64);
            let x = bytes(n_in, &mut rng);
            let q = weights(n_in * n_out, &mut rng);
            let packed = pack_groups_of_4(&q, n_in, n_out);
            assert_eq!(Some(packed.len()), packed_len(n_in, n_out));
            let expected = reference::gemv_u8_i8(&x, &q, n_out);
            for &kernel in &kernels {
                let mut acc = vec![i32::MIN; n_out];
                gemv_u8_i8_with(kernel, &x, &packed, n_out, &mut acc);
                if acc != expected {
                    let j = acc.iter().zip(&expected).position(|(a, e)| a != e).unwrap_or(0);
                    failures.push(format!("{kernel:?} {n_in}x{n_out}: output {j} {} != {}", acc[j], expected[j]));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn gemv_at_the_largest_inputs_does_not_overflow() {
    // Every product at its extreme: 32,768 x 255 x -128 is -1.07e9, inside an i32.
    let n_in = simdnn::kernels::int8::MAX_INPUTS;
    let x = vec![255u8; n_in];
    let q = vec![-128i8; n_in * 2];
    let packed = pack_groups_of_4(&q, n_in, 2);
    let mut acc = vec![0; 2];
    gemv_u8_i8(&x, &packed, 2, &mut acc);
    assert_eq!(acc, reference::gemv_u8_i8(&x, &q, 2));
    assert_eq!(acc[0], -(n_in as i32) * 255 * 128);
}

#[test]
fn quantisation_equals_the_twin_over_awkward_lengths_and_special_values() {
    let quants =
        [U8Quant::covering(-1.0, 5.0), U8Quant::covering(0.0, 1.0), U8Quant { scale: 1.0 / 255.0, zero_point: 0 }];
    for len in [0, 1, 15, 16, 17, 33, 100, 3072] {
        let mut rng = seeded(len as u64, 7);
        let mut x: Vec<f32> = (0..len).map(|_| normal(&mut rng) as f32 * 3.0).collect();
        let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1e30, -1e30, 0.0, -0.0];
        for (v, s) in x.iter_mut().step_by(5).zip(specials.iter().cycle()) {
            *v = *s;
        }
        for q in quants {
            let (mut got, mut want) = (vec![7u8; len], vec![9u8; len]);
            quantize_u8(&x, q, &mut got);
            reference::quantize_u8(&x, q, &mut want);
            assert_eq!(got, want, "len {len}, {q:?}");
        }
        let (lo, hi) = min_max(&x);
        let finite = x.iter().filter(|v| !v.is_nan());
        assert_eq!(lo, finite.clone().fold(f32::INFINITY, |a, &b| a.min(b)), "min of {len}");
        assert_eq!(hi, finite.fold(f32::NEG_INFINITY, |a, &b| a.max(b)), "max of {len}");
    }
}

#[test]
fn a_quantised_value_is_within_half_a_step_inside_the_range() {
    let q = U8Quant::covering(-1.0, 4.0);
    let x: Vec<f32> = (0..1000).map(|i| -1.0 + 5.0 * i as f32 / 999.0).collect();
    let mut out = vec![0u8; x.len()];
    quantize_u8(&x, q, &mut out);
    for (&v, &b) in x.iter().zip(&out) {
        let back = (b as f32 - q.zero_point as f32) * q.scale;
        assert!((back - v).abs() <= q.scale * 0.5 + 1e-6, "{v} -> {b} -> {back}");
    }
}

#[test]
fn bf16_gemv_equals_the_twin_for_every_kernel_and_awkward_shape() {
    let kernels: Vec<Bf16Kernel> =
        [Bf16Kernel::Portable, Bf16Kernel::Avx512Bf16].into_iter().filter(|k| k.available()).collect();
    eprintln!("bf16 kernels on this CPU: {kernels:?} (detected: {:?})", Bf16Kernel::detect());
    let mut failures = Vec::new();
    for n_in in [0, 1, 2, 3, 17, 100, 257, 3072] {
        for n_out in [1, 4, 15, 16, 17, 100, 128, 129, 300] {
            let mut rng = seeded(n_in as u64 + 1000, n_out as u64);
            let x: Vec<u16> = (0..n_in).map(|_| bf16_from_f32(normal(&mut rng) as f32)).collect();
            let w: Vec<u16> = (0..n_in * n_out).map(|_| bf16_from_f32(0.1 * normal(&mut rng) as f32)).collect();
            let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
            let expected = reference::gemv_bf16(&x, &w, n_out);
            for &kernel in &kernels {
                let mut y = vec![f32::NAN; n_out];
                gemv_bf16_with(kernel, &x, &bytes, n_out, &mut y);
                if y != expected {
                    let j = y.iter().zip(&expected).position(|(a, e)| a != e).unwrap_or(0);
                    failures.push(format!("{kernel:?} {n_in}x{n_out}: output {j} {} != {}", y[j], expected[j]));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}

/// Each kernel's rounding (the trainer's copy of its weights) is the scalar conversion, except
/// that AVX-512 BF16 flushes subnormals to a zero of their sign, as its products read them.
#[test]
fn rounding_for_each_kernel_equals_the_scalar_conversion_but_for_subnormals() {
    let kernels = [Bf16Kernel::Portable, Bf16Kernel::Avx512Bf16].into_iter().filter(|k| k.available());
    for kernel in kernels {
        for len in [0, 1, 15, 16, 17, 100] {
            let mut rng = seeded(len as u64, 4);
            let mut x: Vec<f32> = (0..len).map(|_| normal(&mut rng) as f32 * 1e3).collect();
            let specials = [f32::NAN, f32::INFINITY, f32::MAX, 1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, 1e-40, -1e-40];
            for (v, s) in x.iter_mut().step_by(3).zip(specials.iter().cycle()) {
                *v = *s;
            }
            let mut got = vec![0u16; len];
            round_to_bf16_with(kernel, &x, &mut got);
            let want: Vec<u16> = x
                .iter()
                .map(|&v| match kernel {
                    Bf16Kernel::Avx512Bf16 if v.is_subnormal() => bf16_from_f32(0f32.copysign(v)),
                    _ => bf16_from_f32(v),
                })
                .collect();
            assert_eq!(got, want, "{kernel:?}, length {len}: {x:?}");
        }
    }
}

#[test]
fn rounding_to_bf16_equals_the_scalar_conversion() {
    for len in [0, 1, 15, 16, 17, 100] {
        let mut rng = seeded(len as u64, 3);
        let mut x: Vec<f32> = (0..len).map(|_| normal(&mut rng) as f32 * 1e3).collect();
        let specials =
            [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, 1.0 + 1.0 / 256.0, 1e-40, -0.0];
        for (v, s) in x.iter_mut().step_by(3).zip(specials.iter().cycle()) {
            *v = *s;
        }
        let mut got = vec![0u16; len];
        round_to_bf16(&x, &mut got);
        let want: Vec<u16> = x.iter().map(|&v| bf16_from_f32(v)).collect();
        assert_eq!(got, want, "length {len}: {x:?}");
    }
}
