//! `Trainer` across threads: data-parallel steps (one slice of the batch per thread) must
//! compute the same training as one thread, up to the order in which the slices' gradients
//! are added.

mod common;

use simdnn::data::cifar::IMAGE_BYTES;
use simdnn::data::{Cifar10, standardise_from};
use simdnn::kernels::Activation;
use simdnn::nn::{Initializer, LayerSpec, Sequential};
use simdnn::optim::OptimizerConfig;
use simdnn::train::{TrainConfig, Trainer};

/// A trainer for `cfg`'s network with `optimizer` (Keras's defaults) at rate `lr`, seed 5.
fn trainer<'d>(
    data: &'d Cifar10,
    cfg: &TrainConfig,
    optimizer: &str,
    val_size: usize,
    batch_size: usize,
    lr: f32,
) -> Trainer<'d> {
    let optimizer = OptimizerConfig::keras_default(optimizer).unwrap();
    trainer_with(data, cfg, optimizer, val_size, batch_size, lr)
}

fn trainer_with<'d>(
    data: &'d Cifar10,
    cfg: &TrainConfig,
    optimizer: OptimizerConfig,
    val_size: usize,
    batch_size: usize,
    lr: f32,
) -> Trainer<'d> {
    trainer_of(data, &cfg.layer_specs(), optimizer, val_size, batch_size, lr)
}

/// [`trainer_with`] for the network `specs`.
fn trainer_of<'d>(
    data: &'d Cifar10,
    specs: &[LayerSpec],
    optimizer: OptimizerConfig,
    val_size: usize,
    batch_size: usize,
    lr: f32,
) -> Trainer<'d> {
    let (train, val) = data.train_val(val_size).unwrap();
    let preprocess = standardise_from(&train).unwrap();
    let model = Sequential::new(IMAGE_BYTES, specs, 5).unwrap();
    let optimizer = optimizer.build(model.num_params());
    Trainer::new(model, optimizer, preprocess, train, val, batch_size, lr, 5).unwrap()
}

#[test]
fn sliced_steps_match_one_thread_including_a_batch_smaller_than_the_slices() {
    let dir = tempfile::tempdir().unwrap();
    common::write_cifar_dir(dir.path(), 20, 11);
    // A small SELU network trained with plain SGD (no state carried between steps) on one
    // thread and on more (threads take slices of at least 8 rows: batch 16 makes 2 slices,
    // batch 24 three). The validation size leaves a last batch of one row, which only the
    // first slice can take. Every step starts the trainers from the same parameters, so their
    // results differ only by rounding (the first layer summed in parts of its inputs, the
    // slices' gradients added in another order): about 1e-6 (relative) here. An earlier
    // step's gradient left in an idle slice and added in would move them by 1e-3 or more.
    // (Rounding differences grow as training goes on: after five steps without the reset,
    // 1e-3 too, as much as changing the first layer's weights by one unit in the last place
    // does on one thread.)
    let data = Cifar10::open(dir.path()).unwrap();
    let mut cfg = TrainConfig::preset("8e").unwrap();
    (cfg.depth, cfg.width, cfg.alpha_dropout) = (3, 24, 0.0);
    // (threads, batch, validation records): 100 records, so 65 and 49 train.
    for (threads, batch, val_size) in [(2, 16, 35), (3, 24, 51)] {
        let pools = [1, threads].map(|t| rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap());
        let mut trainers =
            pools.each_ref().map(|pool| pool.install(|| trainer(&data, &cfg, "sgd", val_size, batch, 0.05)));
        trainers.iter_mut().for_each(|t| t.shuffle(1));
        let steps = trainers[0].steps_per_epoch();
        assert_eq!((100 - val_size) % batch, 1, "the last batch has one row");
        for step in 0..steps {
            let start = trainers[0].model().params.clone();
            trainers[1].model_mut().params.copy_from_slice(&start);
            for (trainer, pool) in trainers.iter_mut().zip(&pools) {
                pool.install(|| trainer.step(1, step, 0.05, None).unwrap());
            }
            let (one, many) = (&trainers[0].model().params, &trainers[1].model().params);
            assert_ne!(one, &start, "step {step} changed nothing");
            let worst = one.iter().zip(many).map(|(a, b)| (a - b).abs() / a.abs().max(1e-2)).fold(0f32, f32::max);
            assert!(worst < 1e-5, "step {step}: 1 and {threads} threads differ by up to {worst} (relative)");
        }
    }
}

