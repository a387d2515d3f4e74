//! [`BackendAssistant`]: the app's [`Assistant`] over any engine [`Backend`], in practice an
//! OpenAI-compatible server ([`RemoteBackend`]), so Ask and To HTML can run where tasks can.
//!
//! The request is the one [`crate::engine_assistant::EngineAssistant`] builds (the capture as
//! an image part and the first question, then each earlier answer and the next question).
//! The backend's blocking `chat` runs on a worker thread and its text comes back over a
//! channel; while waiting, the caller's callback is asked every [`POLL`] whether to go on (an
//! empty piece), so a new question or Stop ends the wait at once even when the server is slow
//! or silent. An abandoned request's HTTP read finishes (or times out) on its worker thread,
//! and its text goes nowhere.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

use screenpilot_engine::backend::{Backend, RemoteBackend, RemoteConfig, Reply};
use screenpilot_model::generate::Flow;

use crate::assistant::{ms, AskOutcome, AskRequest, AskTimings, Assistant, ModelInfo};
use crate::engine_assistant::{request, POLL};
use crate::error::{DesktopError, Result};

/// What the worker thread sends back.
enum Msg {
    Text(String),
    Done(screenpilot_engine::Result<Reply>),
}

/// Answers through a [`Backend`].
pub struct BackendAssistant {
    backend: Arc<dyn Backend>,
    info: ModelInfo,
}

/// What the UI shows for a server: name `server: <url> (<model>)`, device `remote`.
pub fn server_info(url: &str, model: &str) -> ModelInfo {
    ModelInfo {
        name: format!("server: {url} ({model})"),
        path: url.to_string(),
        device: "remote".into(),
        dtype: String::new(),
        parameters: 0,
        weight_bytes: 0,
    }
}

impl BackendAssistant {
    /// Answers through `backend`, shown as `info`.
    pub fn new(backend: Arc<dyn Backend>, info: ModelInfo) -> Self {
        Self { backend, info }
    }

    /// Connects to the OpenAI-compatible server at `url` (a base URL ending in `/v1`) asking
    /// for `model` (None or empty: the first it lists) with `api_key` (None or empty: none; the
    /// app passes the one of its settings or `$SCREENPILOT_API_KEY`). Blocks (lists the server's
    /// models); fails with one line for an unreachable server, a refused key or an unknown model.
    pub fn connect_with_key(url: &str, model: Option<&str>, api_key: Option<String>) -> Result<Self> {
        let url = url.trim();
        let mut cfg = RemoteConfig::new(url);
        cfg.model = model.map(str::trim).filter(|m| !m.is_empty()).map(String::from);
        cfg.api_key = api_key.filter(|k| !k.is_empty());
        let remote = RemoteBackend::connect(cfg).map_err(|e| DesktopError::Model(e.to_string()))?;
        let info = server_info(url.trim_end_matches('/'), remote.model());
        Ok(Self::new(Arc::new(remote), info))
    }

}

impl Assistant for BackendAssistant {
    fn backend(&self) -> Option<Arc<dyn Backend>> {
        Some(Arc::clone(&self.backend))
    }

    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    fn ask(&self, req: &AskRequest<'_>, on_token: &mut dyn FnMut(&str) -> Flow) -> Result<AskOutcome> {
        let t0 = Instant::now();
        let request = request(req);
        let (tx, rx) = mpsc::channel();
        let backend = Arc::clone(&self.backend);
        std::thread::Builder::new()
            .name("screenpilot-ask-remote".into())
            .spawn(move || {
                let text_tx = tx.clone();
                // Once the asker has gone, sends fail and the text is dropped.
                let result = backend.chat(request, &mut |t| drop(text_tx.send(Msg::Text(t.to_string()))));
                let _ = tx.send(Msg::Done(result));
            })
            .map_err(|e| DesktopError::Internal(format!("cannot start the answer's thread: {e}")))?;
        let mut text = String::new();
        let mut first: Option<f64> = None;
        let cancelled = |text: String, first: Option<f64>| {
            let total_ms = ms(t0);
            let engine = screenpilot_engine::RequestTimings { ttft_ms: first.unwrap_or(total_ms), ..Default::default() };
            Ok(AskOutcome { text, cancelled: true, timings: AskTimings { engine, total_ms }, token_ids: Vec::new(), cache: None })
        };
        loop {
            match rx.recv_timeout(POLL) {
                Err(RecvTimeoutError::Timeout) => {
                    if on_token("") == Flow::Stop {
                        return cancelled(text, first);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(DesktopError::Internal("the answer's thread ended without a reply".into()))
                }
                Ok(Msg::Text(t)) => {
                    if t.is_empty() {
                        continue;
                    }
                    first.get_or_insert_with(|| ms(t0));
                    text.push_str(&t);
                    if on_token(&t) == Flow::Stop {
                        return cancelled(text, first);
                    }
                }
                Ok(Msg::Done(result)) => {
                    let reply = result.map_err(|e| DesktopError::Model(e.to_string()))?;
                    let total_ms = ms(t0);
                    let ttft_ms = first.unwrap_or(total_ms);
                    let mut engine = reply.timings;
                    engine.ttft_ms = ttft_ms;
                    if engine.decode_tokens == 0 && engine.completion_tokens > 1 {
                        engine.decode_tokens = engine.completion_tokens - 1;
                    }
                    engine.decode_ms = total_ms - ttft_ms;
                    if engine.decode_tokens > 0 && engine.decode_ms > 0.0 {
                        engine.decode_tokens_per_s = engine.decode_tokens as f64 * 1000.0 / engine.decode_ms;
                    }
                    // A backend that does not stream sent its text only in the reply.
                    if text.is_empty() && !reply.text.is_empty() && on_token(&reply.text) == Flow::Stop {
                        return cancelled(reply.text, Some(total_ms));
                    }
                    return Ok(AskOutcome {
                        text: reply.text,
                        cancelled: false,
                        timings: AskTimings { engine, total_ms },
                        token_ids: Vec::new(),
                        cache: None,
                    });
                }
            }
        }
    }
}
