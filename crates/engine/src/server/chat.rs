//! The handlers: `/v1/models`, and `/v1/chat/completions` answered as one JSON object or as
//! server-sent events (`data: {chunk}` lines, then `data: [DONE]`). A streaming request waits
//! for its first event before answering, so a bad image still gets a 4xx status. When the
//! client goes away the response (and with it the engine's event stream) is dropped, which
//! cancels the computation. Authentication and the other head checks ran already
//! (`guard`); the body is read here under `body_read_timeout`, and the images are read and
//! decoded by [`resolve_images`] before the request reaches the engine's thread.
//!
//! When the prompt had tools, the answer's `<tool_call>` blocks are taken out of its text
//! ([`split_tool_calls`]): the message's `content` is the rest without trailing whitespace (null
//! when nothing is left), its `tool_calls` are `{"id": "call_<response>_<i>", "type": "function",
//! "function": {"name", "arguments": "<JSON string>"}}`, and `finish_reason` is `"tool_calls"`
//! when there is a call and the answer was not cut by `max_tokens`. Streamed, the content is
//! sent as it comes until the first `<tool_call>` ([`ToolStream`]); the rest of the content, then
//! one chunk whose `delta.tool_calls` holds every call (each with its `index` and whole
//! `arguments`), then the finishing chunk come at the end. An answer without calls, or to a
//! request without tools, is passed on untouched.
//!
//! A Thinking model's reasoning (the engine divides it from the answer, [`crate::reasoning`]) is
//! returned apart, as vLLM's reasoning parsers return it: the message's `reasoning_content`
//! (absent when there is none; `content` is then null if no answer followed), and streamed as
//! `delta.reasoning_content` chunks before the answer's `delta.content`. Tool calls are taken
//! from the answer only.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::parse::parse_body;
use super::tools::{split_tool_calls, ToolCall, ToolStream};
use super::{ApiError, AppState};
use crate::events::{Event, FinishReason, RequestTimings};
use crate::intake::{resolve_images, resolve_videos};
use crate::service::EventStream;

pub(crate) async fn models(State(st): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({
        "object": "list",
        "data": [{"id": st.cfg.model_name, "object": "model", "created": now(), "owned_by": "screenpilot"}]
    })))
}

/// Identity of one response.
struct Meta {
    id: String,
    /// The response's number (in `id` and the ids of its tool calls).
    serial: u64,
    created: u64,
    model: String,
}

pub(crate) async fn completions(State(st): State<Arc<AppState>>, req: Request) -> Result<Response, ApiError> {
    // A client that announces a body and then trickles it (or sends nothing) must not hold
    // the connection and its buffer forever.
    let body = tokio::time::timeout(st.cfg.body_read_timeout, Bytes::from_request(req, &()))
        .await
        .map_err(|_| {
            let msg = format!("the request body did not arrive within {:?}", st.cfg.body_read_timeout);
            ApiError::new(StatusCode::REQUEST_TIMEOUT, "request_timeout", msg)
        })?
        .map_err(|r| {
            let kind =
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE { "request_too_large" } else { "invalid_request_error" };
            ApiError::new(r.status(), kind, r.body_text())
        })?;
    let (chat, request) = parse_body(&body, &st.cfg).map_err(ApiError::bad_request)?;
    let tools = !request.tools.is_empty();
    // Validate first (cheap: e.g. too many images) so nothing is decoded for a doomed request.
    st.engine.check(&request)?;
    let request = resolve_images(request, &st.images).await?;
    let request = resolve_videos(request, &st.images, st.engine.video_config()).await?;
    let request = st.engine.validate(request)?;
    let mut events = st.engine.submit(request)?;
    let first = match events.next().await {
        Some(Event::Error(e)) => return Err(e.into()),
        Some(ev) => ev,
        None => return Err(stopped()),
    };
    let serial = st.next_id.fetch_add(1, Ordering::Relaxed);
    let meta = Meta {
        id: format!("chatcmpl-{serial}"),
        serial,
        created: now(),
        model: chat.model.clone().unwrap_or_else(|| st.cfg.model_name.clone()),
    };
    if chat.stream.unwrap_or(false) {
        let usage = chat.stream_options.as_ref().is_some_and(|o| o.include_usage);
        Ok(stream(meta, first, events, usage, tools))
    } else {
        collect(meta, first, events, tools).await
    }
}

fn stopped() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "engine_stopped", "the engine stopped before answering")
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn usage(t: &RequestTimings) -> Value {
    json!({"prompt_tokens": t.prompt_tokens, "completion_tokens": t.completion_tokens,
           "total_tokens": t.prompt_tokens + t.completion_tokens})
}

/// The `tool_calls` of an answer, as OpenAI's API writes them (`index` in stream deltas).
fn openai_calls(meta: &Meta, calls: &[ToolCall], streamed: bool) -> Value {
    let entries =
        calls.iter().enumerate().map(|(i, c)| c.openai(format!("call_{}_{i}", meta.serial), streamed.then_some(i)));
    Value::Array(entries.collect())
}

/// OpenAI's `finish_reason`: `"tool_calls"` when the answer calls a tool and was not cut short.
fn finish_reason(reason: FinishReason, calls: bool) -> &'static str {
    if calls && reason != FinishReason::Length {
        "tool_calls"
    } else {
        reason.openai()
    }
}

