//! The local backend: requests go to this process's engine worker through its
//! [`EngineHandle`], exactly as the server's do.

use super::{Backend, Reply};
use crate::error::{EngineError, Result};
use crate::events::{Event, FinishReason, RequestTimings};
use crate::request::Request;
use crate::service::EngineHandle;

/// This machine's engine.
#[derive(Clone)]
pub struct LocalBackend {
    handle: EngineHandle,
}

impl LocalBackend {
    pub fn new(handle: EngineHandle) -> Self {
        Self { handle }
    }

    pub fn handle(&self) -> &EngineHandle {
        &self.handle
    }
}

impl Backend for LocalBackend {
    fn chat(&self, request: Request, on_text: &mut dyn FnMut(&str)) -> Result<Reply> {
        let req = self.handle.validate(request)?;
        let mut events = self.handle.submit(req)?;
        let (mut text, mut reasoning) = (String::new(), String::new());
        let (mut timings, mut finish) = (RequestTimings::default(), None);
        while let Some(ev) = events.blocking_next() {
            match ev {
                Event::Token(t) => {
                    reasoning.push_str(&t.reasoning);
                    if !t.text.is_empty() {
                        on_text(&t.text);
                        text.push_str(&t.text);
                    }
                }
                Event::Timings(t) => timings = t,
                Event::Finished(f) => finish = Some(f),
                Event::Error(e) => return Err(e),
            }
        }
        let finish_reason = finish.ok_or(EngineError::Stopped)?;
        if finish_reason == FinishReason::Cancelled {
            return Err(EngineError::Stopped);
        }
        Ok(Reply { text, reasoning, finish_reason, timings })
    }

    fn describe(&self) -> String {
        "local engine".into()
    }
}
