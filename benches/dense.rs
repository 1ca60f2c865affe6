//! The layers and the training step of the 8a model (CIFAR-10: 3072 -> 20 x Dense(100, ELU,
//! He normal) -> Dense(10, softmax), Nadam, batch 32), on rayon's default pool. Record the
//! numbers in BENCHMARKS.md.
//!
//! Groups and the question each answers:
//! - `dense/input_3072x100_elu` (`forward`, `backward`): the first layer, whose 3072 x 100
//!   weights dominate the model's parameters. What does one batch of 32 cost through the
//!   fused GEMM + bias + ELU forward, and through the backward pass (ELU derivative and bias
//!   gradient, then the weight-gradient GEMM; no input gradient, as in training)?
//! - `dense/hidden_100x100_elu` (`forward`, `backward`): one of the 20 hidden layers, where
//!   the products are small (640 kflop) and the overheads around them show. The backward
//!   pass here also computes the input gradient.
//!   Both layer groups report `Throughput::Elements(32)`: samples per second.
//! - `activation/forward_3200`: each element-wise activation over 3200 values (one hidden
//!   layer's output for a batch of 32), `simd/<act>` against the scalar twin
//!   `reference/<act>` (`simdnn::kernels::reference::activation`). How much do the
//!   vectorised `exp`/`tanh` gain over libm? Reports values per second.
//! - `train_step/8a_batch32` (`loss_and_grad_nadam`): one full training step,
//!   `Sequential::loss_and_grad` on 32 samples then a Nadam step over all parameters. How
//!   many samples per second can training reach, before data loading?
//!
//! - `optimizer/<name>_<gradient>` on 2 threads: one optimiser step over the 8a model's
//!   500,210 parameters, the step's third phase; `nadam` (8a) and `sgd` (8f, no momentum),
//!   the gradient read from one buffer (`one_buffer`) or, as two shards leave it, summed from
//!   two beyond the first layer's weights (`two_shards`). With the state (8 MB for Nadam)
//!   beyond the L2 caches, how close does the step come to the memory's speed? The
//!   `_bf16_copy` and `_f32_copy` variants also rewrite the copy of the parameters that a
//!   two-thread trainer's products read (`optim::ParamsCopy`): what does keeping it cost?
//! - `trainer_step/<preset>_batch<B>_<T>_threads`: `Trainer::step` as `simdnn train` runs it
//!   (batch conversion from CIFAR records, the first layer split by input features and the
//!   rest of the batch split by rows across `T` threads, the first layer's weight gradient,
//!   the gradient sum, the optimiser and its copy of the parameters), for the 8a and 8f presets on
//!   20,000 generated records (60 MB, beyond the L3 cache, as the real 150 MB are). What
//!   does one optimisation step cost, and so an epoch without validation? The `_bf16`
//!   variants multiply every dense layer in bf16 (`--precision bf16`): what does that save?
//!   The `_tensor` variants take tensor-parallel steps (`--parallel tensor`): each thread a
//!   block of every layer's units over the whole batch; 8c (batch norm) takes them by default.
//!
//! Times default to a 1 s warm-up and 3 s of measurement per benchmark (about 1.5 min for
//! the file); the command line's `--warm-up-time`, `--measurement-time` and `--sample-size`
//! override them.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use simdnn::data::cifar::{CLASSES, IMAGE_BYTES, Preprocess, RECORD_BYTES};
use simdnn::data::{Split, standardise_from};
use simdnn::kernels::{Activation, Precision, reference};
use simdnn::nn::{Sequential, Workspace};
use simdnn::optim::{Gradient, OptimizerConfig, Owners, Params, ParamsCopy};
use simdnn::parallel::KeepWarm;
use simdnn::rng::{below, normal, seeded, uniform_f32};
use simdnn::train::{Parallelism, TrainConfig, Trainer};

const BATCH: usize = 32;

/// The 8a model with its He-normal weights (seed 42, as the preset).
fn model_8a() -> (Sequential, TrainConfig) {
    let config = TrainConfig::preset("8a").expect("the 8a preset exists");
    let model = Sequential::new(IMAGE_BYTES, &config.layer_specs(), config.seed).expect("the 8a model builds");
    (model, config)
}

/// A batch of inputs as `x / 255` gives them: uniform in [0, 1).
fn inputs(len: usize, stream: u64) -> Vec<f32> {
    let mut rng = seeded(3, stream);
    (0..len).map(|_| uniform_f32(&mut rng)).collect()
}

fn gaussian(len: usize, scale: f32, stream: u64) -> Vec<f32> {
    let mut rng = seeded(5, stream);
    (0..len).map(|_| scale * normal(&mut rng) as f32).collect()
}