async fn collect(meta: Meta, first: Event, mut events: EventStream, tools: bool) -> Result<Response, ApiError> {
    let (mut text, mut reasoning) = (String::new(), String::new());
    let mut timings = RequestTimings::default();
    let mut next = Some(first);
    loop {
        match next {
            Some(Event::Token(t)) => {
                text.push_str(&t.text);
                reasoning.push_str(&t.reasoning);
            }
            Some(Event::Timings(t)) => timings = t,
            Some(Event::Finished(reason)) => {
                let mut message = json!({"role": "assistant", "content": text});
                let mut finish = reason.openai();
                if tools {
                    let (content, calls) = split_tool_calls(&text);
                    message["content"] =
                        if content.is_empty() && !calls.is_empty() { Value::Null } else { content.into() };
                    if !calls.is_empty() {
                        message["tool_calls"] = openai_calls(&meta, &calls, false);
                    }
                    finish = finish_reason(reason, !calls.is_empty());
                }
                if !reasoning.is_empty() {
                    message["reasoning_content"] = reasoning.into();
                    if message["content"] == "" {
                        message["content"] = Value::Null;
                    }
                }
                let body = json!({
                    "id": meta.id, "object": "chat.completion", "created": meta.created, "model": meta.model,
                    "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
                    "usage": usage(&timings),
                    "timings": timings,
                });
                return Ok(Json(body).into_response());
            }
            Some(Event::Error(e)) => return Err(e.into()),
            None => return Err(stopped()),
        }
        next = events.next().await;
    }
}

/// State of one SSE response.
struct SseState {
    meta: Meta,
    events: EventStream,
    first: Option<Event>,
    queue: VecDeque<SseEvent>,
    include_usage: bool,
    timings: RequestTimings,
    done: bool,
    /// With tools: the content held back while a call may be coming.
    tools: Option<ToolStream>,
}

impl SseState {
    fn chunk(&self, delta: Value) -> SseEvent {
        let body = json!({
            "id": self.meta.id, "object": "chat.completion.chunk", "created": self.meta.created,
            "model": self.meta.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}],
        });
        SseEvent::default().data(body.to_string())
    }

    fn content(&mut self, text: &str) {
        if !text.is_empty() {
            let c = self.chunk(json!({"content": text}));
            self.queue.push_back(c);
        }
    }

    /// Answer text: sent as it comes, or through the tool-call holder when there are tools.
    fn answer(&mut self, text: &str) {
        match &mut self.tools {
            Some(held) => {
                let ready = held.push(text);
                self.content(&ready);
            }
            None => self.content(text),
        }
    }

    /// Turns the next engine event into SSE events; false once the answer is complete.
    async fn pull(&mut self) -> bool {
        let ev = match self.first.take() {
            Some(e) => Some(e),
            None => self.events.next().await,
        };
        match ev {
            Some(Event::Token(t)) => {
                if !t.reasoning.is_empty() {
                    let c = self.chunk(json!({"reasoning_content": t.reasoning}));
                    self.queue.push_back(c);
                }
                self.answer(&t.text);
            }
            Some(Event::Timings(t)) => self.timings = t,
            Some(Event::Finished(reason)) => {
                let mut finish = reason.openai();
                if let Some(held) = self.tools.take() {
                    let (rest, calls) = held.finish();
                    self.content(&rest);
                    if !calls.is_empty() {
                        let c = self.chunk(json!({"tool_calls": openai_calls(&self.meta, &calls, true)}));
                        self.queue.push_back(c);
                    }
                    finish = finish_reason(reason, !calls.is_empty());
                }
                let mut last = json!({
                    "id": self.meta.id, "object": "chat.completion.chunk", "created": self.meta.created,
                    "model": self.meta.model,
                    "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": finish}],
                    "timings": self.timings,
                });
                if self.include_usage {
                    last["usage"] = usage(&self.timings);
                }
                self.queue.push_back(SseEvent::default().data(last.to_string()));
                self.end();
            }
            Some(Event::Error(e)) => {
                let err = ApiError::from(e);
                self.queue.push_back(SseEvent::default().data(err.body().to_string()));
                self.end();
            }
            None => {
                self.queue.push_back(SseEvent::default().data(stopped().body().to_string()));
                self.end();
            }
        }
        !self.done
    }

    fn end(&mut self) {
        self.queue.push_back(SseEvent::default().data("[DONE]"));
        self.done = true;
    }
}

fn stream(meta: Meta, first: Event, events: EventStream, include_usage: bool, tools: bool) -> Response {
    let mut state = SseState {
        meta,
        events,
        first: Some(first),
        queue: VecDeque::new(),
        include_usage,
        timings: RequestTimings::default(),
        done: false,
        tools: tools.then(ToolStream::default),
    };
    let role = state.chunk(json!({"role": "assistant", "content": ""}));
    state.queue.push_back(role);
    let body = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(ev) = s.queue.pop_front() {
                return Some((Ok::<_, Infallible>(ev), s));
            }
            if s.done || !s.pull().await && s.queue.is_empty() {
                return None;
            }
        }
    });
    Sse::new(body).into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "chat_tests.rs"]
mod tests;
