//! Batch norm, dropout, alpha dropout and MC dropout: the properties the chapter relies on.
#![allow(clippy::needless_range_loop)] // finite differences perturb parameters by index

use simdnn::format::{SavedModel, from_bytes, to_bytes};
use simdnn::kernels::Activation;
use simdnn::nn::dropout::{Dropout, DropoutKind};
use simdnn::nn::{Initializer, Layer, LayerSpec, Noise, Preprocess, Sequential, Workspace};
use simdnn::rng::{normal, seeded, uniform_f32};
use simdnn::train::TrainConfig;

fn gaussian(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = seeded(seed, 7);
    (0..n).map(|_| normal(&mut rng) as f32).collect()
}

fn moments(xs: &[f32]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Mean and standard deviation of every hidden layer's activations, 20 x Dense(100).
fn layer_moments(act: Activation, init: Initializer, inputs: &[f32], batch: usize) -> Vec<(f64, f64)> {
    let hidden = LayerSpec::Dense { units: 100, activation: act, init };
    let mut specs = vec![hidden; 20];
    specs.push(LayerSpec::Dense { units: 10, activation: Activation::Softmax, init: Initializer::GlorotUniform });
    let model = Sequential::new(100, &specs, 5).unwrap();
    let mut x = inputs.to_vec();
    let mut out = Vec::new();
    for layer in &model.layers()[..20] {
        let d = layer.as_dense().unwrap();
        let mut y = vec![0.0; batch * 100];
        d.forward(&model.params, &x, &mut y, batch);
        out.push(moments(&y));
        x = y;
    }
    out
}

#[test]
fn selu_self_normalises_and_drifts_without_its_conditions() {
    // Tolerance: every one of the 20 layers keeps |mean| < 0.15 and std within 0.8..1.2
    // on 2,000 standardised inputs (sampling noise of 200k values is far smaller).
    let batch = 2000;
    let standardised = gaussian(batch * 100, 1);
    for (l, (mean, std)) in
        layer_moments(Activation::Selu, Initializer::LecunNormal, &standardised, batch).iter().enumerate()
    {
        assert!(mean.abs() < 0.15 && (0.8..1.2).contains(std), "layer {}: mean {mean:.3}, std {std:.3}", l + 1);
    }
    // He initialisation doubles the variance the fixed point expects: activations blow up.
    let he = layer_moments(Activation::Selu, Initializer::HeNormal, &standardised, batch);
    assert!(he[19].1 > 2.0, "He init: last layer std {:.3}", he[19].1);
    // Unstandardised inputs (pixels scaled to [0, 1]): mean 0.5, std 0.29, far from the fixed
    // point at the first layers.
    let mut rng = seeded(2, 0);
    let scaled: Vec<f32> = (0..batch * 100).map(|_| uniform_f32(&mut rng)).collect();
    let raw = layer_moments(Activation::Selu, Initializer::LecunNormal, &scaled, batch);
    let off = |(m, s): (f64, f64)| m.abs() > 0.15 || !(0.8..1.2).contains(&s);
    assert!(off(raw[0]), "unstandardised inputs: first layer {:?} should be off the fixed point", raw[0]);
}

#[test]
fn alpha_dropout_keeps_mean_and_variance_and_dropout_keeps_the_mean() {
    let n = 200_000;
    let x = gaussian(n, 3);
    for rate in [0.1, 0.2] {
        let alpha = Dropout { features: 100, rate, kind: DropoutKind::Alpha };
        let (mut y, mut mask) = (vec![0.0; n], vec![0.0; n]);
        alpha.forward(&x, &mut y, &mut mask, 0, Noise { seed: 1, step: 0, first_row: 0 });
        let (mean, std) = moments(&y);
        assert!(mean.abs() < 0.01 && (std - 1.0).abs() < 0.01, "alpha dropout {rate}: mean {mean}, std {std}");
        let dropped = mask.iter().filter(|&&m| m == 0.0).count() as f64 / n as f64;
        assert!((dropped - rate as f64).abs() < 0.01, "dropped {dropped}");
        let standard = Dropout { features: 100, rate, kind: DropoutKind::Standard };
        let ones = vec![1.0; n];
        standard.forward(&ones, &mut y, &mut mask, 0, Noise { seed: 1, step: 0, first_row: 0 });
        let (mean, _) = moments(&y);
        assert!((mean - 1.0).abs() < 0.01, "dropout {rate}: mean {mean}");
    }
}

/// A block of columns gets exactly the outputs and masks that those columns get when whole
/// rows are masked (tensor-parallel threads each mask their own columns).
#[test]
fn dropout_on_a_block_of_columns_masks_as_the_whole_rows_do() {
    let (rows, features) = (7, 37);
    let x = gaussian(rows * features, 5);
    let noise = Noise { seed: 9, step: 4, first_row: 3 };
    for kind in [DropoutKind::Standard, DropoutKind::Alpha] {
        let d = Dropout { features, rate: 0.3, kind };
        let (mut y, mut mask) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        d.forward(&x, &mut y, &mut mask, 2, noise);
        for cols in [0..37, 0..1, 5..18, 36..37, 18..18] {
            let w = cols.len();
            let block = |m: &[f32]| m.chunks_exact(features).flat_map(|r| r[cols.clone()].to_vec()).collect::<Vec<_>>();
            let (mut y_cols, mut mask_cols) = (vec![0.0; rows * w], vec![0.0; rows * w]);
            d.forward_columns(&block(&x), &mut y_cols, &mut mask_cols, 2, noise, cols.clone());
            assert_eq!(y_cols, block(&y), "{kind:?}, columns {cols:?}: outputs");
            assert_eq!(mask_cols, block(&mask), "{kind:?}, columns {cols:?}: masks");
        }
    }
}

fn with_dropout(kind: fn(f32) -> LayerSpec) -> (Sequential, Sequential) {
    let hidden = LayerSpec::Dense { units: 16, activation: Activation::Selu, init: Initializer::LecunNormal };
    let out = LayerSpec::Dense { units: 10, activation: Activation::Softmax, init: Initializer::GlorotUniform };
    let with = Sequential::new(12, &[hidden, kind(0.3), hidden, out], 4).unwrap();
    let mut without = Sequential::new(12, &[hidden, hidden, out], 4).unwrap();
    without.params.copy_from_slice(&with.params);
    (with, without)
}

#[test]
fn dropout_layers_are_the_identity_at_inference() {
    let x = gaussian(7 * 12, 9);
    for kind in [(|rate| LayerSpec::Dropout { rate }) as fn(f32) -> LayerSpec, |rate| LayerSpec::AlphaDropout { rate }]
    {
        let (with, without) = with_dropout(kind);
        let a = with.predict(&x, 7, &mut Workspace::default()).to_vec();
        let b = without.predict(&x, 7, &mut Workspace::default()).to_vec();
        assert_eq!(a, b);
    }
}

#[test]
fn mc_dropout_is_reproducible_differs_and_converges() {
    let (model, _) = with_dropout(|rate| LayerSpec::AlphaDropout { rate });
    let batch = 5;
    let x = gaussian(batch * 12, 11);
    let n = batch * 10;
    let run = |samples: usize, seed: u64| {
        let (mut mean, mut std) = (vec![0.0; n], vec![0.0; n]);
        model.predict_monte_carlo(&x, batch, &mut Workspace::default(), samples, seed, &mut mean, &mut std);
        (mean, std)
    };
    assert_eq!(run(10, 3), run(10, 3), "same seed, same result");
    assert_ne!(run(10, 3).0, run(10, 4).0, "another seed, another sample");
    let deterministic = model.predict(&x, batch, &mut Workspace::default()).to_vec();
    let (mean10, std10) = run(10, 3);
    assert_ne!(mean10, deterministic);
    assert!(std10.iter().any(|&s| s > 1e-3), "samples differ");
    for row in mean10.chunks(10) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    }
    // Against a 4000-sample estimate, 1000 samples are much closer than 10.
    let (reference, _) = run(4000, 99);
    let error = |m: &[f32]| m.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let (e10, e1000) = (error(&run(10, 5).0), error(&run(1000, 5).0));
    assert!(e1000 < e10 / 3.0, "MC error with 10 samples {e10}, with 1000 samples {e1000}");
}

