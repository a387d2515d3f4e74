//! The code of ScreenPilot's fuzz targets, one module a target, each with `run(data)`: the
//! binaries in fuzz_targets/ call it, and the owning crate's tests/fuzz_regressions.rs includes
//! the same file (`#[path]`) to replay the committed corpus and crash reproducers in `cargo
//! test`. The modules use only std, serde_json and the crate they test. See docs/FUZZING.md.

pub mod chat_request;
pub mod contain;
pub mod image_decode;
pub mod model_output;
pub mod safetensors_config;
