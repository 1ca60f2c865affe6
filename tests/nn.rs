//! Layers and models: Keras's initialiser definitions, preprocessing, and that inference,
//! evaluation and training agree on the same forward pass.

use simdnn::kernels::Activation;
use simdnn::nn::{Initializer, LayerSpec, Noise, Preprocess, Sequential, StepOptions, Workspace};
use simdnn::rng::{seeded, uniform_f32};

fn dense(model: &Sequential, l: usize) -> &simdnn::nn::Dense {
    model.layers()[l].as_dense().expect("a dense layer")
}

fn moments(xs: &[f32]) -> (f64, f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = xs.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
    let max = xs.iter().map(|x| x.abs() as f64).fold(0.0, f64::max);
    (mean, var, max)
}

#[test]
fn initializers_have_keras_variances_and_bounds() {
    let (fan_in, fan_out) = (400, 100);
    for (init, variance) in [
        (Initializer::HeNormal, 2.0f64 / 400.0),
        (Initializer::HeUniform, 2.0 / 400.0),
        (Initializer::LecunNormal, 1.0 / 400.0),
        (Initializer::LecunUniform, 1.0 / 400.0),
        (Initializer::GlorotNormal, 1.0 / 250.0),
        (Initializer::GlorotUniform, 1.0 / 250.0),
    ] {
        let mut w = vec![0f32; fan_in * fan_out];
        init.fill(&mut w, fan_in, fan_out, &mut seeded(1, 0));
        let (mean, var, max) = moments(&w);
        assert!(mean.abs() < 0.01 * variance.sqrt() * 10.0, "{init:?}: mean {mean}");
        assert!((var / variance - 1.0).abs() < 0.03, "{init:?}: variance {var}, expected {variance}");
        let bound = match init {
            // Truncated at two standard deviations of the underlying normal.
            Initializer::HeNormal | Initializer::LecunNormal | Initializer::GlorotNormal => {
                2.0 * variance.sqrt() / 0.879_625_661_034_239_8
            }
            _ => (3.0 * variance).sqrt(),
        };
        assert!(max <= bound * (1.0 + 1e-6), "{init:?}: |w| reaches {max}, bound {bound}");
        assert_eq!(Initializer::parse(init.name()), Some(init));
    }
    assert_eq!(Initializer::parse("orthogonal"), None);
}

#[test]
fn each_layer_draws_from_its_own_stream() {
    let spec = |units| LayerSpec::Dense { units, activation: Activation::ELU, init: Initializer::HeNormal };
    let out = LayerSpec::Dense { units: 3, activation: Activation::Softmax, init: Initializer::GlorotUniform };
    let a = Sequential::new(5, &[spec(4), spec(6), out], 9).unwrap();
    let b = Sequential::new(5, &[spec(4), spec(7), out], 9).unwrap();
    // Widening layer 2 leaves layer 1's weights unchanged.
    assert_eq!(dense(&a, 0).weights(&a.params), dense(&b, 0).weights(&b.params));
    assert!(dense(&a, 0).bias(&a.params).iter().all(|&b| b == 0.0));
    assert_ne!(Sequential::new(5, &[spec(4), out], 9).unwrap(), Sequential::new(5, &[spec(4), out], 10).unwrap());
}

#[test]
fn invalid_models_are_errors() {
    let hidden = LayerSpec::Dense { units: 4, activation: Activation::Relu, init: Initializer::HeNormal };
    let out = LayerSpec::Dense { units: 3, activation: Activation::Softmax, init: Initializer::GlorotUniform };
    assert!(Sequential::new(0, &[out], 0).is_err());
    assert!(Sequential::new(5, &[], 0).is_err());
    assert!(Sequential::new(5, &[hidden], 0).unwrap_err().to_string().contains("softmax"));
    assert!(Sequential::new(5, &[out, out], 0).unwrap_err().to_string().contains("output layer"));
    let empty = LayerSpec::Dense { units: 0, activation: Activation::Relu, init: Initializer::HeNormal };
    assert!(Sequential::new(5, &[empty, out], 0).is_err());
}

