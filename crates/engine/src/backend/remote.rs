//! The remote backend: an OpenAI-compatible chat-completions server (`screenpilot serve`,
//! vLLM, SGLang, ...). Images go as `data:` URIs, tools as OpenAI function schemas, earlier tool
//! calls as structured `tool_calls` with `tool` messages answering them. Replies may carry
//! Qwen's raw `<tool_call>` text in `content` or structured `tool_calls` (vLLM and SGLang send
//! either, depending on their tool parser), streamed or not: both are read, and the reply's text
//! is always Qwen's format. 429 and 503 are retried with backoff (honouring `Retry-After`).
//! The API key goes only into the `Authorization` header: it is in no message, log or `Debug`.

use std::io::{BufRead, BufReader, Cursor};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::tool_text::{self, ToolCall};
use super::{Backend, Reply};
use crate::error::{EngineError, Result};
use crate::events::{FinishReason, RequestTimings};
use crate::request::{ChatMessage, ContentPart, ImageSource, Request, Role, VideoSource};

/// Where and how to reach the server.
#[derive(Clone)]
pub struct RemoteConfig {
    /// Base URL ending in `/v1` (e.g. `http://gpu-box:8000/v1`).
    pub base_url: String,
    /// The model to ask for; `None`: the first of `GET /v1/models`.
    pub model: Option<String>,
    pub api_key: Option<String>,
    pub connect_timeout: Duration,
    /// For a whole non-streamed answer, or between two streamed pieces.
    pub read_timeout: Duration,
    /// Retries after a 429 or 503 (then the error is returned).
    pub retries: u32,
    /// First backoff; doubled each retry.
    pub backoff: Duration,
    /// Ask for a streamed answer (`stream: true`).
    pub stream: bool,
}

impl RemoteConfig {
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: None,
            api_key: None,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(300),
            retries: 4,
            backoff: Duration::from_millis(500),
            stream: true,
        }
    }
}

impl std::fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<hidden>"))
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

/// A connected OpenAI-compatible server.
#[derive(Debug)]
pub struct RemoteBackend {
    cfg: RemoteConfig,
    model: String,
    agent: ureq::Agent,
}

/// The most bytes of a server's error body quoted in a message.
const QUOTE: usize = 300;

impl RemoteBackend {
    /// Checks the URL, asks the server for its models and picks one (the configured one must be
    /// among them). Fails with one clear message for an unreachable server, a refused key, an
    /// unknown model.
    pub fn connect(mut cfg: RemoteConfig) -> Result<Self> {
        let base = cfg.base_url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) || !base.ends_with("/v1") {
            return Err(EngineError::Backend(format!(
                "the backend URL must be http(s)://HOST[:PORT]/.../v1 (given: {base})"
            )));
        }
        cfg.base_url = base;
        let agent = ureq::AgentBuilder::new().timeout_connect(cfg.connect_timeout).timeout_read(cfg.read_timeout).build();
        let mut me = Self { model: String::new(), cfg, agent };
        let body = me.send("GET", "models", None)?;
        let listed: Value = read_json(&me, body)?;
        let ids: Vec<String> = listed
            .get("data")
            .and_then(Value::as_array)
            .map(|d| d.iter().filter_map(|m| m.get("id").and_then(Value::as_str)).map(String::from).collect())
            .unwrap_or_default();
        me.model = match &me.cfg.model {
            Some(m) if ids.contains(m) => m.clone(),
            Some(m) => {
                return Err(EngineError::Backend(format!(
                    "the backend at {} does not serve the model {m:?} (it serves: {})",
                    me.cfg.base_url,
                    if ids.is_empty() { "none".into() } else { ids.join(", ") }
                )))
            }
            None => ids.first().cloned().ok_or_else(|| {
                EngineError::Backend(format!("the backend at {} lists no model at /v1/models", me.cfg.base_url))
            })?,
        };
        Ok(me)
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// The chat-completions body for `request`.
    pub fn body(&self, request: &Request) -> Result<Value> {
        let o = &request.options;
        let mut body = json!({
            "model": self.model,
            "messages": messages(&request.messages)?,
            "max_tokens": o.max_tokens,
            "temperature": o.temperature,
            "top_p": o.top_p,
            "seed": o.seed,
            "stream": self.cfg.stream,
        });
        let Value::Object(b) = &mut body else { unreachable!("a JSON object literal") };
        if self.cfg.stream {
            b.insert("stream_options".into(), json!({"include_usage": true}));
        }
        if !o.stop.is_empty() {
            b.insert("stop".into(), json!(o.stop));
        }
        // vLLM's and SGLang's extensions; sent only when they change something.
        if o.top_k > 0 {
            b.insert("top_k".into(), json!(o.top_k));
        }
        if o.repetition_penalty != 1.0 {
            b.insert("repetition_penalty".into(), json!(o.repetition_penalty));
        }
        if o.ignore_eos {
            b.insert("ignore_eos".into(), json!(true));
        }
        if !request.tools.is_empty() {
            let tools: Vec<Value> = request
                .tools
                .iter()
                .map(|t| if t.get("function").is_some() { t.clone() } else { json!({"type": "function", "function": t}) })
                .collect();
            b.insert("tools".into(), Value::Array(tools));
        }
        Ok(body)
    }

