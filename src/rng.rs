//! Seeded randomness: one generator type (xoshiro256++) and the few distributions the crate
//! needs, written out so that results are identical on every platform and version.

use rand_core::{Rng, SeedableRng};
pub use rand_xoshiro::Xoshiro256PlusPlus as Xoshiro;

/// A generator for `seed`, and a distinct stream for each `stream` (layer, epoch, ...).
pub fn seeded(seed: u64, stream: u64) -> Xoshiro {
    // SplitMix-style mixing so nearby (seed, stream) pairs give unrelated generators.
    Xoshiro::seed_from_u64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17))
}

/// Uniform in [0, 1) with 24 random bits (every value exactly representable).
pub fn uniform_f32(rng: &mut Xoshiro) -> f32 {
    (rng.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// Uniform in [0, 1) with 53 random bits.
pub fn uniform_f64(rng: &mut Xoshiro) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Standard normal by the Box-Muller transform (one value per call; simple and exact enough
/// for initialisation, which is not a hot path).
pub fn normal(rng: &mut Xoshiro) -> f64 {
    let u1 = 1.0 - uniform_f64(rng); // (0, 1]: ln is finite
    let u2 = uniform_f64(rng);
    libm::sqrt(-2.0 * libm::log(u1)) * libm::cos(core::f64::consts::TAU * u2)
}

/// Uniform integer in `0..n` without modulo bias (Lemire's method with rejection).
pub fn below(rng: &mut Xoshiro, n: u64) -> u64 {
    assert!(n > 0, "below(0) has no value");
    loop {
        let m = (rng.next_u64() as u128) * (n as u128);
        let low = m as u64;
        if low >= n.wrapping_neg() % n {
            return (m >> 64) as u64;
        }
    }
}

/// Fisher-Yates shuffle.
pub fn shuffle<T>(rng: &mut Xoshiro, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = below(rng, i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_has_unit_moments() {
        let mut rng = seeded(1, 2);
        let n = 200_000;
        let xs: alloc::vec::Vec<f64> = (0..n).map(|_| normal(&mut rng)).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let mut a: alloc::vec::Vec<u32> = (0..1000).collect();
        let mut b = a.clone();
        shuffle(&mut seeded(7, 0), &mut a);
        shuffle(&mut seeded(7, 0), &mut b);
        assert_eq!(a, b);
        assert_ne!(a, (0..1000).collect::<alloc::vec::Vec<_>>());
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..1000).collect::<alloc::vec::Vec<_>>());
    }

    #[test]
    fn below_stays_in_range() {
        let mut rng = seeded(3, 0);
        for n in [1u64, 2, 3, 10, 1 << 40] {
            for _ in 0..1000 {
                assert!(below(&mut rng, n) < n);
            }
        }
    }
}
