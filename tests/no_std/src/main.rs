//! Firmware that runs `simdnn::infer` on a Cortex-M4F with no `std`, no heap and no global
//! allocator (the build fails if the inference path ever needs one). It classifies the images
//! that build.rs made with each model file, and checks every class probability, and MC
//! dropout's means, against the host's. Semihosting carries the report and the exit status.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::{debug, hprintln};
use simdnn::infer::Model;

include!(concat!(env!("OUT_DIR"), "/expected.rs"));

/// How far a probability may differ from the host's: the sums run in the same order, but
/// the host's AVX-512 kernels fuse multiply-adds that this FPU's scalar path may round twice.
const TOLERANCE: f32 = 1e-5;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    // Only reached where semihosting cannot exit (on a board without a debugger).
    loop {
        cortex_m::asm::wfi();
    }
}

/// The largest difference between `got` and `want`; a NaN counts as infinite (`f32::max`
/// would drop it).
fn difference(got: &[f32], want: &[f32; 10]) -> f32 {
    got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0, |d, x| if x.is_nan() { f32::INFINITY } else { d.max(x) })
}

#[entry]
fn main() -> ! {
    let mut scratch = [0f32; SCRATCH_LEN];
    let mut failures = 0;
    for (name, bytes, expected) in MODELS {
        let model = match Model::from_bytes(bytes) {
            Ok(model) => model,
            Err(e) => {
                hprintln!("{}: {}", name, e);
                failures += 1;
                continue;
            }
        };
        let mut worst = 0f32;
        for (image, [probs, mc_mean]) in IMAGES.chunks_exact(3072).zip(expected) {
            let got = [
                model.predict(image, &mut scratch).map(|p| difference(p, &probs)),
                model.predict_mc(image, MC_SAMPLES, MC_SEED, &mut scratch).map(|(m, _)| difference(m, &mc_mean)),
            ];
            for result in got {
                match result {
                    Ok(diff) => worst = worst.max(diff),
                    Err(e) => {
                        hprintln!("{}: {}", name, e);
                        worst = f32::INFINITY;
                    }
                }
            }
        }
        let ok = worst <= TOLERANCE;
        failures += usize::from(!ok);
        hprintln!(
            "{} weights: {} images, largest difference from the host {:e}: {}",
            name,
            expected.len(),
            worst,
            if ok { "ok" } else { "FAILED" }
        );
    }
    debug::exit(if failures == 0 { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    // Only reached where semihosting cannot exit (on a board without a debugger).
    loop {
        cortex_m::asm::wfi();
    }
}