    /// Sends with retries on 429/503; the body of a successful response.
    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Box<dyn std::io::Read + Send + Sync>> {
        let url = format!("{}/{path}", self.cfg.base_url);
        let mut wait = self.cfg.backoff;
        for attempt in 0..=self.cfg.retries {
            let mut req = self.agent.request(method, &url);
            if let Some(key) = &self.cfg.api_key {
                req = req.set("Authorization", &format!("Bearer {key}"));
            }
            let result = match body {
                Some(b) => req.set("Content-Type", "application/json").send_string(&b.to_string()),
                None => req.call(),
            };
            match result {
                Ok(resp) => return Ok(resp.into_reader()),
                Err(ureq::Error::Status(429 | 503, resp)) if attempt < self.cfg.retries => {
                    let after = resp.header("Retry-After").and_then(|s| s.trim().parse::<u64>().ok());
                    let pause = after.map(|s| Duration::from_secs(s.min(30))).unwrap_or(wait);
                    std::thread::sleep(pause);
                    wait = wait.saturating_mul(2);
                }
                Err(ureq::Error::Status(code, resp)) => return Err(self.status_error(code, resp)),
                Err(ureq::Error::Transport(t)) => {
                    return Err(EngineError::Backend(self.redact(format!(
                        "cannot reach the backend at {}: {t}",
                        self.cfg.base_url
                    ))))
                }
            }
        }
        Err(EngineError::Backend(format!("the backend at {} stayed busy", self.cfg.base_url)))
    }

    fn status_error(&self, code: u16, resp: ureq::Response) -> EngineError {
        let text = resp.into_string().unwrap_or_default();
        let said = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.pointer("/error/message").or_else(|| v.get("message")).and_then(Value::as_str).map(String::from))
            .unwrap_or(text);
        let said: String = said.chars().take(QUOTE).collect();
        let base = &self.cfg.base_url;
        let msg = match code {
            401 | 403 => format!("the backend at {base} refused the API key (HTTP {code}): {said}"),
            429 | 503 => format!("the backend at {base} is busy (HTTP {code}, {} retries): {said}", self.cfg.retries),
            _ => format!("the backend at {base} answered HTTP {code}: {said}"),
        };
        EngineError::Backend(self.redact(msg))
    }

    /// The key never appears in a message, even when a server echoes it.
    fn redact(&self, s: String) -> String {
        match &self.cfg.api_key {
            Some(k) if !k.is_empty() => s.replace(k.as_str(), "<hidden>"),
            _ => s,
        }
    }
}

impl Backend for RemoteBackend {
    fn chat(&self, request: Request, on_text: &mut dyn FnMut(&str)) -> Result<Reply> {
        let body = self.body(&request)?;
        let reader = self.send("POST", "chat/completions", Some(&body))?;
        let mut acc = Accumulated::default();
        if self.cfg.stream {
            read_stream(self, reader, &mut acc, on_text)?;
        } else {
            let v = read_json(self, reader)?;
            acc.add_choice(self, &v, false, on_text)?;
            acc.usage(&v);
        }
        acc.finish(self)
    }

    fn describe(&self) -> String {
        format!("{} (model {})", self.cfg.base_url, self.model)
    }
}

fn read_json(b: &RemoteBackend, mut r: Box<dyn std::io::Read + Send + Sync>) -> Result<Value> {
    let mut text = String::new();
    r.read_to_string(&mut text).map_err(|e| EngineError::Backend(format!("reading the backend's reply: {e}")))?;
    serde_json::from_str(&text).map_err(|e| {
        let quoted: String = text.chars().take(QUOTE).collect();
        EngineError::Backend(b.redact(format!("the backend's reply is not JSON ({e}): {quoted}")))
    })
}

