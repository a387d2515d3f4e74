//! Errors of the model crate: one enum, each variant a message a user can act on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("bad model config: {0}")]
    Config(String),
    #[error("model folder {dir}: missing {file}")]
    MissingFile { dir: PathBuf, file: String },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("bad weights: {0}")]
    Weights(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error(transparent)]
    Image(#[from] crate::preprocess::PreprocessError),
    #[error("prompt has {tokens} tokens but the context holds {max}")]
    PromptTooLong { tokens: usize, max: usize },
    #[error("bad input: {0}")]
    Input(String),
}

pub type Result<T> = std::result::Result<T, ModelError>;
