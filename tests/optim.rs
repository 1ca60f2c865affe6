//! Every optimiser against its published update rule (Keras 3's, as the doc comment above each
//! struct in `src/optim/mod.rs` states it), computed here by hand in f64, written out
//! literally; plus the Keras defaults, the step counter, and thread-count independence.

use simdnn::kernels::quant::bf16_from_f32;
use simdnn::optim::{
    AdaGrad, Adam, Gradient, Nadam, Optimizer, OptimizerConfig, Owners, Params, ParamsCopy, RmsProp, Sgd,
};

const P0: [f32; 3] = [0.5, -1.25, 2.0];
/// Fixed gradients for three steps: mixed signs and magnitudes, one of them tiny so that the
/// epsilon placement matters.
const GRADS: [[f32; 3]; 3] = [[0.1, -0.2, 0.3], [-0.4, 0.05, 0.6], [0.25, -0.7, 0.001]];

/// An f32 hyperparameter exactly as the optimiser sees it.
fn h(x: f32) -> f64 {
    x as f64
}

fn g(step: usize, i: usize) -> f64 {
    GRADS[step][i] as f64
}

/// Runs `steps` steps of `opt` from `P0` at rate `lr`.
fn run(opt: &mut dyn Optimizer, steps: usize, lr: f32) -> Vec<f32> {
    let mut p = P0.to_vec();
    for (t, grads) in GRADS.iter().take(steps).enumerate() {
        assert_eq!(opt.iterations(), t as u64);
        opt.step(&mut p, grads, lr);
        assert_eq!(opt.iterations(), t as u64 + 1);
    }
    p
}

/// Within 1e-6 relative (absolute for parameters below 1) of the hand-computed value. Every
/// parameter must move well beyond that tolerance, so a wrong or missing update cannot pass.
fn check(name: &str, actual: &[f32], expected: &[f64]) {
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let a = a as f64;
        let tol = 1e-6 * e.abs().max(1.0);
        assert!((e - P0[i] as f64).abs() > 100.0 * tol, "{name}: test setup moves parameter {i} too little");
        assert!((a - e).abs() <= tol, "{name}: parameter {i} is {a}, expected {e} (|diff| {:e})", (a - e).abs());
    }
}

fn p0() -> Vec<f64> {
    P0.iter().map(|&p| p as f64).collect()
}

/// Keras `SGD`: `v = momentum * v - lr * g`; `p += v`, or with Nesterov
/// `p += momentum * v - lr * g`; without momentum `p -= lr * g`.
fn sgd_reference(steps: usize, lr: f32, momentum: f32, nesterov: bool) -> Vec<f64> {
    let (lr, momentum) = (h(lr), h(momentum));
    let mut p = p0();
    let mut v = [0f64; 3];
    for t in 0..steps {
        for i in 0..3 {
            if momentum == 0.0 {
                p[i] -= lr * g(t, i);
                continue;
            }
            v[i] = momentum * v[i] - lr * g(t, i);
            if nesterov {
                p[i] += momentum * v[i] - lr * g(t, i);
            } else {
                p[i] += v[i];
            }
        }
    }
    p
}

/// Keras `Adam` / `AdamW`: `p -= lr * wd * p`; `m += (g - m)(1 - b1)`; `v += (g^2 - v)(1 - b2)`;
/// `p -= lr * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)`.
fn adam_reference(steps: usize, lr: f32, b1: f32, b2: f32, eps: f32, wd: f32) -> Vec<f64> {
    let (lr, b1, b2, eps, wd) = (h(lr), h(b1), h(b2), h(eps), h(wd));
    let mut p = p0();
    let (mut m, mut v) = ([0f64; 3], [0f64; 3]);
    for step in 0..steps {
        let t = (step + 1) as f64;
        for i in 0..3 {
            let gi = g(step, i);
            p[i] -= lr * wd * p[i];
            m[i] += (gi - m[i]) * (1.0 - b1);
            v[i] += (gi * gi - v[i]) * (1.0 - b2);
            p[i] -= lr * (1.0 - b2.powf(t)).sqrt() / (1.0 - b1.powf(t)) * m[i] / (v[i].sqrt() + eps);
        }
    }
    p
}