fn read_stream(
    b: &RemoteBackend,
    r: Box<dyn std::io::Read + Send + Sync>,
    acc: &mut Accumulated,
    on_text: &mut dyn FnMut(&str),
) -> Result<()> {
    let reader = BufReader::new(r);
    let mut any = false;
    for line in reader.lines() {
        let line = line.map_err(|e| EngineError::Backend(format!("reading the backend's stream: {e}")))?;
        let Some(data) = line.strip_prefix("data:").map(str::trim) else { continue };
        if data == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(data).map_err(|e| {
            EngineError::Backend(b.redact(format!("the backend sent a chunk that is not JSON ({e}): {data}")))
        })?;
        if let Some(msg) = v.pointer("/error/message").and_then(Value::as_str) {
            return Err(EngineError::Backend(b.redact(format!("the backend failed mid-answer: {msg}"))));
        }
        acc.usage(&v);
        if v.get("choices").and_then(Value::as_array).is_some_and(|c| c.is_empty()) {
            continue; // the usage chunk
        }
        acc.add_choice(b, &v, true, on_text)?;
        any = true;
    }
    if !any {
        return Err(EngineError::Backend(format!("the backend's reply at {} has no choices", b.cfg.base_url)));
    }
    Ok(())
}

/// A reply being put together from a whole message or stream chunks.
#[derive(Default)]
struct Accumulated {
    content: String,
    /// `reasoning_content` (vLLM's reasoning parsers; `reasoning` in newer versions).
    reasoning: String,
    /// Structured calls by index: name and arguments text as they arrive.
    calls: Vec<(String, String)>,
    finish: Option<String>,
    timings: RequestTimings,
}

impl Accumulated {
    fn add_choice(&mut self, b: &RemoteBackend, v: &Value, delta: bool, on_text: &mut dyn FnMut(&str)) -> Result<()> {
        let choice = v.get("choices").and_then(Value::as_array).and_then(|c| c.first()).ok_or_else(|| {
            EngineError::Backend(format!("the backend's reply at {} has no choices", b.cfg.base_url))
        })?;
        let msg = choice.get(if delta { "delta" } else { "message" }).cloned().unwrap_or(Value::Null);
        for key in ["reasoning_content", "reasoning"] {
            if let Some(r) = msg.get(key).and_then(Value::as_str) {
                self.reasoning.push_str(r);
                break;
            }
        }
        let text = content_text(msg.get("content"));
        if !text.is_empty() {
            on_text(&text);
            self.content.push_str(&text);
        }
        for (i, call) in msg.get("tool_calls").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let index = call.get("index").and_then(Value::as_u64).map_or(i, |x| x as usize);
            if index > 64 {
                return Err(EngineError::Backend("the backend's reply has more than 64 tool calls".into()));
            }
            if self.calls.len() <= index {
                self.calls.resize(index + 1, (String::new(), String::new()));
            }
            let f = call.get("function").unwrap_or(call);
            if let Some(n) = f.get("name").and_then(Value::as_str) {
                self.calls[index].0.push_str(n);
            }
            match f.get("arguments") {
                Some(Value::String(s)) => self.calls[index].1.push_str(s),
                Some(o @ Value::Object(_)) => self.calls[index].1.push_str(&o.to_string()),
                _ => {}
            }
        }
        if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish = Some(f.to_string());
        }
        Ok(())
    }

    fn usage(&mut self, v: &Value) {
        let count = |k: &str| v.pointer(&format!("/usage/{k}")).and_then(Value::as_u64).map(|n| n as usize);
        if let Some(n) = count("prompt_tokens") {
            self.timings.prompt_tokens = n;
        }
        if let Some(n) = count("completion_tokens") {
            self.timings.completion_tokens = n;
        }
    }

    fn finish(self, b: &RemoteBackend) -> Result<Reply> {
        let mut text = self.content;
        for (name, args) in self.calls.into_iter().filter(|(n, _)| !n.is_empty()) {
            let arguments = if args.trim().is_empty() { "{}".to_string() } else { args };
            if serde_json::from_str::<Map<String, Value>>(&arguments).is_err() {
                let quoted: String = arguments.chars().take(QUOTE).collect();
                return Err(EngineError::Backend(b.redact(format!(
                    "the backend's tool call {name:?} has arguments that are not a JSON object: {quoted}"
                ))));
            }
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&tool_text::to_text(&name, &Value::String(arguments)));
        }
        let finish_reason = match self.finish.as_deref() {
            Some("length") => FinishReason::Length,
            _ => FinishReason::Stop,
        };
        Ok(Reply { text, reasoning: self.reasoning, finish_reason, timings: self.timings })
    }
}

/// A message's `content`: a string, or a list of parts whose text parts are joined.
fn content_text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect(),
        _ => String::new(),
    }
}

