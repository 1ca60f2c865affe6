//! Runs on the host: builds a small model, writes it with f32, bf16 and int8 weights, and
//! records what `simdnn::infer` computes for a few images on this machine, for the firmware
//! to check its own results against.

use std::fmt::Write;
use std::path::PathBuf;
use std::{env, fs};

use simdnn::format::{SavedModel, WeightType, to_bytes_as};
use simdnn::infer::Model;
use simdnn::kernels::Activation;
use simdnn::nn::{Initializer, LayerSpec, Preprocess, Sequential};

const IMAGES: usize = 4;
const MC_SAMPLES: usize = 10;
const MC_SEED: u64 = 42;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // cortex-m-rt's link.x includes memory.x from the linker's search path.
    fs::copy("memory.x", out.join("memory.x")).expect("memory.x is beside build.rs");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");

    let dense = |units, activation, init| LayerSpec::Dense { units, activation, init };
    // A narrow net with every kind of layer the recipes use, in every weight type.
    let small = [
        dense(48, Activation::ELU, Initializer::HeNormal),
        dense(32, Activation::Selu, Initializer::LecunNormal),
        LayerSpec::AlphaDropout { rate: 0.1 },
        dense(10, Activation::Softmax, Initializer::GlorotUniform),
    ];
    // 8e's own network (20 x 100 SELU, alpha dropout), in the narrow types (its f32 file,
    // 2 MB, would crowd the board's 4 MiB of code memory).
    let mut exercise_8e = vec![dense(100, Activation::Selu, Initializer::LecunNormal); 20];
    exercise_8e
        .extend([LayerSpec::AlphaDropout { rate: 0.1 }, dense(10, Activation::Softmax, Initializer::LecunNormal)]);
    let saved = |specs: &[LayerSpec]| SavedModel {
        model: Sequential::new(3072, specs, 7).expect("a valid model"),
        preprocess: Preprocess::Scale(1.0 / 255.0),
    };
    let (small, exercise_8e) = (saved(&small), saved(&exercise_8e));
    let models = [
        ("small, f32", &small, WeightType::F32),
        ("small, bf16", &small, WeightType::Bf16),
        ("small, int8", &small, WeightType::Int8),
        ("8e, bf16", &exercise_8e, WeightType::Bf16),
        ("8e, int8", &exercise_8e, WeightType::Int8),
    ];
    let images: Vec<u8> =
        (0..IMAGES * 3072).map(|k| ((k * 37 + (k / 3072) * 101 + (k * k) % 251) % 256) as u8).collect();
    fs::write(out.join("images.bin"), &images).expect("OUT_DIR is writable");

    let mut expected = String::new();
    writeln!(expected, "pub const MC_SAMPLES: usize = {MC_SAMPLES};\npub const MC_SEED: u64 = {MC_SEED};").unwrap();
    writeln!(expected, "pub const IMAGES: &[u8] = include_bytes!(concat!(env!(\"OUT_DIR\"), \"/images.bin\"));")
        .unwrap();
    let mut scratch_len = 0;
    writeln!(expected, "/// Per image: the class probabilities, then MC dropout's mean.").unwrap();
    writeln!(expected, "pub type Expected = [[[f32; 10]; 2]; {IMAGES}];").unwrap();
    writeln!(expected, "pub const MODELS: [(&str, &[u8], Expected); {}] = [", models.len()).unwrap();
    for (i, (name, saved, weights)) in models.iter().enumerate() {
        let bytes = to_bytes_as(saved, *weights);
        let file = format!("model-{i}.simdnn");
        fs::write(out.join(&file), &bytes).expect("OUT_DIR is writable");
        let model = Model::from_bytes(&bytes).expect("the file just written");
        scratch_len = scratch_len.max(model.scratch_len());
        let mut scratch = vec![0f32; model.scratch_len()];
        write!(expected, "    (\"{name}\", include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{file}\")), [").unwrap();
        for image in images.chunks_exact(3072) {
            let probs = model.predict(image, &mut scratch).expect("a valid image").to_vec();
            let (mean, _) = model.predict_mc(image, MC_SAMPLES, MC_SEED, &mut scratch).expect("a valid image");
            write!(expected, "[{probs:?}, {mean:?}], ").unwrap();
        }
        expected.push_str("]),\n");
    }
    expected.push_str("];\n");
    writeln!(expected, "pub const SCRATCH_LEN: usize = {scratch_len};").unwrap();
    fs::write(out.join("expected.rs"), expected).expect("OUT_DIR is writable");
}
