//! What each MCP tool does, free of the protocol: [`McpCore`] answers a checked
//! [`ToolCall`] with a [`Reply`]. Questions go to the one [`Backend`] (the local engine, whose
//! vision and prefix caches make a second question about an unchanged screen cheap); actions
//! are in [`super::actions`]. It also keeps the settings, the stop flag, the one-time
//! confirmation nonces and the cap on running calls. Everything here blocks; the protocol side
//! ([`super::handler`]) runs it on blocking threads.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use image::DynamicImage;
use serde::Serialize;
use serde_json::{json, Value};

use screenpilot_agent::capture::frame_difference;
use screenpilot_agent::grounding::{grounding_prompt, locate};
use screenpilot_agent::json_extract::first_json_value;
use screenpilot_agent::{Actuator, AgentError, Decision, Screenshot, StopFlag};
use screenpilot_engine::backend::Backend;
use screenpilot_engine::{ChatMessage, ContentPart, GenerationOptions, ImageSource, Request, RequestTimings, Role};

use super::screens::{capture_target, Screens};
use super::tools::{Target, ToolCall, ToolName};
use crate::error::DesktopError;
use crate::task_runner::lock;
use crate::screen::{geometry_view, png_bytes};

/// What the user allowed MCP clients.
#[derive(Debug, Clone, PartialEq)]
pub struct McpConfig {
    /// The tools clients see; calling another is an unknown tool.
    pub tools: BTreeSet<ToolName>,
    /// `screenshot` returns pixels (off: clients get text and coordinates only).
    pub share_screenshots: bool,
    /// Action tools may act (each still confirmed by the user).
    pub allow_actions: bool,
    /// Tokens per answer.
    pub max_tokens: usize,
    /// The hash-chained audit log every action decision goes to.
    pub audit: Option<PathBuf>,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self { tools: ToolName::ALL.into_iter().collect(), share_screenshots: false, allow_actions: false, max_tokens: 256, audit: None }
    }
}

/// One tool's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// It ran: text for the host's model, the same as structured JSON, maybe a PNG.
    Done { text: String, structured: Option<Value>, png: Option<Vec<u8>> },
    /// Not allowed or not confirmed (a tool error the client's model reads).
    Refused(String),
    /// It ran and failed: capture, model, input (a tool error).
    Failed(String),
    /// The arguments name something that is not there (a protocol error: invalid params).
    Bad(String),
}

impl Reply {
    pub(super) fn text(text: String, structured: Value) -> Self {
        Reply::Done { text, structured: Some(structured), png: None }
    }

    /// `ok`, `refused`, `failed` or `bad_request`.
    pub fn kind(&self) -> &'static str {
        match self {
            Reply::Done { .. } => "ok",
            Reply::Refused(_) => "refused",
            Reply::Failed(_) => "failed",
            Reply::Bad(_) => "bad_request",
        }
    }
}

impl From<DesktopError> for Reply {
    fn from(e: DesktopError) -> Self {
        match e {
            DesktopError::InvalidArgument(m) => Reply::Bad(m),
            other => Reply::Failed(other.to_string()),
        }
    }
}

/// What the app shows about MCP clients.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct McpEvent {
    /// The client's name (from its `clientInfo`).
    pub client: String,
    /// The tool called.
    pub tool: String,
    /// `ok`, `refused`, `failed`, `bad_request` or `confirming` (waiting for the user).
    pub result: String,
    /// One line about it.
    pub detail: String,
    /// How long it took.
    pub ms: f64,
    /// When it ended, milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// Gives the model that answers now (None: none loaded).
pub type BackendSource = Arc<dyn Fn() -> Option<Arc<dyn Backend>> + Send + Sync>;

/// Receives every [`McpEvent`].
pub type EventSink = Arc<dyn Fn(McpEvent) + Send + Sync>;

/// Asks the person at the screen about an action when the client cannot (no elicitation): the
/// app's dialog. None: such actions are refused.
pub trait AskUser: Send + Sync {
    /// `question` names the client and the action.
    fn ask(&self, question: &str) -> Decision;
}

/// Most tool calls running at once, over every client: a host polling `wait_for_change` or
/// asking in a loop cannot pile up blocking threads; one call more gets a "busy" tool error.
pub const MAX_RUNNING_CALLS: usize = 8;