/// Keras 3 `Nadam`: `u_t = b1 (1 - 0.5 * 0.96^t)`, `U_t = u_1 ... u_t`;
/// `m += (g - m)(1 - b1)`; `v += (g^2 - v)(1 - b2)`;
/// `m_hat = u_{t+1} m / (1 - U_t u_{t+1}) + (1 - u_t) g / (1 - U_t)`; `v_hat = v / (1 - b2^t)`;
/// `p -= lr * m_hat / (sqrt(v_hat) + eps)`.
fn nadam_reference(steps: usize, lr: f32, b1: f32, b2: f32, eps: f32) -> Vec<f64> {
    let (lr, b1, b2, eps) = (h(lr), h(b1), h(b2), h(eps));
    let u = |t: f64| b1 * (1.0 - 0.5 * 0.96f64.powf(t));
    let mut p = p0();
    let (mut m, mut v) = ([0f64; 3], [0f64; 3]);
    let mut u_product = 1.0;
    for step in 0..steps {
        let t = (step + 1) as f64;
        let (u_t, u_next) = (u(t), u(t + 1.0));
        u_product *= u_t;
        for i in 0..3 {
            let gi = g(step, i);
            m[i] += (gi - m[i]) * (1.0 - b1);
            v[i] += (gi * gi - v[i]) * (1.0 - b2);
            let m_hat = u_next * m[i] / (1.0 - u_product * u_next) + (1.0 - u_t) * gi / (1.0 - u_product);
            let v_hat = v[i] / (1.0 - b2.powf(t));
            p[i] -= lr * m_hat / (v_hat.sqrt() + eps);
        }
    }
    p
}

/// Keras `RMSprop` (no momentum, not centred): `v = rho v + (1 - rho) g^2`;
/// `p -= lr g / sqrt(v + eps)`.
fn rmsprop_reference(steps: usize, lr: f32, rho: f32, eps: f32) -> Vec<f64> {
    let (lr, rho, eps) = (h(lr), h(rho), h(eps));
    let mut p = p0();
    let mut v = [0f64; 3];
    for t in 0..steps {
        for i in 0..3 {
            v[i] = rho * v[i] + (1.0 - rho) * g(t, i) * g(t, i);
            p[i] -= lr * g(t, i) / (v[i] + eps).sqrt();
        }
    }
    p
}

/// Keras `Adagrad`: the accumulator starts at `initial_accumulator`; `a += g^2`;
/// `p -= lr g / sqrt(a + eps)`.
fn adagrad_reference(steps: usize, lr: f32, initial: f32, eps: f32) -> Vec<f64> {
    let (lr, eps) = (h(lr), h(eps));
    let mut p = p0();
    let mut a = [h(initial); 3];
    for t in 0..steps {
        for i in 0..3 {
            a[i] += g(t, i) * g(t, i);
            p[i] -= lr * g(t, i) / (a[i] + eps).sqrt();
        }
    }
    p
}

#[test]
fn sgd_plain_follows_keras() {
    for steps in [1, 3] {
        let mut opt = Sgd::new(3, 0.0, false);
        check("sgd", &run(&mut opt, steps, 0.1), &sgd_reference(steps, 0.1, 0.0, false));
    }
    let mut opt = OptimizerConfig::keras_default("sgd").unwrap().build(3);
    check("sgd (keras default)", &run(opt.as_mut(), 3, 0.05), &sgd_reference(3, 0.05, 0.0, false));
}

