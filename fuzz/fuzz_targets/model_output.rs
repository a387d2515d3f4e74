//! Fuzz target: the model-answer parsers and action mapping (see src/model_output.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| screenpilot_fuzz::model_output::run(data));
