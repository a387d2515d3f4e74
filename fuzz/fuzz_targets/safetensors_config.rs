//! Fuzz target: safetensors header and model-folder configs (see src/safetensors_config.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| screenpilot_fuzz::safetensors_config::run(data));