/// With every dense product in bf16 each step's update stays near the f32 update (operands
/// with 8-bit significands, sums in f32), differs from it (the bf16 kernels did run), and
/// repeats bit for bit, on one thread and on two: a trainer made for the step gets the same
/// bits as one that has trained and had its parameters replaced (`model_mut`), so its rounded
/// copy of the weights follows such a change. The network is smooth (tanh): with SELU, a
/// pre-activation within rounding of 0 takes the other branch's slope (1.05 against 1.76) and
/// moves its unit's gradients by far more than rounding (14 % of the largest update in one
/// step here). Largest difference seen with tanh: 1/280 of the largest update; bound 1/64.
#[test]
fn bf16_updates_stay_near_f32_and_repeat_exactly() {
    use simdnn::kernels::Precision;
    let dir = tempfile::tempdir().unwrap();
    common::write_cifar_dir(dir.path(), 20, 11);
    let data = Cifar10::open(dir.path()).unwrap();
    let mut cfg = TrainConfig::preset("8e").unwrap();
    (cfg.depth, cfg.width, cfg.alpha_dropout, cfg.activation) = (3, 24, 0.0, Activation::Tanh);
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let new_trainer = |precision| {
            let mut t = pool.install(|| trainer(&data, &cfg, "sgd", 36, 16, 0.05));
            t.precision = precision;
            t.shuffle(1);
            t
        };
        let mut trainers = [Precision::F32, Precision::Bf16].map(new_trainer);
        for step in 0..trainers[0].steps_per_epoch() {
            let start = trainers[0].model().params.clone();
            let [f32_trainer, bf16_trainer] = &mut trainers;
            let updates = [f32_trainer, bf16_trainer, &mut new_trainer(Precision::Bf16)].map(|t| {
                t.model_mut().params.copy_from_slice(&start);
                pool.install(|| t.step(1, step, 0.05, None).unwrap());
                t.model().params.iter().zip(&start).map(|(p, s)| p - s).collect::<Vec<f32>>()
            });
            let [f32_update, bf16_update, again] = &updates;
            assert_eq!(bf16_update, again, "{threads} threads, step {step}: bf16 steps differ between runs");
            assert_ne!(f32_update, bf16_update, "{threads} threads, step {step}: bf16 changed nothing");
            let scale = f32_update.iter().fold(0f32, |m, u| m.max(u.abs()));
            let worst = f32_update.iter().zip(bf16_update).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst <= scale / 64.0, "{threads} threads, step {step}: updates differ by {worst} (scale {scale})");
        }
    }
}

#[test]
fn a_trainer_accounts_for_its_time_by_phase() {
    use simdnn::train::{EpochOutcome, EpochProgress};
    let dir = tempfile::tempdir().unwrap();
    common::write_cifar_dir(dir.path(), 20, 11);
    for (threads, preset) in [(1, "8a"), (2, "8a"), (2, "8c")] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let data = Cifar10::open(dir.path()).unwrap();
            let mut trainer = trainer(&data, &TrainConfig::preset(preset).unwrap(), "nadam", 36, 16, 1e-3);
            let Ok(EpochOutcome::Finished(record)) = trainer.run_epoch(1, EpochProgress::default(), None, &mut |_| {})
            else {
                panic!("the epoch did not finish");
            };
            let p = trainer.phases;
            let label = format!("{preset} on {threads} threads: {p:?}");
            assert!(p.gradient > 0.0 && p.optimizer > 0.0 && p.validation > 0.0, "{label}");
            // The first layer's weight gradient is a phase of its own when the first layer is
            // dense (8a; 8c starts with batch normalisation).
            assert_eq!(p.first_layer_weight_grad > 0.0, preset == "8a", "{label}");
            let total = p.gradient + p.first_layer_weight_grad + p.optimizer + p.validation;
            assert!(total <= record.seconds, "{label}: phases {total} s in an epoch of {} s", record.seconds);
        });
    }
}

/// Relative difference of the largest disagreement between `a` and `b`.
fn worst_relative(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(a, b)| (a - b).abs() / a.abs().max(1e-2)).fold(0f32, f32::max)
}

/// Runs one epoch of `trainer` on `pool`.
fn epoch(pool: &rayon::ThreadPool, trainer: &mut Trainer<'_>, epoch: usize) -> simdnn::train::EpochRecord {
    use simdnn::train::{EpochOutcome, EpochProgress};
    match pool.install(|| trainer.run_epoch(epoch, EpochProgress::default(), None, &mut |_| {})).unwrap() {
        EpochOutcome::Finished(record) => record,
        EpochOutcome::Interrupted(_) => panic!("epoch {epoch} was interrupted"),
    }
}

