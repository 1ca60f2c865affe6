//! The allocation-free inference path (`simdnn::infer`): the same predictions as the training
//! model, MC dropout, no allocation while loading or predicting, and hostile bytes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use simdnn::format::{InputQuant, SavedModel, WeightType, from_bytes_typed, to_bytes, to_bytes_as, to_bytes_int8};
use simdnn::infer::{InferError, Model};
use simdnn::kernels::int8::{U8Quant, min_max};
use simdnn::kernels::quant::{bf16_from_f32, f32_from_bf16};
use simdnn::kernels::{Activation, reference};
use simdnn::nn::{Initializer, Layer, LayerSpec, Preprocess, Sequential, Workspace};
use simdnn::rng::{normal, seeded};

/// Counts the allocations of each thread (tests run in parallel threads).
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const INPUT: usize = 40;

fn model(with_batch_norm: bool, dropout: Option<LayerSpec>) -> Sequential {
    let dense = |units, activation| LayerSpec::Dense { units, activation, init: Initializer::LecunNormal };
    let mut specs = vec![dense(37, Activation::Selu)];
    if with_batch_norm {
        specs.push(LayerSpec::batch_norm(Activation::ELU));
    }
    specs.push(dense(20, Activation::Tanh));
    specs.extend(dropout);
    specs.push(LayerSpec::Dense { units: 10, activation: Activation::Softmax, init: Initializer::GlorotUniform });
    let mut m = Sequential::new(INPUT, &specs, 8).unwrap();
    let mut rng = seeded(4, 4);
    m.params.iter_mut().for_each(|p| *p += 0.05 * normal(&mut rng) as f32);
    m.state.iter_mut().enumerate().for_each(|(i, s)| *s = if i % 74 < 37 { 0.1 } else { 1.3 });
    m
}

fn images(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| (0..INPUT).map(|j| ((i * 37 + j * 101) % 256) as u8).collect()).collect()
}

#[test]
fn predictions_match_the_training_model_and_allocate_nothing() {
    let standardise = Preprocess::standardise_from_images(images(50).iter().map(|v| &v[..]), INPUT).unwrap();
    for (m, pre) in [(model(false, None), Preprocess::UNIT_SCALE), (model(true, None), standardise)] {
        let bytes = to_bytes(&SavedModel { model: m.clone(), preprocess: pre.clone() });
        let mut scratch = vec![0f32; 4096];
        let mut ws = Workspace::default();
        let mut x = vec![0f32; INPUT];
        for image in images(7) {
            pre.apply(&image, &mut x);
            let expected = m.predict(&x, 1, &mut ws).to_vec();
            let before = allocations();
            let loaded = Model::from_bytes(&bytes).unwrap();
            let got = loaded.predict(&image, &mut scratch).unwrap();
            let after = allocations();
            assert_eq!(after, before, "loading and predicting allocated");
            for (g, e) in got.iter().zip(&expected) {
                assert!((g - e).abs() < 2e-5, "{g} vs {e}");
            }
        }
    }
}