/// How long an unanswered confirmation stays valid.
const PENDING_TTL: Duration = Duration::from_secs(600);
/// Most confirmations waiting at once.
const MAX_PENDING: usize = 64;

const DESCRIBE_PROMPT: &str = "Describe this screen for someone who cannot see it. Reply with JSON only: \
{\"application\": \"the application in front\", \"windows\": [\"titles of the visible windows\"], \
\"dialogs\": [\"each dialog, error or notification and what it says\"], \"main_content\": \"one sentence\", \
\"notable_text\": [\"important text you can read\"]}";

/// The tools' logic, shared by every client session.
pub struct McpCore {
    config: RwLock<McpConfig>,
    backend: RwLock<Option<BackendSource>>,
    pub(super) screens: Arc<dyn Screens>,
    pub(super) actuator: Arc<Mutex<Box<dyn Actuator + Send>>>,
    stop: Mutex<StopFlag>,
    events: RwLock<Option<EventSink>>,
    ask_user: RwLock<Option<Arc<dyn AskUser>>>,
    /// Confirmations asked through a retried call (MCP 2026-07-28): nonce -> (call, asked at).
    pending: Mutex<HashMap<String, (String, Instant)>>,
    /// Permits of the calls running ([`MAX_RUNNING_CALLS`]).
    running: Arc<tokio::sync::Semaphore>,
}

