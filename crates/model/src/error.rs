//! Errors of the model crate: one enum, each variant a message a user can act on.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A tensor operation failed. Shown through [`candle_message`]: candle appends a captured
    /// backtrace to its message when `RUST_BACKTRACE` is set, and a user-facing error line must
    /// stay one line whatever the environment says.
    #[error("{}", candle_message(.0))]
    Candle(candle_core::Error),
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
    /// The model's cache would outgrow the context (a pass or a decode step).
    #[error("prompt has {tokens} tokens but the context holds {max}")]
    PromptTooLong { tokens: usize, max: usize },
    /// A request's prompt plus its answer budget do not fit the context (checked before any work).
    #[error("the prompt has {prompt_tokens} tokens and max_tokens is {max_new_tokens}; the context holds {context}")]
    ContextLength { prompt_tokens: usize, max_new_tokens: usize, context: usize },
    /// The logits of a step hold NaN or +inf, or nothing finite: the forward pass went wrong
    /// and no token can be chosen from them.
    #[error("the model produced unusable logits: {0}")]
    BadLogits(String),
    #[error("bad input: {0}")]
    Input(String),
}

impl From<candle_core::Error> for ModelError {
    fn from(e: candle_core::Error) -> Self {
        ModelError::Candle(e)
    }
}

/// A candle error's message without the backtraces candle captures under `RUST_BACKTRACE`, and
/// with its context and path wrappers on one line.
pub fn candle_message(e: &candle_core::Error) -> String {
    use candle_core::Error as E;
    match e {
        E::WithBacktrace { inner, .. } => candle_message(inner),
        E::Context { inner, context } => format!("{context}: {}", candle_message(inner)),
        E::WithPath { inner, path } => format!("{}: {}", path.display(), candle_message(inner)),
        other => other.to_string(),
    }
}

pub type Result<T> = std::result::Result<T, ModelError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candle_backtraces_are_left_out_of_the_message() {
        let inner = candle_core::Error::Msg("shape mismatch".into());
        let bt = candle_core::Error::WithBacktrace {
            inner: Box::new(inner),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        let e = ModelError::from(bt.context("loading layer 3"));
        assert_eq!(e.to_string(), "loading layer 3: shape mismatch");
    }
}