#[test]
fn sgd_momentum_follows_keras() {
    for steps in [2, 3] {
        let mut opt = Sgd::new(3, 0.9, false);
        check("sgd momentum", &run(&mut opt, steps, 0.1), &sgd_reference(steps, 0.1, 0.9, false));
    }
    let mut opt = OptimizerConfig::Sgd { momentum: 0.5, nesterov: false }.build(3);
    check("sgd momentum 0.5", &run(opt.as_mut(), 3, 0.2), &sgd_reference(3, 0.2, 0.5, false));
}

#[test]
fn sgd_nesterov_follows_keras() {
    for steps in [2, 3] {
        let mut opt = Sgd::new(3, 0.9, true);
        check("sgd nesterov", &run(&mut opt, steps, 0.1), &sgd_reference(steps, 0.1, 0.9, true));
    }
    // Nesterov and plain momentum must differ (else the flag would be ignored).
    let a = run(&mut Sgd::new(3, 0.9, true), 3, 0.1);
    let b = run(&mut Sgd::new(3, 0.9, false), 3, 0.1);
    assert_ne!(a, b);
}

#[test]
fn adam_follows_keras() {
    let mut opt = OptimizerConfig::keras_default("adam").unwrap().build(3);
    check("adam (keras default)", &run(opt.as_mut(), 3, 0.01), &adam_reference(3, 0.01, 0.9, 0.999, 1e-7, 0.0));
    // Unusual hyperparameters: a large epsilon makes `sqrt(v) + eps` and `sqrt(v + eps)` differ.
    for steps in [1, 2, 3] {
        let mut opt = Adam::new(3, 0.8, 0.95, 1e-2, 0.0);
        check("adam (custom)", &run(&mut opt, steps, 0.05), &adam_reference(steps, 0.05, 0.8, 0.95, 1e-2, 0.0));
    }
}

#[test]
fn adamw_follows_keras() {
    let mut opt = OptimizerConfig::keras_default("adamw").unwrap().build(3);
    check("adamw (keras default)", &run(opt.as_mut(), 3, 0.01), &adam_reference(3, 0.01, 0.9, 0.999, 1e-7, 0.004));
    // A large decay so that the decoupled term is visible well above rounding.
    for steps in [1, 3] {
        let mut opt = Adam::new(3, 0.85, 0.99, 1e-3, 0.3);
        check("adamw (custom)", &run(&mut opt, steps, 0.1), &adam_reference(steps, 0.1, 0.85, 0.99, 1e-3, 0.3));
    }
    // And decay must make a difference.
    let with = run(&mut Adam::new(3, 0.85, 0.99, 1e-3, 0.3), 3, 0.1);
    let without = run(&mut Adam::new(3, 0.85, 0.99, 1e-3, 0.0), 3, 0.1);
    assert_ne!(with, without);
}

#[test]
fn nadam_follows_keras() {
    let mut opt = OptimizerConfig::keras_default("nadam").unwrap().build(3);
    check("nadam (keras default)", &run(opt.as_mut(), 3, 0.01), &nadam_reference(3, 0.01, 0.9, 0.999, 1e-7));
    for steps in [1, 2, 3] {
        let mut opt = Nadam::new(3, 0.7, 0.9, 1e-2);
        check("nadam (custom)", &run(&mut opt, steps, 0.05), &nadam_reference(steps, 0.05, 0.7, 0.9, 1e-2));
    }
}

#[test]
fn nadam_differs_from_adam() {
    // Same settings, different rule: guards against Nadam silently falling back to Adam.
    let nadam = run(&mut Nadam::new(3, 0.9, 0.999, 1e-7), 3, 0.01);
    let adam = run(&mut Adam::new(3, 0.9, 0.999, 1e-7, 0.0), 3, 0.01);
    for i in 0..3 {
        assert!((nadam[i] - adam[i]).abs() > 1e-5, "parameter {i}: nadam {} vs adam {}", nadam[i], adam[i]);
    }
}

