//! Fuzz target: chat-completions request parsing and validation (see src/chat_request.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| screenpilot_fuzz::chat_request::run(data));
