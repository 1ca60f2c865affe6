//! `Trainer` across threads: data-parallel steps (one slice of the batch per thread) must
//! compute the same training as one thread, up to the order in which the slices' gradients
//! are added.

mod common;

use simdnn::data::cifar::IMAGE_BYTES;
use simdnn::data::{Cifar10, standardise_from};
use simdnn::nn::Sequential;
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
    let (train, val) = data.train_val(val_size).unwrap();
    let preprocess = standardise_from(&train).unwrap();
    let model = Sequential::new(IMAGE_BYTES, &cfg.layer_specs(), 5).unwrap();
    let optimizer = OptimizerConfig::keras_default(optimizer).unwrap().build(model.num_params());
    Trainer::new(model, optimizer, preprocess, train, val, batch_size, lr, 5).unwrap()
}

/// The parameters after `epochs` epochs of a small SELU network trained with plain SGD on
/// `threads` threads (threads take slices of at least 8 rows, so batch 16 makes 2 slices).
fn train(dir: &std::path::Path, threads: usize, batch_size: usize, val_size: usize, epochs: usize) -> Vec<f32> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let mut cfg = TrainConfig::preset("8e").unwrap();
        (cfg.depth, cfg.width, cfg.alpha_dropout) = (3, 24, 0.0);
        let data = Cifar10::open(dir).unwrap();
        let mut trainer = trainer(&data, &cfg, "sgd", val_size, batch_size, 0.05);
        for epoch in 1..=epochs {
            trainer.shuffle(epoch);
            for step in 0..trainer.steps_per_epoch() {
                trainer.step(epoch, step, 0.05, None).unwrap();
            }
        }
        trainer.model.params.clone()
    })
}

#[test]
fn sliced_steps_match_one_thread_including_a_batch_smaller_than_the_slices() {
    let dir = tempfile::tempdir().unwrap();
    common::write_cifar_dir(dir.path(), 20, 11);
    // 100 records, 35 validate: 65 train, so the epoch ends with a batch of one row, which
    // only the first slice can take. One epoch: the slices' other order of summation alone
    // moves the parameters by about 3e-5 (relative) here; an earlier step's gradient left in
    // the idle slice and added in would move them by 1e-3 or more.
    let (batch_size, val_size) = (16, 35);
    let one = train(dir.path(), 1, batch_size, val_size, 1);
    let two = train(dir.path(), 2, batch_size, val_size, 1);
    let worst = one.iter().zip(&two).map(|(a, b)| (a - b).abs() / a.abs().max(1e-2)).fold(0f32, f32::max);
    assert!(worst < 2e-4, "1 and 2 threads differ by up to {worst} (relative)");
}

#[test]
fn a_trainer_accounts_for_its_time_by_phase() {
    use simdnn::train::{EpochOutcome, EpochProgress};
    let dir = tempfile::tempdir().unwrap();
    common::write_cifar_dir(dir.path(), 20, 11);
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let data = Cifar10::open(dir.path()).unwrap();
            let mut trainer = trainer(&data, &TrainConfig::preset("8a").unwrap(), "nadam", 36, 16, 1e-3);
            let Ok(EpochOutcome::Finished(record)) = trainer.run_epoch(1, EpochProgress::default(), None, &mut |_| {})
            else {
                panic!("the epoch did not finish");
            };
            let p = trainer.phases;
            assert!(p.gradient > 0.0 && p.optimizer > 0.0 && p.validation > 0.0, "{threads} threads: {p:?}");
            // The first layer's weight gradient is a phase of its own only when the batch is
            // split into slices (2 threads, batch 16).
            assert_eq!(p.first_layer_weight_grad > 0.0, threads == 2, "{threads} threads: {p:?}");
            let total = p.gradient + p.first_layer_weight_grad + p.optimizer + p.validation;
            assert!(total <= record.seconds, "{threads} threads: phases {total} s in an epoch of {} s", record.seconds);
        });
    }
}