fn batch_norm_model() -> Sequential {
    let specs = [
        LayerSpec::batch_norm(Activation::Identity),
        LayerSpec::Dense { units: 6, activation: Activation::Identity, init: Initializer::HeNormal },
        LayerSpec::batch_norm(Activation::ELU),
        LayerSpec::Dense { units: 5, activation: Activation::Identity, init: Initializer::HeNormal },
        LayerSpec::batch_norm(Activation::Tanh),
        LayerSpec::Dense { units: 4, activation: Activation::Softmax, init: Initializer::GlorotUniform },
    ];
    let mut model = Sequential::new(7, &specs, 2).unwrap();
    // Gamma, beta and moving statistics away from their initial values.
    let mut rng = seeded(8, 0);
    for p in model.params.iter_mut() {
        *p += 0.3 * normal(&mut rng) as f32;
    }
    // State layout: per batch-norm layer of f features, f moving means then f variances.
    let mut at = 0;
    for f in [7, 6, 5] {
        for s in &mut model.state[at..at + f] {
            *s = normal(&mut rng) as f32;
        }
        for s in &mut model.state[at + f..at + 2 * f] {
            *s = 0.5 + uniform_f32(&mut rng);
        }
        at += 2 * f;
    }
    assert_eq!(at, model.num_state());
    model
}

