//! GUI tasks over any backend: [`BackendBrain`] is the agent's [`Brain`] answered by an engine
//! [`Backend`] (the local engine or an OpenAI-compatible server), so the CLI's `do` and the
//! app's Task mode run the same agent loop on the same generation path.
//!
//! A [`BrainRequest`] becomes an engine [`Request`]: the system prompt, the `computer_use` tool
//! schema as the request's tools (the engine, or the remote server's template, writes the tools
//! block), the task and screenshots as user turns, the model's earlier outputs as assistant
//! turns, and each step's feedback and new screenshot as a tool result. Screenshots are
//! converted once and reused while they stay in the conversation, so the local engine's vision
//! and prefix caches see the same images every step and only the newest is encoded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::{DynamicImage, RgbImage};
use screenpilot_agent::{Brain, BrainError, BrainRequest, Content, OsPoint, Role as AgentRole, ScreenAction};
use screenpilot_engine::backend::{Backend, RemoteBackend, RemoteConfig};
use screenpilot_engine::{ChatMessage, ContentPart, GenerationOptions, ImageSource, Request, RequestTimings, Role};

/// Where an answer's pieces of text go as they arrive.
type TextSink = Box<dyn FnMut(&str) + Send>;

/// Answers for the agent loop from a [`Backend`].
pub struct BackendBrain {
    backend: Arc<dyn Backend>,
    /// Generation options of every step (greedy, 512 tokens by default).
    pub options: GenerationOptions,
    /// Screenshots already converted, by the address of the agent's image (kept alive here).
    images: HashMap<usize, (Arc<RgbImage>, Arc<DynamicImage>)>,
    /// Called with each piece of an answer as it arrives.
    on_text: Option<TextSink>,
    /// Timings and wall time of each answer so far.
    pub steps: Vec<StepTiming>,
}

/// What one model step cost.
#[derive(Debug, Clone, PartialEq)]
pub struct StepTiming {
    /// Wall time of the backend call.
    pub wall: Duration,
    /// The backend's own report (a remote backend fills in only token counts).
    pub timings: RequestTimings,
}

impl BackendBrain {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            options: GenerationOptions { max_tokens: 512, ..GenerationOptions::default() },
            images: HashMap::new(),
            on_text: None,
            steps: Vec::new(),
        }
    }

    /// Streams each answer's text to `f` as it is generated.
    pub fn on_text(mut self, f: impl FnMut(&str) + Send + 'static) -> Self {
        self.on_text = Some(Box::new(f));
        self
    }

    /// The engine request for one agent request.
    pub fn request(&mut self, req: &BrainRequest) -> Request {
        let mut live = HashMap::new();
        let mut messages = vec![ChatMessage::text(Role::System, req.system_prompt.clone())];
        for turn in &req.turns {
            let role = match turn.role {
                AgentRole::User => Role::User,
                AgentRole::Assistant => Role::Assistant,
                AgentRole::Tool => Role::Tool,
            };
            let parts = turn
                .content
                .iter()
                .map(|c| match c {
                    Content::Text(t) => ContentPart::Text(t.clone()),
                    Content::Image(img) => {
                        let key = Arc::as_ptr(img) as usize;
                        let entry = self.images.remove(&key).unwrap_or_else(|| {
                            (img.clone(), Arc::new(DynamicImage::ImageRgb8(img.as_ref().clone())))
                        });
                        let dynamic = entry.1.clone();
                        live.insert(key, entry);
                        ContentPart::Image(ImageSource::Image(dynamic))
                    }
                })
                .collect();
            messages.push(ChatMessage { role, parts });
        }
        // Screenshots that left the conversation are let go.
        self.images = live;
        Request { messages, options: self.options.clone(), tools: req.tools.clone() }
    }
}

impl Brain for BackendBrain {
    fn respond(&mut self, req: &BrainRequest) -> Result<String, BrainError> {
        let request = self.request(req);
        let start = Instant::now();
        let mut sink = self.on_text.take();
        let result = self.backend.chat(request, &mut |t| {
            if let Some(f) = sink.as_mut() {
                f(t)
            }
        });
        self.on_text = sink;
        let reply = result?;
        self.steps.push(StepTiming { wall: start.elapsed(), timings: reply.timings });
        Ok(reply.text)
    }
}

