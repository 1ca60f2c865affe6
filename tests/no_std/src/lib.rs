//! What firmware linking `simdnn::infer` looks like: a C-callable classifier over a model
//! file in flash, with scratch memory the caller owns. No `std`, no allocator: the build
//! fails if the inference path ever needs one.
#![no_std]

use simdnn::infer::Model;

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The class of the 32 x 32 x 3 image at `image` (3,072 bytes, channel-major as in
/// CIFAR-10) under the model file at `model` (`len` bytes), using `scratch` (`scratch_len`
/// floats, at least `Model::scratch_len`); -1 when the file or the scratch is not usable.
///
/// # Safety
/// The pointers must be valid for the lengths given, and `scratch` must not alias the others.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn simdnn_classify(
    model: *const u8,
    len: usize,
    image: *const u8,
    scratch: *mut f32,
    scratch_len: usize,
) -> i32 {
    // SAFETY: the caller guarantees each pointer is valid for its length.
    let (bytes, image, scratch) = unsafe {
        (
            core::slice::from_raw_parts(model, len),
            core::slice::from_raw_parts(image, 3072),
            core::slice::from_raw_parts_mut(scratch, scratch_len),
        )
    };
    let Ok(model) = Model::from_bytes(bytes) else { return -1 };
    let Ok(probs) = model.predict(image, scratch) else { return -1 };
    let best = probs.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &p)| if p > b.1 { (i, p) } else { b });
    best.0 as i32
}