#[test]
fn rmsprop_follows_keras() {
    let mut opt = OptimizerConfig::keras_default("rmsprop").unwrap().build(3);
    check("rmsprop (keras default)", &run(opt.as_mut(), 3, 0.001), &rmsprop_reference(3, 0.001, 0.9, 1e-7));
    for steps in [1, 2, 3] {
        let mut opt = RmsProp::new(3, 0.8, 1e-2);
        check("rmsprop (custom)", &run(&mut opt, steps, 0.01), &rmsprop_reference(steps, 0.01, 0.8, 1e-2));
    }
}

#[test]
fn adagrad_follows_keras() {
    let mut opt = OptimizerConfig::keras_default("adagrad").unwrap().build(3);
    check("adagrad (keras default)", &run(opt.as_mut(), 3, 0.01), &adagrad_reference(3, 0.01, 0.1, 1e-7));
    for steps in [1, 2, 3] {
        let mut opt = AdaGrad::new(3, 0.0, 1e-2);
        check("adagrad (custom)", &run(&mut opt, steps, 0.05), &adagrad_reference(steps, 0.05, 0.0, 1e-2));
    }
}

#[test]
fn keras_defaults() {
    use OptimizerConfig as C;
    let cases = [
        ("sgd", C::Sgd { momentum: 0.0, nesterov: false }),
        ("adam", C::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-7 }),
        ("adamw", C::AdamW { beta1: 0.9, beta2: 0.999, epsilon: 1e-7, weight_decay: 0.004 }),
        ("nadam", C::Nadam { beta1: 0.9, beta2: 0.999, epsilon: 1e-7 }),
        ("rmsprop", C::RmsProp { rho: 0.9, epsilon: 1e-7 }),
        ("adagrad", C::AdaGrad { initial_accumulator: 0.1, epsilon: 1e-7 }),
    ];
    for (name, expected) in cases {
        assert_eq!(C::keras_default(name), Some(expected), "{name}");
        assert!(C::NAMES.contains(name), "NAMES lacks {name}");
    }
    assert_eq!(C::NAMES.split(", ").count(), cases.len());
    for unknown in ["", "adamax", "sgd ", "lion", "nadamw"] {
        assert_eq!(C::keras_default(unknown), None, "{unknown:?}");
    }
}

#[test]
fn built_optimisers_count_iterations() {
    for name in ["sgd", "adam", "adamw", "nadam", "rmsprop", "adagrad"] {
        let mut opt = OptimizerConfig::keras_default(name).unwrap().build(5);
        assert_eq!(opt.iterations(), 0, "{name}");
        let mut p = vec![1.0f32; 5];
        for t in 1..=4u64 {
            opt.step(&mut p, &[0.1, -0.1, 0.2, 0.0, 1.0], 0.01);
            assert_eq!(opt.iterations(), t, "{name}");
        }
        assert!(p.iter().all(|x| x.is_finite()), "{name}: {p:?}");
        // A zero gradient leaves a parameter alone (no decay in these defaults but AdamW's).
        if name != "adamw" {
            assert_eq!(p[3], 1.0, "{name}");
        }
        assert!(p[0] < 1.0 && p[1] > 1.0, "{name} moved against the gradient: {p:?}");
    }
    // Momentum SGD is built with momentum.
    let mut opt = OptimizerConfig::Sgd { momentum: 0.9, nesterov: true }.build(3);
    check("sgd nesterov (built)", &run(opt.as_mut(), 3, 0.1), &sgd_reference(3, 0.1, 0.9, true));
}

/// Steps a fresh optimiser `steps` times over `n` parameters inside a pool of `threads`.
fn run_long(config: OptimizerConfig, n: usize, threads: usize, steps: usize) -> Vec<f32> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        assert_eq!(rayon::current_num_threads(), threads);
        let mut opt = config.build(n);
        let mut params: Vec<f32> = (0..n).map(|i| ((i * 37 % 1001) as f32 - 500.0) / 250.0).collect();
        let mut grads = vec![0f32; n];
        for t in 0..steps {
            for (i, g) in grads.iter_mut().enumerate() {
                *g = (((i * 7919 + t * 104_729) % 2003) as f32 - 1001.0) / 1000.0;
            }
            opt.step(&mut params, &grads, 1e-2);
        }
        assert_eq!(opt.iterations(), steps as u64);
        params
    })
}

