//! Layers and models: Keras's initialiser definitions, preprocessing, and that inference,
//! evaluation and training agree on the same forward pass.

use simdnn::kernels::bf16::round_to_bf16;
use simdnn::kernels::{Activation, Precision};
use simdnn::nn::{Initializer, LayerSpec, Noise, ParamsRef, Preprocess, Sequential, StepOptions, Workspace};
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

    // A data-parallel trainer's split: the first layer by input features (two parts, the
    // second one column wider), the rest by rows (two shards). It gives the same gradient
    // everywhere and the first layer's dL/dz rows.
    let first = dense(&model, 0);
    let features = [0..24, 24..50];
    let x_part = |f: &std::ops::Range<usize>| -> Vec<f32> {
        x.chunks_exact(50).flat_map(|row| row[f.clone()].to_vec()).collect()
    };
    let x_parts: Vec<Vec<f32>> = features.iter().map(x_part).collect();
    let partials: Vec<Vec<f32>> = features
        .iter()
        .zip(&x_parts)
        .map(|(f, xp)| {
            let mut partial = vec![f32::NAN; batch * 37];
            first.forward_part(&model.params, xp, f.clone(), &mut partial, batch, Precision::F32);
            partial
        })
        .collect();
    let scale = 1.0 / batch as f32;
    let cut = 6;
    let mut shard_grads = Vec::new();
    let mut delta = Vec::new();
    for (rows, first_row) in [(0..cut, 0), (cut..batch, cut)] {
        let mut ws = Workspace::default();
        let out = ws.first_layer_output_mut(&model, rows.len());
        first.forward_from_parts(&model.params, partials.iter().map(|p| &p[..]), rows.clone(), out);
        let options = StepOptions {
            first_layer_by_caller: true,
            noise: Noise { seed: 0, step: 0, first_row },
            precision: Precision::F32,
            params: None,
        };
        let mut g = vec![f32::NAN; model.num_params()];
        let (l, c) = model.loss_and_grad_scaled(&[], &labels[rows.clone()], &mut ws, &mut g, scale, options);
        shard_grads.push((g, l, c));
        delta.extend_from_slice(ws.first_layer_delta(&model, rows.len()));
    }
    let [(a, loss_a, correct_a), (b, loss_b, correct_b)] = &shard_grads[..] else { unreachable!("two shards") };
    assert!((loss_a + loss_b - train_loss).abs() <= 1e-4 * train_loss, "loss {loss_a} + {loss_b} vs {train_loss}");
    assert_eq!(correct_a + correct_b, train_correct);
    let weights = first.weight_range();
    for (i, ((ga, gb), g)) in a.iter().zip(b).zip(&grads).enumerate().skip(weights.end) {
        assert!((ga + gb - g).abs() <= 1e-5, "gradient {i}: {ga} + {gb} vs {g}");
    }
    // Each part's rows of the first layer's weight gradient, from its own columns of x.
    let mut combined = vec![f32::NAN; weights.len()];
    let mut rest = &mut combined[..];
    for (f, xp) in features.iter().zip(&x_parts) {
        let (rows, tail) = rest.split_at_mut(f.len() * 37);
        first.weight_grad_part(xp, f.clone(), &delta, rows, batch, Precision::F32);
        rest = tail;
    }
    for (i, g) in weights.zip(&combined) {
        assert!((g - grads[i]).abs() <= 1e-5, "first-layer weight gradient {i}: {g} vs {}", grads[i]);
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

/// The input gradient `dz W^T`, taken as the transposed product `W dz^T` for batches of a
/// multiple of 16 rows (and every batch in bf16) and directly for others, against the
/// textbook sum (in bf16 within its rounding: 2^-7 of the sum of magnitudes), for layers
/// wider, narrower and as wide as they are deep; the scratch's old contents (NaN) must not
/// leak.
#[test]
fn input_gradient_matches_the_textbook_sum_in_both_orientations() {
    let mut rng = seeded(3, 1);
    for (n_in, n_out) in [(100, 100), (37, 70), (70, 10)] {
        let model = Sequential::new(
            n_in,
            &[LayerSpec::Dense { units: n_out, activation: Activation::Softmax, init: Initializer::GlorotUniform }],
            4,
        )
        .unwrap();
        let layer = dense(&model, 0);
        let w = layer.weights(&model.params);
        for (batch, precision) in
            [1, 15, 16, 17, 32, 48].into_iter().flat_map(|b| [(b, Precision::F32), (b, Precision::Bf16)])
        {
            let dz: Vec<f32> = (0..batch * n_out).map(|_| uniform_f32(&mut rng) - 0.5).collect();
            let (mut dx, mut scratch) = (vec![0f32; batch * n_in], vec![f32::NAN; batch * n_in]);
            layer.input_grad(&model.params, &dz, &mut dx, batch, &mut scratch, precision);
            let rounding = if precision == Precision::Bf16 { 1.0 / 128.0 } else { 0.0 };
            for r in 0..batch {
                for i in 0..n_in {
                    let sum: f64 = (0..n_out).map(|j| dz[r * n_out + j] as f64 * w[i * n_out + j] as f64).sum();
                    let abs: f64 = (0..n_out).map(|j| (dz[r * n_out + j] * w[i * n_out + j]).abs() as f64).sum();
                    let got = dx[r * n_in + i] as f64;
                    assert!(
                        (got - sum).abs() <= (rounding + 4.0 * n_out as f64 * f32::EPSILON as f64) * abs + 1e-30,
                        "{n_in}x{n_out}, batch {batch}, {precision:?}: dx[{r}][{i}] = {got}, expected {sum}"
                    );
                }
            }
        }
    }
}

/// A bf16 step reads the weights from the rounded copy when given one (a trainer's, kept by
/// its optimiser) and gets the same bits as when it rounds them itself: odd widths (a row's
/// last pair padded), batches that fill vectors and not, the first layer split by features.
/// A copy that does not match the parameters changes the result, so it is what is read.
#[test]
fn bf16_steps_read_the_rounded_copy_of_the_weights() {
    let spec = LayerSpec::Dense { units: 37, activation: Activation::Tanh, init: Initializer::HeNormal };
    let out = LayerSpec::Dense { units: 10, activation: Activation::Softmax, init: Initializer::GlorotUniform };
    let model = Sequential::new(51, &[spec, spec, out], 5).unwrap();
    let mut rounded = vec![0u16; model.num_params()];
    round_to_bf16(&model.params, &mut rounded);
    let stale = vec![0x3F80u16; model.num_params()]; // every weight 1.0
    let mut rng = seeded(4, 0);
    for batch in [13, 16] {
        let x: Vec<f32> = (0..batch * 51).map(|_| uniform_f32(&mut rng) - 0.5).collect();
        let labels: Vec<u8> = (0..batch).map(|i| (i * 3 % 10) as u8).collect();
        let step = |copy: Option<&[u16]>| {
            let params = ParamsRef { values: &model.params, rounded: copy };
            let options = StepOptions { precision: Precision::Bf16, params: Some(params), ..StepOptions::default() };
            let mut grads = vec![f32::NAN; model.num_params()];
            let (loss, _) =
                model.loss_and_grad_scaled(&x, &labels, &mut Workspace::default(), &mut grads, 0.1, options);
            (loss.to_bits(), grads.iter().map(|g| g.to_bits()).collect::<Vec<_>>())
        };
        assert_eq!(step(Some(&rounded)), step(None), "batch {batch}");
        assert_ne!(step(Some(&stale)), step(None), "batch {batch}: the copy was not read");

        let first = dense(&model, 0);
        let x_part: Vec<f32> = x.chunks_exact(51).flat_map(|row| row[20..51].to_vec()).collect();
        let part = |copy: Option<&[u16]>| {
            let mut partial = vec![f32::NAN; batch * 37];
            let params = ParamsRef { values: &model.params, rounded: copy };
            first.forward_part(params, &x_part, 20..51, &mut partial, batch, Precision::Bf16);
            partial.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        assert_eq!(part(Some(&rounded)), part(None), "batch {batch}, first layer part");
        assert_ne!(part(Some(&stale)), part(None), "batch {batch}, first layer part: the copy was not read");
    }
}
