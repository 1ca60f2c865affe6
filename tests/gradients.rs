//! Finite-difference checks of the analytic gradients: every activation through a 3-layer
//! network, compared in f64 against central differences of the f32 loss.
#![allow(clippy::needless_range_loop)] // finite differences perturb parameters by index

use simdnn::kernels::Activation;
use simdnn::nn::{Initializer, LayerSpec, Sequential, Workspace};
use simdnn::rng::{normal, seeded};

fn mean_loss(model: &Sequential, x: &[f32], labels: &[u8], ws: &mut Workspace) -> f64 {
    model.evaluate_batch(x, labels, ws).0 / labels.len() as f64
}

/// d(mean loss)/d(parameter i) by central differences with step `h`.
fn central_difference(model: &mut Sequential, i: usize, h: f32, x: &[f32], labels: &[u8], ws: &mut Workspace) -> f64 {
    let orig = model.params[i];
    model.params[i] = orig + h;
    let plus = mean_loss(model, x, labels, ws);
    model.params[i] = orig - h;
    let minus = mean_loss(model, x, labels, ws);
    model.params[i] = orig;
    (plus - minus) / (2.0 * h as f64)
}

fn check(act: Activation, init: Initializer) {
    let (n_in, batch) = (7, 5);
    let specs = [
        LayerSpec::Dense { units: 6, activation: act, init },
        LayerSpec::Dense { units: 5, activation: act, init },
        LayerSpec::Dense { units: 4, activation: Activation::Softmax, init: Initializer::GlorotUniform },
    ];
    let mut model = Sequential::new(n_in, &specs, 3).unwrap();
    // Non-zero biases so that kinks are not sat on by construction.
    let mut rng = seeded(11, 0);
    for p in model.params.iter_mut() {
        *p += 0.1 * normal(&mut rng) as f32;
    }
    let x: Vec<f32> = (0..batch * n_in).map(|_| normal(&mut rng) as f32).collect();
    let labels: Vec<u8> = (0..batch).map(|i| (i % 4) as u8).collect();
    let mut ws = Workspace::new(&model, batch);
    let mut grads = vec![0.0; model.num_params()];
    model.loss_and_grad(&x, &labels, &mut ws, &mut grads);
    let mut worst = 0f64;
    for i in 0..model.num_params() {
        // h balances truncation error (ELU and SELU are only C1 at 0) against f32 rounding
        // of the loss (about 1e-7 / h).
        let fd = central_difference(&mut model, i, 3e-3, &x, &labels, &mut ws);
        let err = (grads[i] as f64 - fd).abs();
        worst = worst.max(err);
        assert!(err <= 2e-4 + 2e-2 * fd.abs(), "{act}: parameter {i}: analytic {} vs finite difference {fd}", grads[i]);
    }
    eprintln!("{act}: worst absolute error {worst:.2e}");
}

#[test]
fn every_activation_passes_a_finite_difference_check() {
    for act in Activation::ELEMENT_WISE {
        check(act, Initializer::HeNormal);
    }
}

#[test]
fn the_8a_shape_gradient_matches_on_sampled_parameters() {
    // The real 3072 -> 20 x 100 -> 10 shape: sample parameters from every layer.
    let spec = LayerSpec::Dense { units: 100, activation: Activation::ELU, init: Initializer::HeNormal };
    let mut specs = vec![spec; 20];
    specs.push(LayerSpec::Dense { units: 10, activation: Activation::Softmax, init: Initializer::GlorotUniform });
    let mut model = Sequential::new(3072, &specs, 1).unwrap();
    let batch = 33;
    let mut rng = seeded(5, 0);
    let x: Vec<f32> = (0..batch * 3072).map(|_| simdnn::rng::uniform_f32(&mut rng)).collect();
    let labels: Vec<u8> = (0..batch).map(|i| (i % 10) as u8).collect();
    let mut ws = Workspace::new(&model, batch);
    let mut grads = vec![0.0; model.num_params()];
    model.loss_and_grad(&x, &labels, &mut ws, &mut grads);
    let mut checked = 0;
    for layer in 0..model.layers().len() {
        let start: usize = model.layers()[..layer].iter().map(|l| l.num_params()).sum();
        let len = model.layers()[layer].num_params();
        // The largest-gradient parameters of the layer (finite differences of tiny gradients
        // measure only rounding), plus its last bias.
        let mut idx: Vec<usize> = (start..start + len).collect();
        idx.sort_by(|&a, &b| grads[b].abs().total_cmp(&grads[a].abs()));
        idx.truncate(3);
        idx.push(start + len - 1);
        for i in idx {
            let fd = central_difference(&mut model, i, 1e-2, &x, &labels, &mut ws);
            let err = (grads[i] as f64 - fd).abs();
            assert!(
                err <= 2e-3 + 0.05 * fd.abs(),
                "layer {layer} parameter {i}: analytic {} vs finite difference {fd}",
                grads[i]
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 21 * 4);
}