/// Tensor-parallel epochs (each thread a block of every layer's units; the parameters and the
/// optimiser's state in thread-major order while the epoch runs) compute what one thread
/// computes, up to rounding (the partial products of each layer are summed by block of its
/// inputs): epochs of one step with Nadam, whose two values per parameter carry from epoch to
/// epoch, so a parameter or state value left in the wrong place at an epoch's end moves the
/// next epoch's results by far more than rounding. (Epsilon 1 keeps the update close to
/// linear in the gradient: with Keras's 1e-7 a gradient at rounding level, of either sign,
/// takes a step of nearly the full rate.) They repeat bit for bit, and differ from the
/// data-parallel steps' bits (so the tensor-parallel steps did run).
#[test]
fn tensor_parallel_epochs_match_one_thread_and_repeat_exactly() {
    let dir = tempfile::tempdir().unwrap();
    common::write_cifar_dir(dir.path(), 20, 11);
    let data = Cifar10::open(dir.path()).unwrap();
    // With and without alpha dropout before the output layer (each thread masks its columns
    // as the whole rows are masked).
    for alpha_dropout in [0.0, 0.1] {
        let mut cfg = TrainConfig::preset("8e").unwrap();
        (cfg.depth, cfg.width, cfg.alpha_dropout) = (3, 24, alpha_dropout);
        tensor_parallel_matches_one_thread(&data, &cfg.layer_specs(), &format!("alpha dropout {alpha_dropout}"));
    }
    // And with batch norm on the inputs and after every hidden dense layer (8c): each thread
    // normalises its columns over the whole batch; the moving averages gather them.
    let mut cfg = TrainConfig::preset("8c").unwrap();
    (cfg.depth, cfg.width) = (3, 24);
    tensor_parallel_matches_one_thread(&data, &cfg.layer_specs(), "8c");
    // The inputs normalised before a first dense layer that no batch norm follows: the
    // normalisation's beta then has a gradient (after batch norm, dL/dz sums to zero over the
    // batch, and beta's gradient with it).
    let specs = [
        LayerSpec::batch_norm(Activation::Identity),
        LayerSpec::Dense { units: 24, activation: Activation::ELU, init: Initializer::HeNormal },
        LayerSpec::Dense { units: 10, activation: Activation::Softmax, init: Initializer::GlorotUniform },
    ];
    tensor_parallel_matches_one_thread(&data, &specs, "input batch norm only");
}

fn tensor_parallel_matches_one_thread(data: &Cifar10, specs: &[LayerSpec], name: &str) {
    use simdnn::train::Parallelism;
    let nadam = OptimizerConfig::Nadam { beta1: 0.9, beta2: 0.999, epsilon: 1.0 };
    // 100 records, 84 validate: one batch of 16 per epoch.
    let (val_size, batch) = (84, 16);
    // Every parameter moved off its initial value (batch norm's gamma 1 and beta 0 would
    // hide terms they multiply), the same way in every trainer.
    let build = |pool: &rayon::ThreadPool| {
        let mut t = pool.install(|| trainer_of(data, specs, nadam, val_size, batch, 1e-3));
        t.model_mut().params.iter_mut().enumerate().for_each(|(i, p)| *p += 0.1 * (i as f32).sin());
        t
    };
    let one_pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let mut one = build(&one_pool);
    assert_eq!(one.steps_per_epoch(), 1);
    let pools = [2, 3].map(|t| rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap());
    let make = |pool: &rayon::ThreadPool, parallelism| {
        let mut t = build(pool);
        t.parallelism = parallelism;
        t
    };
    let mut tensor: Vec<_> = pools.iter().map(|p| make(p, Parallelism::Tensor)).collect();
    let mut again: Vec<_> = pools.iter().map(|p| make(p, Parallelism::Tensor)).collect();
    let mut data_parallel: Vec<_> = pools.iter().map(|p| make(p, Parallelism::Data)).collect();
    for e in 1..=4 {
        let reference = epoch(&one_pool, &mut one, e);
        let one_state = one.optimizer.state();
        for (i, pool) in pools.iter().enumerate() {
            let label = format!("{name}, {} threads, epoch {e}", i + 2);
            let record = epoch(pool, &mut tensor[i], e);
            epoch(pool, &mut again[i], e);
            epoch(pool, &mut data_parallel[i], e);
            let params = &tensor[i].model().params;
            let worst = worst_relative(&one.model().params, params);
            assert!(worst < 1e-4, "{label}: parameters differ from one thread's by up to {worst} (relative)");
            let worst = worst_relative(&one.model().state, &tensor[i].model().state);
            assert!(worst < 1e-4, "{label}: moving averages differ from one thread's by up to {worst}");
            let state = tensor[i].optimizer.state();
            assert_eq!((state.t, state.slots.len()), (one_state.t, one_state.slots.len()), "{label}");
            let worst = worst_relative(&one_state.slots, &state.slots);
            assert!(worst < 1e-4, "{label}: optimiser state differs from one thread's by up to {worst}");
            assert!((record.loss - reference.loss).abs() < 1e-5 * reference.loss, "{label}: loss {record:?}");
            assert_eq!(params, &again[i].model().params, "{label}: tensor-parallel runs differ");
            assert_ne!(params, &data_parallel[i].model().params, "{label}: the same bits as data-parallel steps");
        }
    }
}