#[test]
fn predict_evaluate_and_training_agree() {
    let spec = LayerSpec::Dense { units: 37, activation: Activation::Selu, init: Initializer::LecunNormal };
    let out = LayerSpec::Dense { units: 10, activation: Activation::Softmax, init: Initializer::GlorotUniform };
    let model = Sequential::new(50, &[spec, spec, out], 4).unwrap();
    let batch = 13;
    let mut rng = seeded(2, 0);
    let x: Vec<f32> = (0..batch * 50).map(|_| uniform_f32(&mut rng) * 2.0 - 1.0).collect();
    let labels: Vec<u8> = (0..batch).map(|i| (i * 7 % 10) as u8).collect();
    let mut ws = Workspace::new(&model, 4); // grows on demand
    let probs = model.predict(&x, batch, &mut ws).to_vec();
    for row in probs.chunks(10) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    let expected_loss: f64 = labels.iter().enumerate().map(|(i, &l)| -(probs[i * 10 + l as usize] as f64).ln()).sum();
    let (loss, correct) = model.evaluate_batch(&x, &labels, &mut ws);
    assert!((loss - expected_loss).abs() < 1e-4 * expected_loss, "{loss} vs {expected_loss}");
    let argmax_correct = labels
        .iter()
        .enumerate()
        .filter(|&(i, &l)| {
            let row = &probs[i * 10..i * 10 + 10];
            row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(j, _)| j) == Some(l as usize)
        })
        .count();
    assert_eq!(correct, argmax_correct);
    let mut grads = vec![0.0; model.num_params()];
    let (train_loss, train_correct) = model.loss_and_grad(&x, &labels, &mut ws, &mut grads);
    assert_eq!((train_loss, train_correct), (loss, correct));

    // Splitting the batch in two, with a deferred first-layer weight gradient, gives the same
    // gradient everywhere else and the first layer's dL/dz rows.
    let mut a = vec![0.0; model.num_params()];
    let mut b = vec![0.0; model.num_params()];
    let (mut wa, mut wb) = (Workspace::default(), Workspace::default());
    let scale = 1.0 / batch as f32;
    let cut = 6;
    let noise = Noise { seed: 0, step: 0, first_row: 0 };
    let options = StepOptions { defer_first_layer_weights: true, noise };
    model.loss_and_grad_scaled(&x[..cut * 50], &labels[..cut], &mut wa, &mut a, scale, options);
    model.loss_and_grad_scaled(&x[cut * 50..], &labels[cut..], &mut wb, &mut b, scale, options);
    let first = dense(&model, 0).weight_range();
    for i in first.end..model.num_params() {
        assert!((a[i] + b[i] - grads[i]).abs() <= 1e-5, "gradient {i}: {} + {} vs {}", a[i], b[i], grads[i]);
    }
    let mut delta = wa.first_layer_delta(&model, cut).to_vec();
    delta.extend_from_slice(wb.first_layer_delta(&model, batch - cut));
    let mut combined = vec![0.0; model.num_params()];
    dense(&model, 0).weight_grad(&x, &delta, &mut combined, batch);
    for i in first {
        assert!((combined[i] - grads[i]).abs() <= 1e-5, "first-layer weight gradient {i}");
    }
}

#[test]
fn preprocessing_scales_or_standardises() {
    let images: Vec<Vec<u8>> = (0..50u32).map(|i| (0..8).map(|j| ((i * 37 + j * 11) % 256) as u8).collect()).collect();
    let Some(Preprocess::Standardise { mean, inv_std }) =
        Preprocess::standardise_from_images(images.iter().map(|v| &v[..]), 8)
    else {
        panic!("expected standardisation");
    };
    let pre = Preprocess::Standardise { mean, inv_std };
    let mut cols = vec![Vec::new(); 8];
    let mut out = [0f32; 8];
    for img in &images {
        pre.apply(img, &mut out);
        for (c, &v) in cols.iter_mut().zip(&out) {
            c.push(v);
        }
    }
    for c in &cols {
        let (mean, var, _) = moments(c);
        assert!(mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4, "mean {mean}, var {var}");
    }
    Preprocess::UNIT_SCALE.apply(&[0, 51, 255, 1, 2, 3, 4, 5], &mut out);
    for (got, want) in out[..3].iter().zip([0.0, 0.2, 1.0]) {
        assert!((got - want).abs() <= 1e-7, "{got} vs {want}");
    }
    // A constant feature does not divide by zero.
    let constant = [vec![7u8; 3], vec![7u8; 3]];
    let pre = Preprocess::standardise_from_images(constant.iter().map(|v| &v[..]), 3).unwrap();
    let mut out3 = [0f32; 3];
    pre.apply(&constant[0], &mut out3);
    assert!(out3.iter().all(|v| *v == 0.0));
    assert!(Preprocess::standardise_from_images(std::iter::empty(), 3).is_none());
}
