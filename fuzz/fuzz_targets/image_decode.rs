//! Fuzz target: image decoding under limits, then preprocessing (see src/image_decode.rs).
//! Codec crates' panics must be caught by `decode_image_limited` (src/contain.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    screenpilot_fuzz::contain::let_registry_panics_unwind();
    screenpilot_fuzz::image_decode::run(data)
});