#[test]
fn parallel_steps_are_bit_identical_to_serial() {
    const N: usize = 100_000;
    use OptimizerConfig as C;
    let configs = [
        C::Sgd { momentum: 0.9, nesterov: false },
        C::Sgd { momentum: 0.9, nesterov: true },
        C::keras_default("adam").unwrap(),
        C::keras_default("adamw").unwrap(),
        C::keras_default("nadam").unwrap(),
        C::keras_default("rmsprop").unwrap(),
        C::keras_default("adagrad").unwrap(),
        C::keras_default("sgd").unwrap(),
    ];
    for config in configs {
        let serial = run_long(config, N, 1, 3);
        let parallel = run_long(config, N, 2, 3);
        let first_diff = serial.iter().zip(&parallel).position(|(a, b)| a.to_bits() != b.to_bits());
        assert_eq!(first_diff, None, "{config:?}: 1 and 2 threads differ");
        // The update reached every element, including those in the last (partial) chunk.
        let start = run_long(config, N, 1, 0);
        assert!(serial.iter().zip(&start).skip(N - 5).all(|(a, b)| a != b), "{config:?}: the tail was not updated");
        assert!(serial.iter().zip(&start).take(5).all(|(a, b)| a != b), "{config:?}: the head was not updated");
    }
}

#[test]
fn parallel_path_matches_the_reference_rule() {
    // The threads' parts must apply the same rule as the three-parameter runs: spot-check
    // elements across the vector (both halves, their ends) against the f64 Adam reference.
    const N: usize = 100_000;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let params = pool.install(|| {
        let mut opt = Adam::new(N, 0.9, 0.999, 1e-7, 0.0);
        let mut p: Vec<f32> = (0..N).map(|i| P0[i % 3]).collect();
        for grads in &GRADS {
            let g: Vec<f32> = (0..N).map(|i| grads[i % 3]).collect();
            opt.step(&mut p, &g, 0.01);
        }
        p
    });
    let expected = adam_reference(3, 0.01, 0.9, 0.999, 1e-7, 0.0);
    for i in [0, 1, 2, 32_768, N / 2 - 1, N / 2, 65_536, 98_304, N - 2, N - 1] {
        let e = expected[i % 3];
        assert!((params[i] as f64 - e).abs() <= 1e-6 * e.abs().max(1.0), "element {i}: {} vs {e}", params[i]);
    }
}

/// Shard `s`'s gradient at step `t`: positive, so no sum cancels and every parameter moves.
fn shard_grad(s: usize, t: usize, n: usize) -> Vec<f32> {
    (0..n).map(|i| (((i * 7919 + t * 104_729 + s * 31) % 2003) as f32 + 1.0) / 1000.0).collect()
}