/// bf16 products in tensor-parallel steps read the rounded copy of the weights that the
/// optimiser keeps in their thread-major order: each epoch's update stays near the f32
/// tensor-parallel update (bound as in `bf16_updates_stay_near_f32_and_repeat_exactly`) and
/// repeats bit for bit. A copy left in the model's order would hand each thread other rows.
#[test]
fn bf16_tensor_parallel_updates_stay_near_f32() {
    use simdnn::kernels::Precision;
    use simdnn::train::Parallelism;
    let dir = tempfile::tempdir().unwrap();
    common::write_cifar_dir(dir.path(), 20, 11);
    let data = Cifar10::open(dir.path()).unwrap();
    let mut cfg = TrainConfig::preset("8e").unwrap();
    (cfg.depth, cfg.width, cfg.alpha_dropout, cfg.activation) = (3, 24, 0.0, Activation::Tanh);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let make = |precision| {
        let mut t = pool.install(|| trainer(&data, &cfg, "sgd", 84, 16, 0.05));
        (t.precision, t.parallelism) = (precision, Parallelism::Tensor);
        t
    };
    let mut trainers = [Precision::F32, Precision::Bf16, Precision::Bf16].map(make);
    for e in 1..=3 {
        let start = trainers[0].model().params.clone();
        let updates = trainers.each_mut().map(|t| {
            t.model_mut().params.copy_from_slice(&start);
            epoch(&pool, t, e);
            t.model().params.iter().zip(&start).map(|(p, s)| p - s).collect::<Vec<f32>>()
        });
        let [f32_update, bf16_update, again] = &updates;
        assert_eq!(bf16_update, again, "epoch {e}: bf16 epochs differ between runs");
        assert_ne!(f32_update, bf16_update, "epoch {e}: bf16 changed nothing");
        let scale = f32_update.iter().fold(0f32, |m, u| m.max(u.abs()));
        let worst = f32_update.iter().zip(bf16_update).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= scale / 64.0, "epoch {e}: updates differ by {worst} (scale {scale})");
    }
}

/// `Trainer::with_epoch_steps` takes the steps `run_epoch` takes: an epoch's steps through it
/// leave the parameters and the optimiser's state, in the model's order, bit for bit where a
/// tensor-parallel epoch leaves them (and elsewhere than the data-parallel steps do).
#[test]
fn steps_through_with_epoch_steps_are_the_epochs_steps() {
    use simdnn::train::Parallelism;
    let dir = tempfile::tempdir().unwrap();
    common::write_cifar_dir(dir.path(), 20, 11);
    let data = Cifar10::open(dir.path()).unwrap();
    let mut cfg = TrainConfig::preset("8e").unwrap();
    (cfg.depth, cfg.width) = (3, 24);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let lr = 1e-3;
    let make = |parallelism| {
        let mut t = pool.install(|| trainer(&data, &cfg, "nadam", 84, 8, lr));
        t.parallelism = parallelism;
        t
    };
    let mut whole_epoch = make(Parallelism::Tensor);
    epoch(&pool, &mut whole_epoch, 1);
    let [mut stepped, mut data_parallel] = [Parallelism::Tensor, Parallelism::Data].map(make);
    for t in [&mut stepped, &mut data_parallel] {
        let steps = t.steps_per_epoch();
        assert_eq!(steps, 2);
        t.shuffle(1);
        pool.install(|| t.with_epoch_steps(|e| (0..steps).try_for_each(|s| e.step(1, s, lr, None).map(drop))))
            .unwrap()
            .unwrap();
    }
    // (`assert!`: the vectors are too long to print.)
    assert!(stepped.model().params == whole_epoch.model().params, "parameters differ from the epoch's");
    assert!(stepped.optimizer.state().slots == whole_epoch.optimizer.state().slots, "optimiser state differs");
    assert!(data_parallel.model().params != whole_epoch.model().params, "data-parallel steps gave the same bits");
}
