//! Errors of the engine: one enum whose variants carry plain messages (so an error can be sent to
//! every subscriber of a coalesced request), each with a stable machine-readable `error_type()`.
//! Which HTTP status an error becomes is decided only by the server module.

use screenpilot_model::ModelError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The request is malformed or asks for something unsupported.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// An image could not be read, decoded or preprocessed.
    #[error("invalid image: {0}")]
    InvalidImage(String),
    /// A video could not be read, decoded or preprocessed.
    #[error("invalid video: {0}")]
    InvalidVideo(String),
    /// Prompt plus answer do not fit the model's context.
    #[error("the prompt has {tokens} tokens and asks for {max_tokens} more, but the context holds {context}")]
    ContextLength { tokens: usize, max_tokens: usize, context: usize },
    /// The request queue is full; retry later.
    #[error("the engine is busy: {capacity} requests are already queued, retry later")]
    Busy { capacity: usize },
    /// The engine's worker has stopped (shut down or crashed).
    #[error("the engine has stopped")]
    Stopped,
    /// The model failed while computing.
    #[error("model error: {0}")]
    Model(String),
    /// Loading the model, binding a socket or serving failed.
    #[error("{0}")]
    Io(String),
    /// A remote backend (an OpenAI-compatible server) failed or answered something unusable.
    #[error("{0}")]
    Backend(String),
}

impl EngineError {
    /// A stable identifier of the kind of error (used as the OpenAI error `type`).
    pub fn error_type(&self) -> &'static str {
        match self {
            EngineError::InvalidRequest(_) => "invalid_request_error",
            EngineError::InvalidImage(_) => "invalid_image",
            EngineError::InvalidVideo(_) => "invalid_video",
            EngineError::ContextLength { .. } => "context_length_exceeded",
            EngineError::Busy { .. } => "overloaded",
            EngineError::Stopped => "engine_stopped",
            EngineError::Model(_) => "model_error",
            EngineError::Io(_) => "io_error",
            EngineError::Backend(_) => "backend_error",
        }
    }
}

impl From<ModelError> for EngineError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Image(i) => EngineError::InvalidImage(i.to_string()),
            ModelError::Input(m) => EngineError::InvalidRequest(m),
            ModelError::PromptTooLong { tokens, max } => {
                EngineError::ContextLength { tokens, max_tokens: 0, context: max }
            }
            ModelError::ContextLength { prompt_tokens, max_new_tokens, context } => {
                EngineError::ContextLength { tokens: prompt_tokens, max_tokens: max_new_tokens, context }
            }
            ModelError::Candle(c) => EngineError::from(c),
            other => EngineError::Model(other.to_string()),
        }
    }
}

impl From<candle_core::Error> for EngineError {
    /// The message without the backtrace candle appends when `RUST_BACKTRACE` is set: it would
    /// reach API clients.
    fn from(e: candle_core::Error) -> Self {
        EngineError::Model(screenpilot_model::error::candle_message(&e))
    }
}

pub type Result<T> = std::result::Result<T, EngineError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_are_stable_identifiers() {
        assert_eq!(EngineError::Busy { capacity: 1 }.error_type(), "overloaded");
        assert_eq!(EngineError::InvalidRequest("x".into()).error_type(), "invalid_request_error");
        let too_long: EngineError = ModelError::PromptTooLong { tokens: 9, max: 8 }.into();
        assert_eq!(too_long.error_type(), "context_length_exceeded");
        let too_long: EngineError =
            ModelError::ContextLength { prompt_tokens: 9, max_new_tokens: 4, context: 8 }.into();
        assert_eq!(too_long, EngineError::ContextLength { tokens: 9, max_tokens: 4, context: 8 });
    }

    #[test]
    fn a_candle_error_carries_no_backtrace_to_clients() {
        let inner = candle_core::Error::Msg("out of memory".into());
        let e: EngineError = candle_core::Error::WithBacktrace {
            inner: Box::new(inner),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        }
        .into();
        assert_eq!(e, EngineError::Model("out of memory".into()));
    }
}
