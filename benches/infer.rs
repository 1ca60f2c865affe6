//! The allocation-free inference path (`simdnn::infer`) on the 8a model: one image through
//! `Model::predict` on one thread, with f32, bf16 (bf16 inputs too: `vdpbf16ps` where the CPU
//! has it), int8-weights (int8 weights, f32 products) and int8 (u8 inputs, integer dot
//! products: VNNI where the CPU has it) side by side, and the first layer's product alone
//! with each bf16 and int8 kernel; and 5,000 images (the validation split's size) on every
//! core, as `simdnn eval` predicts them: f32 through the batched GEMM path, int8 image by
//! image through `infer`. How much do narrower weights gain on a
//! single image, where the 1.2 MB first layer is streamed from memory for every prediction?
//! Reports images per second. Record the numbers in BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use simdnn::format::{InputQuant, SavedModel, WeightType, to_bytes_as, to_bytes_int8};
use simdnn::infer::Model;
use simdnn::kernels::bf16::{Bf16Kernel, gemv_bf16_with};
use simdnn::kernels::int8::{Int8Kernel, U8Quant, gemv_u8_i8_with, pack_groups_of_4};
use simdnn::kernels::quant::bf16_from_f32;
use simdnn::nn::{Preprocess, Sequential, Workspace};
use simdnn::train::TrainConfig;

fn single_image(c: &mut Criterion) {
    let cfg = TrainConfig::preset("8a").expect("8a is a preset");
    let model = Sequential::new(3072, &cfg.layer_specs(), cfg.seed).expect("the 8a model builds");
    let saved = SavedModel { model, preprocess: Preprocess::UNIT_SCALE };
    let images: Vec<u8> = (0..64 * 3072).map(|i| (i * 7 % 251) as u8).collect();
    let image = &images[..3072];
    let mut group = c.benchmark_group("infer/8a_single_image");
    group.throughput(Throughput::Elements(1));
    let files = [
        ("f32", to_bytes_as(&saved, WeightType::F32)),
        ("bf16", to_bytes_as(&saved, WeightType::Bf16)),
        ("int8_weights", to_bytes_as(&saved, WeightType::Int8Weights)),
        ("int8", to_bytes_int8(&saved, &calibrated(&saved, &images))),
    ];
    for (name, bytes) in &files {
        let loaded = Model::from_bytes(bytes).expect("a freshly written model loads");
        let mut scratch = vec![0f32; loaded.scratch_len()];
        group.bench_function(*name, |b| {
            b.iter(|| {
                let probs = loaded.predict(black_box(image), &mut scratch).expect("predicts");
                black_box(probs[0]);
            })
        });
    }
    group.finish();
}

/// Static input ranges from the model's own activations on `images` (as `simdnn export
/// --calibrate` does), the first layer taking the bytes as they are.
fn calibrated(saved: &SavedModel, images: &[u8]) -> Vec<InputQuant> {
    let rows = images.len() / 3072;
    let mut x = vec![0f32; images.len()];
    saved.preprocess.apply(images, &mut x);
    let mut ws = Workspace::new(&saved.model, rows);
    let mut inputs: Vec<InputQuant> = saved
        .model
        .input_ranges(&x, rows, &mut ws)
        .into_iter()
        .map(|(lo, hi)| InputQuant::Static(U8Quant::covering(lo, hi)))
        .collect();
    inputs[0] = InputQuant::Static(U8Quant { scale: 1.0 / 255.0, zero_point: 0 });
    inputs
}

/// The first layer's product alone (3,072 x 100), per kernel: u8 x int8, and bf16 x bf16.
fn first_layer(c: &mut Criterion) {
    let (n_in, n_out) = (3072, 100);
    let x: Vec<u8> = (0..n_in).map(|i| (i * 13 % 256) as u8).collect();
    let q: Vec<i8> = (0..n_in * n_out).map(|i| (i * 31 % 255) as i8).collect();
    let packed = pack_groups_of_4(&q, n_in, n_out);
    let mut acc = vec![0i32; n_out];
    let mut group = c.benchmark_group("infer/first_layer_3072x100");
    group.throughput(Throughput::Elements((n_in * n_out) as u64));
    for kernel in [Int8Kernel::Portable, Int8Kernel::Vnni].into_iter().filter(|k| k.available()) {
        group.bench_function(format!("int8/{kernel:?}"), |b| {
            b.iter(|| {
                gemv_u8_i8_with(kernel, black_box(&x), &packed, n_out, &mut acc);
                black_box(acc[0]);
            })
        });
    }
    let x_bf16: Vec<u16> = x.iter().map(|&v| bf16_from_f32(v as f32 / 255.0)).collect();
    let w_bf16: Vec<u8> = q.iter().flat_map(|&v| bf16_from_f32(v as f32 / 127.0).to_le_bytes()).collect();
    let mut y = vec![0f32; n_out];
    for kernel in [Bf16Kernel::Portable, Bf16Kernel::Avx512Bf16].into_iter().filter(|k| k.available()) {
        group.bench_function(format!("bf16/{kernel:?}"), |b| {
            b.iter(|| {
                gemv_bf16_with(kernel, black_box(&x_bf16), &w_bf16, n_out, &mut y);
                black_box(y[0]);
            })
        });
    }
    group.finish();
}

/// 5,000 synthetic CIFAR-10 records through `predict_split` (f32, chunks of 500 through the
/// GEMM on every core) and `predict_monte_carlo_infer` (int8, image by image on every core):
/// the anchor is Keras on JAX's 0.073 s for the validation split.
fn batch_5000(c: &mut Criterion) {
    use simdnn::data::Split;
    use simdnn::data::cifar::RECORD_BYTES;
    use simdnn::train::mc::{predict_monte_carlo_infer, predict_split};
    let cfg = TrainConfig::preset("8a").expect("8a is a preset");
    let model = Sequential::new(3072, &cfg.layer_specs(), cfg.seed).expect("the 8a model builds");
    let saved = SavedModel { model, preprocess: Preprocess::UNIT_SCALE };
    let records: Vec<u8> = (0..5000 * RECORD_BYTES)
        .map(|i| if i % RECORD_BYTES == 0 { (i / RECORD_BYTES % 10) as u8 } else { (i * 7 % 251) as u8 })
        .collect();
    let split = Split::from_records(records.chunks_exact(RECORD_BYTES).collect()).expect("well-formed records");
    let images: Vec<u8> = records.chunks_exact(RECORD_BYTES).take(64).flat_map(|r| r[1..].to_vec()).collect();
    let int8 = to_bytes_int8(&saved, &calibrated(&saved, &images));
    let int8 = Model::from_bytes(&int8).expect("a freshly written model loads");
    let mut group = c.benchmark_group("infer/5000_images_all_cores");
    group.throughput(Throughput::Elements(5000));
    group.sample_size(20);
    group.bench_function("f32_batched", |b| {
        b.iter(|| black_box(predict_split(&saved.model, &split, &saved.preprocess).mean[0]))
    });
    group.bench_function("int8_image_by_image", |b| {
        b.iter(|| black_box(predict_monte_carlo_infer(&int8, &split, 0, 0).expect("predicts").mean[0]))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = single_image, first_layer, batch_5000
}
criterion_main!(benches);