#[test]
fn mc_dropout_is_seeded_averages_and_allocates_nothing() {
    let m = model(true, Some(LayerSpec::AlphaDropout { rate: 0.2 }));
    let bytes = to_bytes(&SavedModel { model: m, preprocess: Preprocess::UNIT_SCALE });
    let loaded = Model::from_bytes(&bytes).unwrap();
    assert!(loaded.has_dropout());
    let plain_bytes = to_bytes(&SavedModel { model: model(true, None), preprocess: Preprocess::UNIT_SCALE });
    assert!(!Model::from_bytes(&plain_bytes).unwrap().has_dropout());
    let mut scratch = vec![0f32; loaded.scratch_len()];
    let image = &images(1)[0];
    let plain = loaded.predict(image, &mut scratch).unwrap().to_vec();
    let before = allocations();
    let (mean, std) = loaded.predict_mc(image, 20, 7, &mut scratch).unwrap();
    assert_eq!(allocations() - before, 0, "MC dropout allocated");
    let (mean, std) = (mean.to_vec(), std.to_vec());
    assert!((mean.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    assert!(std.iter().any(|&s| s > 1e-4), "samples should differ");
    assert_ne!(mean, plain);
    let (again, _) = loaded.predict_mc(image, 20, 7, &mut scratch).unwrap();
    assert_eq!(again, &mean[..]);
}

#[test]
fn hostile_bytes_are_errors_never_panics() {
    let m = model(true, Some(LayerSpec::Dropout { rate: 0.3 }));
    let saved = SavedModel { model: m, preprocess: Preprocess::UNIT_SCALE };
    let bytes = to_bytes(&saved);
    for file in [&bytes, &to_bytes_as(&saved, WeightType::Int8)] {
        for len in 0..file.len() {
            assert!(Model::from_bytes(&file[..len]).is_err(), "truncated to {len}");
        }
        let mut rng = seeded(9, 9);
        for _ in 0..3000 {
            let mut bad = file.clone();
            let at = simdnn::rng::below(&mut rng, bad.len() as u64) as usize;
            bad[at] ^= 1 << simdnn::rng::below(&mut rng, 8);
            assert!(Model::from_bytes(&bad).is_err(), "flip at {at} went unnoticed");
        }
    }
    let loaded = Model::from_bytes(&bytes).unwrap();
    let mut small = vec![0f32; loaded.scratch_len() - 1];
    assert_eq!(
        loaded.predict(&images(1)[0], &mut small).unwrap_err(),
        InferError::ScratchTooSmall { needed: loaded.scratch_len() }
    );
    let mut scratch = vec![0f32; loaded.scratch_len()];
    assert_eq!(loaded.predict(&[1, 2, 3], &mut scratch).unwrap_err(), InferError::InputSize { expected: INPUT });
}

#[test]
fn quantised_weights_predict_what_their_dequantised_model_does() {
    let m = model(false, None);
    let saved = SavedModel { model: m.clone(), preprocess: Preprocess::UNIT_SCALE };
    let f32_size = to_bytes(&saved).len() as f64;
    let mut scratch = vec![0f32; 4096];
    let mut x = vec![0f32; INPUT];
    // bf16 layers also round their input to bf16.
    let to_bf16 = |_: usize, x: &[f32]| x.iter().map(|&v| f32_from_bf16(bf16_from_f32(v))).collect::<Vec<f32>>();
    for (weights, size_ratio) in [(WeightType::Bf16, 0.6), (WeightType::Int8Weights, 0.4)] {
        let bytes = to_bytes_as(&saved, weights);
        assert!((bytes.len() as f64) < size_ratio * f32_size, "{weights:?}: {} bytes vs {f32_size}", bytes.len());
        let (dequantised, stored) = from_bytes_typed(&bytes).unwrap();
        assert_eq!(stored, weights);
        // Each weight within its type's rounding of the original.
        for (q, w) in dequantised.model.params.iter().zip(&m.params) {
            assert!((q - w).abs() <= w.abs() / 128.0 + 0.02, "{weights:?}: {q} for {w}");
        }
        let loaded = Model::from_bytes(&bytes).unwrap();
        for image in images(5) {
            Preprocess::UNIT_SCALE.apply(&image, &mut x);
            let expected = match weights {
                WeightType::Bf16 => {
                    fake_quantised_predict(&dequantised.model, &Preprocess::UNIT_SCALE, &image, to_bf16)
                }
                _ => dequantised.model.predict(&x, 1, &mut Workspace::default()).to_vec(),
            };
            let got = loaded.predict(&image, &mut scratch).unwrap();
            for (g, e) in got.iter().zip(&expected) {
                assert!((g - e).abs() < 1e-4, "{weights:?}: {g} vs {e}");
            }
        }
    }
}

/// What a model with narrowed inputs stands for, in plain f32: each dense layer's input
/// narrowed and widened back by `narrow(layer, input)`, times the dequantised weights.
fn fake_quantised_predict(
    model: &Sequential,
    pre: &Preprocess,
    image: &[u8],
    narrow: impl Fn(usize, &[f32]) -> Vec<f32>,
) -> Vec<f32> {
    let mut x = vec![0f32; image.len()];
    pre.apply(image, &mut x);
    for (l, layer) in model.layers().iter().enumerate() {
        let Layer::Dense(d) = layer else { panic!("dense layers only") };
        let mut y = vec![0f32; d.n_out];
        d.forward(&model.params, &narrow(l, &x), &mut y, 1);
        x = y;
    }
    let max = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let sum: f32 = x.iter().map(|v| (v - max).exp()).sum();
    x.iter().map(|v| (v - max).exp() / sum).collect()
}

#[test]
fn int8_models_compute_what_their_quantised_inputs_and_weights_stand_for() {
    let m = model(false, None);
    let standardise = Preprocess::standardise_from_images(images(50).iter().map(|v| &v[..]), INPUT).unwrap();
    let f32_size = to_bytes(&SavedModel { model: m.clone(), preprocess: Preprocess::UNIT_SCALE }).len() as f64;
    let static_inputs = [
        // The first layer's scale is the preprocessing's: the image bytes go in as they are.
        InputQuant::Static(U8Quant { scale: 1.0 / 255.0, zero_point: 0 }),
        InputQuant::Static(U8Quant::covering(-1.5, 3.0)),
        InputQuant::Static(U8Quant::covering(-1.0, 1.0)),
    ];
    let dynamic = [InputQuant::Dynamic; 3];
    for (pre, inputs) in [
        (Preprocess::UNIT_SCALE, &static_inputs[..]),
        (Preprocess::UNIT_SCALE, &dynamic[..]),
        (standardise, &dynamic[..]),
    ] {
        let saved = SavedModel { model: m.clone(), preprocess: pre.clone() };
        let bytes = to_bytes_int8(&saved, inputs);
        if pre == Preprocess::UNIT_SCALE {
            assert!((bytes.len() as f64) < 0.4 * f32_size, "{} bytes vs {f32_size}", bytes.len());
        }
        let (dequantised, stored) = from_bytes_typed(&bytes).unwrap();
        assert_eq!(stored, WeightType::Int8);
        let loaded = Model::from_bytes(&bytes).unwrap();
        let mut scratch = vec![0f32; loaded.scratch_len()];
        let to_u8 = |l: usize, x: &[f32]| {
            let quant = match inputs[l] {
                InputQuant::Static(q) => q,
                InputQuant::Dynamic => {
                    let (lo, hi) = min_max(x);
                    U8Quant::covering(lo, hi)
                }
            };
            let mut q = vec![0u8; x.len()];
            reference::quantize_u8(x, quant, &mut q);
            q.iter().map(|&v| (v as f32 - quant.zero_point as f32) * quant.scale).collect()
        };
        for image in images(9) {
            let expected = fake_quantised_predict(&dequantised.model, &pre, &image, to_u8);
            let before = allocations();
            let got = loaded.predict(&image, &mut scratch).unwrap();
            assert_eq!(allocations(), before, "int8 prediction allocated");
            for (g, e) in got.iter().zip(&expected) {
                assert!((g - e).abs() < 1e-4, "{inputs:?}, {pre:?}: {g} vs {e}");
            }
        }
    }
    assert_eq!(to_bytes_as(&SavedModel { model: m, preprocess: Preprocess::UNIT_SCALE }, WeightType::Int8)[8], 4);
}

#[test]
fn batch_prediction_is_image_by_image_prediction() {
    let m = model(false, None);
    let bytes = to_bytes(&SavedModel { model: m, preprocess: Preprocess::UNIT_SCALE });
    let loaded = Model::from_bytes(&bytes).unwrap();
    let mut scratch = vec![0f32; loaded.scratch_len()];
    let batch: Vec<u8> = images(6).concat();
    let mut probs = vec![0f32; 6 * loaded.classes()];
    let before = allocations();
    loaded.predict_batch(&batch, &mut probs, &mut scratch).unwrap();
    assert_eq!(allocations(), before, "batch prediction allocated");
    for (image, row) in images(6).iter().zip(probs.chunks(loaded.classes())) {
        assert_eq!(loaded.predict(image, &mut scratch).unwrap(), row);
    }
    assert_eq!(
        loaded.predict_batch(&batch[1..], &mut probs, &mut scratch).unwrap_err(),
        InferError::InputSize { expected: INPUT }
    );
    assert_eq!(
        loaded.predict_batch(&batch, &mut probs[1..], &mut scratch).unwrap_err(),
        InferError::OutputSize { expected: 60 }
    );
}