#[test]
fn batch_norm_passes_a_finite_difference_check_in_training_mode() {
    let model = batch_norm_model();
    let batch = 9;
    let x: Vec<f32> = gaussian(batch * 7, 4).iter().map(|v| 2.0 * v + 1.0).collect();
    let labels: Vec<u8> = (0..batch).map(|i| (i % 4) as u8).collect();
    let mut ws = Workspace::default();
    let mut grads = vec![0.0; model.num_params()];
    model.loss_and_grad(&x, &labels, &mut ws, &mut grads);
    let mut scratch = vec![0.0; model.num_params()];
    let mut probe = model.clone();
    let mut loss = |m: &Sequential| m.loss_and_grad(&x, &labels, &mut ws, &mut scratch).0 / batch as f64;
    for i in 0..model.num_params() {
        let h = 3e-3;
        probe.params[i] = model.params[i] + h;
        let plus = loss(&probe);
        probe.params[i] = model.params[i] - h;
        let minus = loss(&probe);
        probe.params[i] = model.params[i];
        let fd = (plus - minus) / (2.0 * h as f64);
        assert!((grads[i] as f64 - fd).abs() <= 3e-4 + 3e-2 * fd.abs(), "parameter {i}: analytic {} vs {fd}", grads[i]);
    }
}

#[test]
fn folded_batch_norm_predicts_what_the_unfolded_model_does() {
    let model = batch_norm_model();
    let folded = model.fold_batch_norm().unwrap();
    assert!(!folded.has_batch_norm(), "every batch norm here sits next to a dense layer");
    assert_eq!(folded.layers().len(), 3);
    let x = gaussian(11 * 7, 6);
    let a = model.predict(&x, 11, &mut Workspace::default()).to_vec();
    let b = folded.predict(&x, 11, &mut Workspace::default()).to_vec();
    for (p, q) in a.iter().zip(&b) {
        assert!((p - q).abs() < 1e-5, "{p} vs {q}");
    }
}

#[test]
fn moving_averages_follow_keras() {
    let mut model = batch_norm_model();
    let before = model.state.clone();
    let batch = 6;
    let x = gaussian(batch * 7, 12);
    let mut ws = Workspace::default();
    let mut grads = vec![0.0; model.num_params()];
    model.loss_and_grad(&x, &[0, 1, 2, 3, 0, 1], &mut ws, &mut grads);
    model.update_moving_stats(&ws);
    // First batch norm normalises the raw inputs: its moving mean moves 1% of the way to
    // the batch mean, its variance 1% of the way to the biased batch variance.
    for j in 0..7 {
        let col: Vec<f32> = (0..batch).map(|r| x[r * 7 + j]).collect();
        let (mean, std) = moments(&col);
        let expect_mean = 0.99 * before[j] as f64 + 0.01 * mean;
        let expect_var = 0.99 * before[7 + j] as f64 + 0.01 * std * std;
        assert!((model.state[j] as f64 - expect_mean).abs() < 1e-6, "mean {j}");
        assert!((model.state[7 + j] as f64 - expect_var).abs() < 1e-6, "var {j}");
    }
}

#[test]
fn models_with_every_layer_kind_round_trip_through_the_file_format() {
    let mut model = batch_norm_model();
    let hidden = LayerSpec::Dense { units: 6, activation: Activation::Selu, init: Initializer::LecunNormal };
    let out = LayerSpec::Dense { units: 3, activation: Activation::Softmax, init: Initializer::GlorotUniform };
    let dropout = Sequential::new(
        5,
        &[hidden, LayerSpec::Dropout { rate: 0.2 }, hidden, LayerSpec::AlphaDropout { rate: 0.1 }, out],
        1,
    )
    .unwrap();
    for m in [&mut model, &mut dropout.clone()] {
        let saved = SavedModel { model: m.clone(), preprocess: Preprocess::UNIT_SCALE };
        let back = from_bytes(&to_bytes(&saved)).unwrap();
        assert_eq!(back, saved);
    }
    assert!(matches!(dropout.layers()[3], Layer::Dropout(_)));
}

#[test]
fn presets_build_the_notebooks_networks() {
    let count = |cfg: &TrainConfig, f: fn(&LayerSpec) -> bool| cfg.layer_specs().iter().filter(|s| f(s)).count();
    let c = TrainConfig::preset("8c").unwrap();
    assert_eq!(count(&c, |s| matches!(s, LayerSpec::BatchNorm { .. })), 21);
    assert!(matches!(c.layer_specs()[0], LayerSpec::BatchNorm { activation: Activation::Identity, .. }));
    assert!(matches!(
        c.layer_specs()[1],
        LayerSpec::Dense { activation: Activation::Identity, init: Initializer::HeNormal, .. }
    ));
    assert!(matches!(c.layer_specs()[2], LayerSpec::BatchNorm { activation: Activation::Elu { .. }, .. }));
    let model = Sequential::new(3072, &c.layer_specs(), 0).unwrap();
    // Keras's summary for 8c: 510,354 trainable and 10,144 non-trainable parameters.
    assert_eq!((model.num_params(), model.num_state()), (510_354, 10_144));
    let d = TrainConfig::preset("8d").unwrap();
    assert!(d.standardise && d.lr == 5e-4 && d.selu_warnings().is_empty());
    let e = TrainConfig::preset("8e").unwrap();
    let specs = e.layer_specs();
    assert!(matches!(specs[specs.len() - 2], LayerSpec::AlphaDropout { rate } if rate == 0.1));
    assert!(e.selu_warnings().is_empty());
    let broken = TrainConfig { init: Initializer::HeNormal, standardise: false, dropout: 0.2, ..d };
    assert_eq!(broken.selu_warnings().len(), 3, "{:?}", broken.selu_warnings());
}