/// The sharded step also keeps a trainer's copy of the parameters (rounded to bf16, or the
/// parameters after a point, as they are): it must not change the update, and must equal the
/// parameters (rounded to nearest even), whichever thread and chunk of the loop wrote them.
/// The same with the parameters split between the threads in uneven runs (as a
/// tensor-parallel trainer owns them), one of them across `summed_from`.
#[test]
fn sharded_gradients_match_the_summed_gradient() {
    use OptimizerConfig as C;
    let configs = [
        C::keras_default("sgd").unwrap(),
        C::Sgd { momentum: 0.9, nesterov: true },
        C::keras_default("adamw").unwrap(),
        C::keras_default("nadam").unwrap(),
        C::keras_default("rmsprop").unwrap(),
        C::keras_default("adagrad").unwrap(),
    ];
    // Below and above the size at which the loop splits across threads; `summed_from` at
    // either end and at an odd place; one and two shards after the first.
    for (n, threads) in [(1_000, 2), (100_003, 1), (100_003, 2), (100_003, 3)] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        for summed_from in [0, 33_337.min(n / 3), n] {
            let runs = [n / 7, n / 3 + 5, n / 2, 2 * n / 3 + 1, n];
            let owner_splits = [Owners::Even, Owners::Runs { threads, ends: &runs }];
            for shards in [2, 3] {
                for (owners, config) in owner_splits.iter().flat_map(|&o| configs.iter().map(move |&c| (o, c))) {
                    let start: Vec<f32> = (0..n).map(|i| ((i * 37 % 1001) as f32 - 500.0) / 250.0).collect();
                    let (mut summed, mut sharded) = (start.clone(), start.clone());
                    let mut rounded = vec![0u16; n];
                    let copied_from = (summed_from + 2_049).min(n);
                    let mut copied = vec![f32::NAN; n - copied_from];
                    let (mut a, mut b) = (config.build(n), config.build(n));
                    let case = format!(
                        "{config:?}, n {n}, {threads} threads, summed from {summed_from}, {shards} shards, {owners:?}"
                    );
                    pool.install(|| {
                        for t in 0..2 {
                            let grads: Vec<Vec<f32>> = (0..shards).map(|s| shard_grad(s, t, n)).collect();
                            // What the trainer summed before: the shards added in order.
                            let mut total = grads[0].clone();
                            for other in &grads[1..] {
                                total[summed_from..].iter_mut().zip(&other[summed_from..]).for_each(|(a, g)| *a += g);
                            }
                            a.step(&mut summed, &total, 1e-2);
                            let others: Vec<&[f32]> = grads[1..].iter().map(|g| &g[..]).collect();
                            // One kind of copy at each of the two steps.
                            let copy = if t == 0 {
                                ParamsCopy::Bf16(&mut rounded)
                            } else {
                                ParamsCopy::F32 { from: copied_from, values: &mut copied }
                            };
                            let params = Params { values: &mut sharded, copy: Some(copy) };
                            b.apply(params, Gradient { first: &grads[0], others: &others, summed_from, owners }, 1e-2);
                            let stale = if t == 0 {
                                rounded.iter().zip(&sharded).position(|(&r, &p)| r != bf16_from_f32(p))
                            } else {
                                copied.iter().zip(&sharded[copied_from..]).position(|(c, p)| c.to_bits() != p.to_bits())
                            };
                            assert_eq!(stale, None, "{case}, step {t}: the copy differs from the parameters");
                        }
                    });
                    let first_diff = summed.iter().zip(&sharded).position(|(x, y)| x.to_bits() != y.to_bits());
                    assert_eq!(first_diff, None, "{case}");
                    let unmoved = sharded.iter().zip(&start).position(|(x, y)| x == y);
                    assert_eq!(unmoved, None, "{case}: a parameter was not updated");
                }
            }
        }
    }
}

/// Whether stepping an optimiser built for 3 parameters with `params`/`grads` panics.
fn step_panics(config: OptimizerConfig, params: usize, grads: usize) -> bool {
    let mut opt = config.build(3);
    let (mut p, g) = (vec![1.0f32; params], vec![0.5f32; grads]);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| opt.step(&mut p, &g, 0.1))).is_err()
}

#[test]
fn mismatched_lengths_are_refused() {
    for name in ["adam", "adamw", "nadam", "rmsprop", "adagrad"] {
        let config = OptimizerConfig::keras_default(name).unwrap();
        assert!(step_panics(config, 3, 2), "{name}: 3 parameters, 2 gradients");
        assert!(step_panics(config, 4, 4), "{name}: built for 3, given 4");
        assert!(!step_panics(config, 3, 3), "{name}");
    }
    let momentum = OptimizerConfig::Sgd { momentum: 0.9, nesterov: false };
    assert!(step_panics(momentum, 3, 2) && step_panics(momentum, 4, 4));
}

