//! The allocation-free inference path (`simdnn::infer`) on the 8a model: one image through
//! `Model::predict` on one thread, with f32, bf16 and int8 weights side by side. How much do
//! narrower weights gain on a single image, where the 1.2 MB first layer is streamed from
//! memory for every prediction? Reports images per second. Record the numbers in
//! BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use simdnn::format::{SavedModel, WeightType, to_bytes_as};
use simdnn::infer::Model;
use simdnn::nn::{Preprocess, Sequential};
use simdnn::train::TrainConfig;

fn single_image(c: &mut Criterion) {
    let cfg = TrainConfig::preset("8a").expect("8a is a preset");
    let model = Sequential::new(3072, &cfg.layer_specs(), cfg.seed).expect("the 8a model builds");
    let saved = SavedModel { model, preprocess: Preprocess::UNIT_SCALE };
    let image: Vec<u8> = (0..3072).map(|i| (i * 7 % 256) as u8).collect();
    let mut group = c.benchmark_group("infer/8a_single_image");
    group.throughput(Throughput::Elements(1));
    for (name, weights) in [("f32", WeightType::F32), ("bf16", WeightType::Bf16), ("int8", WeightType::Int8)] {
        let bytes = to_bytes_as(&saved, weights);
        let loaded = Model::from_bytes(&bytes).expect("a freshly written model loads");
        let mut scratch = vec![0f32; loaded.scratch_len()];
        group.bench_function(name, |b| {
            b.iter(|| {
                let probs = loaded.predict(black_box(&image), &mut scratch).expect("predicts");
                black_box(probs[0]);
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = single_image
}
criterion_main!(benches);