fn bench_layers(c: &mut Criterion) {
    let (model, _) = model_8a();
    let params = &model.params;
    let mut grads = vec![0f32; model.num_params()];
    let x = inputs(BATCH * IMAGE_BYTES, 0);
    for (index, name) in [(0, "input_3072x100_elu"), (1, "hidden_100x100_elu")] {
        let layer = model.layers()[index].as_dense().expect("8a layers are dense");
        let (n_in, n_out) = (layer.n_in, layer.n_out);
        assert_eq!(layer.activation, Activation::ELU, "8a layers use ELU");
        // The hidden layer's input is the first layer's output, as in the model.
        let input = if index == 0 {
            x.clone()
        } else {
            let mut h = vec![0f32; BATCH * n_in];
            model.layers()[0].as_dense().expect("8a layers are dense").forward(params, &x, &mut h, BATCH);
            h
        };
        let mut y = vec![0f32; BATCH * n_out];
        layer.forward(params, &input, &mut y, BATCH);
        let dy = gaussian(BATCH * n_out, 0.01, index as u64);
        let mut dx = vec![0f32; BATCH * n_in];

        let mut group = c.benchmark_group(format!("dense/{name}"));
        group.throughput(Throughput::Elements(BATCH as u64));
        let mut out = vec![0f32; BATCH * n_out];
        group.bench_function("forward", |b| {
            b.iter(|| {
                layer.forward(params, black_box(&input), &mut out, BATCH);
                black_box(&mut out);
            })
        });
        // `backward` turns dy into dz in place: every call starts from a fresh copy (made
        // outside the timed region).
        let mut scratch = vec![0f32; BATCH * layer.n_in];
        group.bench_function("backward", |b| {
            b.iter_batched_ref(
                || dy.clone(),
                |dy| {
                    let dx = (index > 0).then_some(&mut dx[..]);
                    layer.backward(
                        params,
                        black_box(&input),
                        &y,
                        dy,
                        &mut grads,
                        dx,
                        &mut scratch,
                        BATCH,
                        Precision::F32,
                    );
                },
                BatchSize::SmallInput,
            );
            black_box(&mut grads);
        });
        group.finish();
    }
}

