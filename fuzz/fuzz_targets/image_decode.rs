//! Fuzz target: image decoding under limits, then preprocessing (see src/image_decode.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| screenpilot_fuzz::image_decode::run(data));