/// A running call's place among the [`MAX_RUNNING_CALLS`]; dropped when it ends.
pub struct CallPermit(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

fn read<T: Clone>(l: &RwLock<T>) -> T {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

fn write<T>(l: &RwLock<T>, v: T) {
    *l.write().unwrap_or_else(std::sync::PoisonError::into_inner) = v;
}

impl McpCore {
    /// A core over these screens and this input device, with `config`.
    pub fn new(config: McpConfig, screens: Arc<dyn Screens>, actuator: Arc<Mutex<Box<dyn Actuator + Send>>>) -> Self {
        Self {
            config: RwLock::new(config),
            backend: RwLock::new(None),
            screens,
            actuator,
            stop: Mutex::new(StopFlag::new()),
            events: RwLock::new(None),
            ask_user: RwLock::new(None),
            pending: Mutex::new(HashMap::new()),
            running: Arc::new(tokio::sync::Semaphore::new(MAX_RUNNING_CALLS)),
        }
    }

    /// A place for one more call, or None while [`MAX_RUNNING_CALLS`] run.
    pub fn try_begin(&self) -> Option<CallPermit> {
        self.running.clone().try_acquire_owned().ok().map(CallPermit)
    }

    /// The model that answers (None: questions fail until one is loaded).
    pub fn set_backend(&self, backend: Option<Arc<dyn Backend>>) {
        let source: Option<BackendSource> = backend.map(|b| Arc::new(move || Some(b.clone())) as BackendSource);
        write(&self.backend, source);
    }

    /// Asks `source` for the model at each call (the app: whatever model is loaded now).
    pub fn set_backend_source(&self, source: BackendSource) {
        write(&self.backend, Some(source));
    }

    /// New settings, applied to the next call.
    pub fn set_config(&self, config: McpConfig) {
        write(&self.config, config);
    }

    /// The settings.
    pub fn config(&self) -> McpConfig {
        read(&self.config)
    }

    /// Where [`McpEvent`]s go.
    pub fn on_event(&self, sink: EventSink) {
        write(&self.events, Some(sink));
    }

    /// Who is asked when a client cannot ask.
    pub fn set_ask_user(&self, ask: Option<Arc<dyn AskUser>>) {
        write(&self.ask_user, ask);
    }

    pub(crate) fn ask_user(&self) -> Option<Arc<dyn AskUser>> {
        read(&self.ask_user)
    }

    pub(crate) fn emit(&self, event: McpEvent) {
        if let Some(sink) = read(&self.events) {
            sink(event);
        }
    }

    /// The global stop: the running action or task stops before its next input event; later
    /// calls run again.
    pub fn stop_all(&self) {
        let mut s = lock(&self.stop);
        s.raise();
        *s = StopFlag::new();
    }

    pub(super) fn stop_flag(&self) -> StopFlag {
        lock(&self.stop).clone()
    }

    pub(super) fn backend(&self) -> std::result::Result<Arc<dyn Backend>, Reply> {
        read(&self.backend).and_then(|source| source()).ok_or_else(|| Reply::Failed("no model is loaded in ScreenPilot yet".into()))
    }

    /// Runs a call that does not act.
    pub fn query(&self, call: &ToolCall) -> Reply {
        let result = match call {
            ToolCall::ListMonitors => self.screens.monitors().map(|m| {
                let text = m.iter().map(|m| format!("{}: {} {}x{} at ({}, {})", m.index, m.name, m.width, m.height, m.x, m.y)).collect::<Vec<_>>().join("\n");
                Reply::text(text, json!({ "monitors": m }))
            }),
            ToolCall::ListWindows => self.screens.windows().map(|w| {
                let text = w.iter().map(|w| format!("{}: {} ({})", w.id, w.title, w.app)).collect::<Vec<_>>().join("\n");
                Reply::text(text, json!({ "windows": w }))
            }),
            ToolCall::AskScreen { question, target } => return self.ask(question, *target),
            ToolCall::DescribeScreen { target } => return self.describe(*target),
            ToolCall::Find { description, target } => return self.find(description, *target),
            ToolCall::Screenshot { target } => return self.screenshot(*target),
            ToolCall::WaitForChange { timeout_ms, threshold, target } => return self.wait_for_change(*timeout_ms, *threshold, *target),
            _ => return Reply::Bad("not a query".into()),
        };
        result.unwrap_or_else(Reply::from)
    }

    fn chat(&self, shot: &Screenshot, prompt: &str) -> std::result::Result<(String, RequestTimings), Reply> {
        let backend = self.backend()?;
        let image = Arc::new(DynamicImage::ImageRgb8(shot.image.as_ref().clone()));
        let parts = vec![ContentPart::Image(ImageSource::Image(image)), ContentPart::Text(prompt.to_string())];
        let options = GenerationOptions { max_tokens: self.config().max_tokens, ..GenerationOptions::default() };
        let request = Request { messages: vec![ChatMessage { role: Role::User, parts }], options, tools: Vec::new() };
        let reply = backend.chat(request, &mut |_| {}).map_err(|e| Reply::Failed(format!("model: {e}")))?;
        Ok((reply.text, reply.timings))
    }

    fn look(&self, target: Target, prompt: &str) -> std::result::Result<(Screenshot, String, Value), Reply> {
        let shot = capture_target(self.screens.as_ref(), target)?;
        let (text, timings) = self.chat(&shot, prompt)?;
        let meta = json!({ "capture": capture_json(&shot), "timings": timings });
        Ok((shot, text, meta))
    }

    fn ask(&self, question: &str, target: Target) -> Reply {
        match self.look(target, question) {
            Ok((_, answer, mut meta)) => {
                meta["answer"] = json!(answer);
                Reply::text(answer, meta)
            }
            Err(r) => r,
        }
    }

    fn describe(&self, target: Target) -> Reply {
        match self.look(target, DESCRIBE_PROMPT) {
            Ok((_, summary, mut meta)) => {
                meta["fields"] = first_json_value(&summary).filter(Value::is_object).unwrap_or(Value::Null);
                meta["summary"] = json!(summary);
                Reply::text(summary, meta)
            }
            Err(r) => r,
        }
    }

    fn find(&self, description: &str, target: Target) -> Reply {
        let (shot, output, mut meta) = match self.look(target, &grounding_prompt(description)) {
            Ok(x) => x,
            Err(r) => return r,
        };
        let (objects, note) = match locate(&output, &shot.geometry) {
            Ok(found) => (found, None),
            Err(AgentError::NotFound { .. }) => (Vec::new(), Some("the model found nothing matching".to_string())),
            Err(e) => (Vec::new(), Some(format!("the model's answer was not usable: {e}"))),
        };
        let lines: Vec<String> = objects
            .iter()
            .map(|o| {
                let bbox = o.bbox.map(|[a, b]| format!(", box ({}, {})-({}, {})", a.x, a.y, b.x, b.y)).unwrap_or_default();
                format!("{}: click ({}, {}){bbox}", o.label.as_deref().unwrap_or("match"), o.point.x, o.point.y)
            })
            .collect();
        let objects: Vec<Value> = objects
            .iter()
            .map(|o| {
                let mut v = json!({"label": o.label, "point": [o.point.x, o.point.y]});
                if let Some([a, b]) = o.bbox {
                    v["bbox"] = json!([a.x, a.y, b.x, b.y]);
                }
                v
            })
            .collect();
        meta["objects"] = json!(objects);
        meta["model_output"] = json!(output);
        meta["note"] = json!(note);
        let text = if lines.is_empty() { note.unwrap_or_default() } else { lines.join("\n") };
        Reply::text(text, meta)
    }

    fn screenshot(&self, target: Target) -> Reply {
        if !self.config().share_screenshots {
            return Reply::Refused(
                "screenshots are not shared with MCP clients: the user has not allowed it (ScreenPilot Settings → MCP, or \
                 `screenpilot mcp --share-screenshots`). ask_screen, describe_screen and find answer from the screen without sending it."
                    .into(),
            );
        }
        let shot = match capture_target(self.screens.as_ref(), target) {
            Ok(s) => s,
            Err(e) => return e.into(),
        };
        match png_bytes(&shot.image) {
            Ok(png) => Reply::Done { text: String::new(), structured: Some(json!({ "capture": capture_json(&shot) })), png: Some(png) },
            Err(e) => e.into(),
        }
    }

    fn wait_for_change(&self, timeout_ms: u64, threshold: f64, target: Target) -> Reply {
        let start = Instant::now();
        let first = match capture_target(self.screens.as_ref(), target) {
            Ok(s) => s,
            Err(e) => return e.into(),
        };
        let stop = self.stop_flag();
        let timeout = Duration::from_millis(timeout_ms);
        let (changed, difference) = loop {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() || stop.sleep(left.min(Duration::from_millis(200))).is_err() {
                break (false, 0.0);
            }
            match capture_target(self.screens.as_ref(), target) {
                Ok(now) => {
                    let d = frame_difference(&first.image, &now.image);
                    if d >= threshold {
                        break (true, d);
                    }
                }
                // The window closed or the monitor went away: that is a change.
                Err(DesktopError::InvalidArgument(_)) => break (true, 1.0),
                Err(e) => return e.into(),
            }
        };
        let waited_ms = start.elapsed().as_secs_f64() * 1000.0;
        let text = if changed { format!("the screen changed after {waited_ms:.0} ms") } else { format!("no change in {waited_ms:.0} ms") };
        Reply::text(text, json!({"changed": changed, "waited_ms": waited_ms, "difference": difference}))
    }

    /// Remembers a confirmation asked of the client for `call` (its tool and arguments as
    /// JSON); the nonce goes back with the client's answer.
    pub fn remember(&self, call: String) -> String {
        let mut pending = lock(&self.pending);
        pending.retain(|_, (_, at)| at.elapsed() < PENDING_TTL);
        if pending.len() >= MAX_PENDING {
            if let Some(oldest) = pending.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| k.clone()) {
                pending.remove(&oldest);
            }
        }
        let nonce: String = (0..4).map(|_| format!("{:08x}", rand::random::<u32>())).collect();
        pending.insert(nonce.clone(), (call, Instant::now()));
        nonce
    }

    /// Takes the confirmation `nonce` if it was asked for this very `call` and has not expired
    /// (each answer counts once).
    pub fn take(&self, nonce: &str, call: &str) -> bool {
        let mut pending = lock(&self.pending);
        match pending.remove(nonce) {
            Some((c, at)) => c == call && at.elapsed() < PENDING_TTL,
            None => false,
        }
    }
}

/// The capture's place on the screen, for clients.
fn capture_json(shot: &Screenshot) -> Value {
    let v = geometry_view(&shot.geometry);
    json!({
        "monitor": v.monitor,
        "x": v.origin_x, "y": v.origin_y,
        "width": f64::from(v.image_width) * v.scale_x, "height": f64::from(v.image_height) * v.scale_y,
        "image_width": v.image_width, "image_height": v.image_height,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "core_tests.rs"]
mod tests;