/// The request's messages in OpenAI's form. An assistant message's `<tool_call>` blocks become
/// structured `tool_calls` (ids `call_<message>_<k>`), and the tool messages after it answer
/// them in order.
fn messages(msgs: &[ChatMessage]) -> Result<Vec<Value>> {
    let mut out = Vec::with_capacity(msgs.len());
    let mut open_ids: std::collections::VecDeque<String> = Default::default();
    for (i, m) in msgs.iter().enumerate() {
        let role = match m.role {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        };
        let mut msg = Map::new();
        msg.insert("role".into(), json!(role));
        if m.role == Role::Assistant {
            let text: String = m.parts.iter().filter_map(|p| if let ContentPart::Text(t) = p { Some(t.as_str()) } else { None }).collect();
            let (content, calls) = tool_text::split(&text);
            msg.insert("content".into(), if content.is_empty() && !calls.is_empty() { Value::Null } else { json!(content) });
            open_ids.clear();
            if !calls.is_empty() {
                let structured: Vec<Value> = calls
                    .iter()
                    .enumerate()
                    .map(|(k, ToolCall { name, arguments })| {
                        let id = format!("call_{i}_{k}");
                        open_ids.push_back(id.clone());
                        json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments.to_string()}})
                    })
                    .collect();
                msg.insert("tool_calls".into(), Value::Array(structured));
            }
        } else {
            msg.insert("content".into(), content(&m.parts)?);
            if m.role == Role::Tool {
                let id = open_ids.pop_front().unwrap_or_else(|| format!("call_{i}"));
                msg.insert("tool_call_id".into(), json!(id));
            }
        }
        out.push(Value::Object(msg));
    }
    Ok(out)
}

fn content(parts: &[ContentPart]) -> Result<Value> {
    if let [ContentPart::Text(t)] = parts {
        return Ok(json!(t));
    }
    parts
        .iter()
        .map(|p| match p {
            ContentPart::Text(t) => Ok(json!({"type": "text", "text": t})),
            ContentPart::Image(src) => Ok(json!({"type": "image_url", "image_url": {"url": data_uri(src)?}})),
            ContentPart::Video(src) => Ok(json!({"type": "video_url", "video_url": {"url": video_data_uri(src)?}})),
        })
        .collect::<Result<Vec<_>>>()
        .map(Value::Array)
}

/// A video file as a `data:` URI (what vLLM's `video_url` takes). Frames (a rewind, a folder)
/// are not a file: a remote server cannot take them.
fn video_data_uri(src: &VideoSource) -> Result<String> {
    let bytes: Vec<u8> = match src {
        VideoSource::Bytes(b) => b.to_vec(),
        VideoSource::Path(p) => {
            // A regular file within the size limit (no FIFO or device is read).
            let limits = crate::video_file::VideoLimits::default();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut crate::video_file::open_file(p, &limits, true)?, &mut bytes)
                .map_err(|e| EngineError::InvalidVideo(format!("{}: cannot read it: {e}", p.display())))?;
            bytes
        }
        VideoSource::Frames { .. } | VideoSource::Clip(_) => {
            return Err(EngineError::InvalidVideo(
                "a remote server takes video files; frames (a rewind or a folder of images) need the local model".into(),
            ))
        }
    };
    let mime = if bytes.starts_with(&[0x1a, 0x45, 0xdf, 0xa3]) { "video/webm" } else { "video/mp4" };
    Ok(format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes)))
}

/// An image as a `data:` URI: encoded bytes as they are, a decoded image as PNG.
fn data_uri(src: &ImageSource) -> Result<String> {
    let bytes: Vec<u8> = match src {
        ImageSource::Bytes(b) => b.to_vec(),
        ImageSource::Path(p) => screenpilot_model::preprocess::read_image_file(p, 64 << 20, true)
            .map_err(|e| EngineError::InvalidImage(format!("{}: {e}", p.display())))?,
        ImageSource::Image(img) => {
            let mut out = Cursor::new(Vec::new());
            img.write_to(&mut out, image::ImageFormat::Png)
                .map_err(|e| EngineError::InvalidImage(format!("encoding a screenshot as PNG: {e}")))?;
            out.into_inner()
        }
    };
    let mime = match image::guess_format(&bytes) {
        Ok(image::ImageFormat::Jpeg) => "image/jpeg",
        Ok(image::ImageFormat::WebP) => "image/webp",
        Ok(image::ImageFormat::Gif) => "image/gif",
        Ok(image::ImageFormat::Bmp) => "image/bmp",
        _ => "image/png",
    };
    Ok(format!("data:{mime};base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes)))
}
