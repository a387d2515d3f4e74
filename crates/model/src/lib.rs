//! Qwen3-VL in candle, computing what HF transformers' implementation computes.
//!
//! Data flows one way: an image is preprocessed into patches ([`preprocess`]), the vision tower
//! turns them into merged embeddings and DeepStack features ([`vision`]), a prompt in the chat
//! format ([`prompt`]) is tokenized ([`tokenizer`]) and given 3-D positions ([`rope`]), and the
//! text decoder ([`text`]) prefills it and decodes ([`generate`]) with a KV cache the caller owns.
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod chat_template;
pub mod config;
pub mod device;
pub mod error;
mod kernels;
pub mod generate;
mod graph;
pub mod loader;
pub mod model;
pub mod ops;
pub mod patch_layout;
pub mod preprocess;
pub mod profile;
pub mod quality;
pub mod prompt;
pub mod random;
pub mod rope;
pub mod text;
pub mod tokenizer;
pub mod vision;

pub use candle_core::{DType, Device, Tensor};
pub use chat_template::ChatFormat;
pub use config::Qwen3VlConfig;
pub use error::{ModelError, Result};
pub use device::cuda_device;
pub use graph::GraphCounts;
pub use generate::{generate, Flow, Generation, SamplingParams, Step, Timings};
pub use loader::ModelFolder;
pub use model::{LogitsFor, PromptInput, Qwen3Vl};
pub use ops::{CublasLt, FusedKernels, KernelConfig, QuantSummary, QuantType};
pub use preprocess::{GridThw, PreprocessConfig, PreprocessedImage};
pub use text::KvCache;
pub use tokenizer::Tokenizer;
pub use vision::VisionOutput;