fn bench_activations(c: &mut Criterion) {
    const LEN: usize = BATCH * 100;
    let mut rng = seeded(11, 0);
    // Both signs, so every branch of the scalar twins is taken.
    let xs: Vec<f32> = (0..LEN).map(|_| 10.0 * uniform_f32(&mut rng) - 5.0).collect();
    let acts = [
        ("relu", Activation::Relu),
        ("leaky_relu", Activation::LEAKY_RELU),
        ("elu", Activation::ELU),
        ("selu", Activation::Selu),
        ("tanh", Activation::Tanh),
        ("logistic", Activation::Logistic),
    ];
    let mut group = c.benchmark_group("activation/forward_3200");
    group.throughput(Throughput::Elements(LEN as u64));
    for (name, act) in acts {
        group.bench_function(format!("simd/{name}"), |b| {
            b.iter_batched_ref(|| xs.clone(), |v| act.forward(black_box(v)), BatchSize::SmallInput)
        });
        group.bench_function(format!("reference/{name}"), |b| {
            b.iter_batched_ref(
                || xs.clone(),
                |v| {
                    for x in black_box(v).iter_mut() {
                        *x = reference::activation(act, *x);
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn bench_train_step(c: &mut Criterion) {
    let (mut model, config) = model_8a();
    let n = model.num_params();
    let mut optimizer = OptimizerConfig::keras_default("nadam").expect("nadam exists").build(n);
    let mut ws = Workspace::new(&model, BATCH);
    let mut grads = vec![0f32; n];
    let x = inputs(BATCH * IMAGE_BYTES, 1);
    let mut rng = seeded(13, 0);
    let labels: Vec<u8> = (0..BATCH).map(|_| below(&mut rng, CLASSES as u64) as u8).collect();

    let mut group = c.benchmark_group("train_step/8a_batch32");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("loss_and_grad_nadam", |b| {
        b.iter(|| {
            let (loss, _) = model.loss_and_grad(black_box(&x), &labels, &mut ws, &mut grads);
            optimizer.step(&mut model.params, &grads, config.lr);
            black_box(loss)
        })
    });
    group.finish();
}

fn bench_optimizer(c: &mut Criterion) {
    let (model, _) = model_8a();
    let n = model.num_params();
    // The trainer sums the shards' gradients from the end of the first layer's weights on.
    let first_layer_weights = model.layers()[0].as_dense().expect("8a starts with a dense layer").weight_range().end;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("a thread pool");
    let shards = [gaussian(n, 1e-3, 20), gaussian(n, 1e-3, 21)];
    let others = [&shards[1][..]];
    let mut group = c.benchmark_group("optimizer");
    group.throughput(Throughput::Elements(n as u64));
    // Also rewriting a copy of the parameters, as in training with two threads: `_bf16_copy`
    // all of them rounded (`--precision bf16`), `_f32_copy` those after the first layer's weights.
    for (name, two_shards, copy) in [
        ("nadam", false, ""),
        ("nadam", true, ""),
        ("nadam", true, "_bf16_copy"),
        ("nadam", true, "_f32_copy"),
        ("sgd", false, ""),
        ("sgd", true, ""),
    ] {
        let mut params = model.params.clone();
        let (mut rounded, mut copied) = (vec![0u16; n], vec![0f32; n - first_layer_weights]);
        let mut optimizer = OptimizerConfig::keras_default(name).expect("a Keras optimiser").build(n);
        let gradient = if two_shards {
            Gradient { first: &shards[0], others: &others, summed_from: first_layer_weights, owners: Owners::Even }
        } else {
            Gradient::from(&shards[0][..])
        };
        let label = if two_shards { "two_shards" } else { "one_buffer" };
        group.bench_function(format!("{name}_{label}{copy}"), |b| {
            pool.install(|| {
                let _warm = KeepWarm::start();
                b.iter(|| {
                    let copy = match copy {
                        "_bf16_copy" => Some(ParamsCopy::Bf16(&mut rounded)),
                        "_f32_copy" => Some(ParamsCopy::F32 { from: first_layer_weights, values: &mut copied }),
                        _ => None,
                    };
                    optimizer.apply(Params { values: black_box(&mut params), copy }, gradient, 1e-4)
                })
            })
        });
    }
    group.finish();
}

fn bench_trainer_step(c: &mut Criterion) {
    let mut rng = seeded(17, 0);
    let records: Vec<Vec<u8>> = (0..20_000)
        .map(|_| {
            let mut record: Vec<u8> = (0..RECORD_BYTES).map(|_| below(&mut rng, 256) as u8).collect();
            record[0] = below(&mut rng, CLASSES as u64) as u8;
            record
        })
        .collect();
    let split = || Split::from_records(records.iter().map(|r| &r[..]).collect()).expect("generated records are valid");
    let mut group = c.benchmark_group("trainer_step");
    for (preset, threads, precision, parallelism) in [
        ("8a", 2, Precision::F32, Parallelism::Data),
        ("8a", 2, Precision::Bf16, Parallelism::Data),
        ("8a", 2, Precision::F32, Parallelism::Tensor),
        ("8a", 2, Precision::Bf16, Parallelism::Tensor),
        ("8c", 2, Precision::F32, Parallelism::Tensor),
        ("8f", 2, Precision::F32, Parallelism::Data),
        ("8f", 2, Precision::Bf16, Parallelism::Data),
        ("8f", 1, Precision::F32, Parallelism::Data),
    ] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool");
        let config = TrainConfig::preset(preset).expect("the preset exists");
        let (train, val) = (split(), split());
        let preprocess = if config.standardise {
            standardise_from(&train).expect("records to standardise")
        } else {
            Preprocess::UNIT_SCALE
        };
        let model = Sequential::new(IMAGE_BYTES, &config.layer_specs(), config.seed).expect("the model builds");
        let optimizer = config.optimizer.build(model.num_params());
        // Built inside the pool: the trainer splits each batch over the pool's threads.
        let mut trainer = pool
            .install(|| {
                Trainer::new(model, optimizer, preprocess, train, val, config.batch_size, config.lr, config.seed)
            })
            .expect("the trainer builds");
        trainer.precision = precision;
        trainer.parallelism = parallelism;
        trainer.shuffle(1);
        let steps = trainer.steps_per_epoch();
        let mut step = 0;
        group.throughput(Throughput::Elements(config.batch_size as u64));
        let bf16 = if precision == Precision::Bf16 { "_bf16" } else { "" };
        let tensor = if parallelism == Parallelism::Tensor { "_tensor" } else { "" };
        let name = format!("{preset}_batch{}_{threads}_threads{bf16}{tensor}", config.batch_size);
        group.bench_function(name, |b| {
            pool.install(|| {
                // As in an epoch: the pool's other threads poll for the step's parts, and the
                // parameters are in the order the epoch's steps take.
                let _warm = KeepWarm::start();
                trainer
                    .with_epoch_steps(|epoch| {
                        b.iter(|| {
                            let result = epoch.step(1, step % steps, config.lr, None).expect("a finite loss");
                            step += 1;
                            black_box(result)
                        })
                    })
                    .expect("the epoch's layout")
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench_layers, bench_activations, bench_train_step, bench_optimizer, bench_trainer_step
}
criterion_main!(benches);