#[test]
fn plain_sgd_refuses_mismatched_lengths() {
    let config = OptimizerConfig::keras_default("sgd").unwrap();
    assert!(step_panics(config, 3, 2), "3 parameters, 2 gradients");
    assert!(step_panics(config, 4, 4), "built for 3, given 4");
}

/// Every configuration with state and without.
fn all_configs() -> [OptimizerConfig; 8] {
    use OptimizerConfig as C;
    [
        C::keras_default("sgd").unwrap(),
        C::Sgd { momentum: 0.9, nesterov: false },
        C::Sgd { momentum: 0.9, nesterov: true },
        C::keras_default("adam").unwrap(),
        C::keras_default("adamw").unwrap(),
        C::keras_default("nadam").unwrap(),
        C::keras_default("rmsprop").unwrap(),
        C::keras_default("adagrad").unwrap(),
    ]
}

/// Parameter `i`'s start and its gradient at step `t`: varied signs and magnitudes.
fn start_value(i: usize) -> f32 {
    ((i * 37 % 101) as f32 - 50.0) / 25.0
}
fn grad_value(i: usize, t: usize) -> f32 {
    (((i * 7919 + t * 104_729) % 203) as f32 - 101.0) / 100.0
}

#[test]
fn each_parameter_moves_as_it_would_alone() {
    // 37 parameters run through the vectorised loop and its tail (two 16-lane vectors and
    // 5 left over, or the compiler's narrower vectors); one parameter alone through the tail
    // only. The rules are element-wise, so the bits must agree (a mix-up of lanes, or of the
    // state's slots between parameters, shows here).
    const N: usize = 37;
    for config in all_configs() {
        let mut together: Vec<f32> = (0..N).map(start_value).collect();
        let mut opt = config.build(N);
        for t in 0..3 {
            let g: Vec<f32> = (0..N).map(|i| grad_value(i, t)).collect();
            opt.step(&mut together, &g, 0.05);
        }
        for (i, &value) in together.iter().enumerate() {
            let (mut alone, mut opt) = ([start_value(i)], config.build(1));
            for t in 0..3 {
                opt.step(&mut alone, &[grad_value(i, t)], 0.05);
            }
            assert_eq!(value.to_bits(), alone[0].to_bits(), "{config:?}: parameter {i}: {value} vs {}", alone[0]);
            assert_ne!(value, start_value(i), "{config:?}: parameter {i} did not move");
        }
    }
}

#[test]
fn saved_state_resumes_bit_for_bit_with_slots_side_by_side() {
    const N: usize = 37;
    for config in all_configs() {
        let grads = |t: usize| (0..N).map(|i| grad_value(i, t)).collect::<Vec<f32>>();
        let mut straight: Vec<f32> = (0..N).map(start_value).collect();
        let mut opt = config.build(N);
        for t in 0..3 {
            opt.step(&mut straight, &grads(t), 0.05);
        }
        let mut resumed: Vec<f32> = (0..N).map(start_value).collect();
        let mut first = config.build(N);
        for t in 0..2 {
            first.step(&mut resumed, &grads(t), 0.05);
        }
        let mut second = config.build(N);
        second.restore(&first.state()).unwrap();
        second.step(&mut resumed, &grads(2), 0.05);
        assert_eq!(straight, resumed, "{config:?}");
    }
    // The saved layout (the resume file's): each parameter's m and v side by side.
    let mut adam = Adam::new(N, 0.9, 0.999, 1e-7, 0.0);
    let g = (0..N).map(|i| grad_value(i, 0)).collect::<Vec<f32>>();
    adam.step(&mut (0..N).map(start_value).collect::<Vec<f32>>(), &g, 0.05);
    let slots = adam.state().slots;
    for (i, &g) in g.iter().enumerate() {
        assert_eq!(slots[2 * i], g * (1.0 - 0.9f32), "m of parameter {i}");
        assert_eq!(slots[2 * i + 1], g * g * (1.0 - 0.999f32), "v of parameter {i}");
    }
}