/// An OpenAI-compatible server at `url` (a base URL ending in `/v1`) as a backend, asking for
/// `model` (None: the first it lists) with `api_key` (None or empty: none), which goes only
/// into the `Authorization` header. Connecting lists the server's models.
pub fn connect_remote(url: &str, model: Option<String>, api_key: Option<String>) -> crate::Result<Arc<dyn Backend>> {
    let mut cfg = RemoteConfig::new(url);
    cfg.model = model;
    cfg.api_key = api_key.filter(|k| !k.is_empty());
    Ok(Arc::new(RemoteBackend::connect(cfg)?))
}

/// One line a person can check before saying yes: what, where (screen pixels), what text.
pub fn describe(action: &ScreenAction) -> String {
    let at = |p: &Option<OsPoint>| p.map(|p| format!(" at ({}, {})", p.x, p.y)).unwrap_or_default();
    match action {
        ScreenAction::Key { keys } => {
            format!("press {}", keys.iter().map(|k| k.name()).collect::<Vec<_>>().join("+"))
        }
        ScreenAction::Type { text } => format!("type {text:?}"),
        ScreenAction::MoveTo { to } => format!("move the pointer to ({}, {})", to.x, to.y),
        ScreenAction::Click { button, count, at: p } => {
            let what = match count {
                1 => "click",
                2 => "double-click",
                3 => "triple-click",
                _ => "click several times",
            };
            format!("{button:?} {what}{}", at(p)).to_lowercase()
        }
        ScreenAction::Drag { to } => format!("drag to ({}, {})", to.x, to.y),
        ScreenAction::Scroll { axis, notches, at: p } => format!("scroll {axis:?} by {notches} notches{}", at(p)).to_lowercase(),
        ScreenAction::Wait { duration } => format!("wait {:.1} s", duration.as_secs_f64()),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use screenpilot_agent::{computer_use_tool, Turn};
    use screenpilot_engine::backend::Reply;
    use screenpilot_engine::FinishReason;
    use std::sync::Mutex;

    struct Echo(Mutex<Vec<Request>>);

    impl Backend for Echo {
        fn chat(&self, request: Request, on_text: &mut dyn FnMut(&str)) -> screenpilot_engine::Result<Reply> {
            self.0.lock().unwrap().push(request);
            on_text("ok");
            Ok(Reply { text: "ok".into(), reasoning: String::new(), finish_reason: FinishReason::Stop, timings: RequestTimings::default() })
        }
        fn describe(&self) -> String {
            "echo".into()
        }
    }

    #[test]
    fn agent_turns_become_system_user_assistant_and_tool_messages_with_each_screenshot_converted_once() {
        let echo = Arc::new(Echo(Mutex::new(Vec::new())));
        let mut brain = BackendBrain::new(echo.clone());
        let shot1 = Arc::new(RgbImage::from_pixel(8, 6, image::Rgb([1, 2, 3])));
        let shot2 = Arc::new(RgbImage::from_pixel(8, 6, image::Rgb([4, 5, 6])));
        let mut turns = vec![Turn { role: AgentRole::User, content: vec![Content::Text("task".into()), Content::Image(shot1.clone())] }];
        let tool = computer_use_tool(1000, 1000);
        let req = |turns: &Vec<Turn>| BrainRequest { system_prompt: "sys".into(), tools: vec![tool.clone()], turns: turns.clone() };
        assert_eq!(brain.respond(&req(&turns)).unwrap(), "ok");
        turns.push(Turn::text(AgentRole::Assistant, "<tool_call>{}</tool_call>"));
        turns.push(Turn { role: AgentRole::Tool, content: vec![Content::Image(shot2.clone())] });
        brain.respond(&req(&turns)).unwrap();
        let sent = echo.0.lock().unwrap();
        let r = &sent[1];
        let roles: Vec<Role> = r.messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, vec![Role::System, Role::User, Role::Assistant, Role::Tool]);
        assert_eq!(r.tools, vec![tool.clone()]);
        let first = |r: &Request| match &r.messages[1].parts[1] {
            ContentPart::Image(ImageSource::Image(i)) => i.clone(),
            other => panic!("{other:?}"),
        };
        // The first screenshot is the same converted image in both requests (no copy per step).
        assert!(Arc::ptr_eq(&first(&sent[0]), &first(r)));
        assert_eq!(first(r).to_rgb8(), *shot1);
        assert_eq!(brain.steps.len(), 2);
        // Only screenshots still in the conversation are kept.
        drop(sent);
        brain.respond(&req(&vec![turns[2].clone()])).unwrap();
        assert_eq!(brain.images.len(), 1);
    }
}
