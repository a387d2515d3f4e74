//! The protocol side: [`ScreenServer`] is rmcp's `ServerHandler` over an [`McpCore`]. It
//! lists the tools the user exposed, checks each call's arguments ([`ToolCall::parse`]; a bad
//! call is an `invalid_params` error and the server goes on), runs it on a blocking thread and
//! turns the [`Reply`] into MCP content. Actions are confirmed by the user through the
//! client: with MCP 2026-07-28 and later the call returns `input_required` with a form
//! (`approve`: yes/no) and a one-time nonce, and the client retries with the answer; with
//! older protocol versions the server sends `elicitation/create` and waits. A client without
//! elicitation falls back to the app's dialog ([`super::AskUser`]); without one the action is
//! refused.

use std::sync::Arc;
use std::time::Instant;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ElicitRequest, ElicitRequestParams, ElicitResult,
    ElicitationAction, ElicitationSchema, Implementation, InputRequest, InputRequiredResult, ListToolsResult,
    PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{json, Value};

use screenpilot_agent::Decision;

use super::actions::{actions_off, Prepared};
use super::core::{McpCore, McpEvent, Reply, MAX_RUNNING_CALLS};
use super::tools::{ToolCall, ToolName};

/// The key of our one input request in an `input_required` result.
const CONFIRM_KEY: &str = "confirm";

const INSTRUCTIONS: &str = "ScreenPilot looks at the user's screen with a vision model running on this computer. \
Use ask_screen, describe_screen and find to learn what is on screen (answers are text and screen coordinates; the \
screenshot stays on the computer unless the user shared screenshots). click, type, key, scroll and do_task act only \
when the user allowed actions, and the user confirms each one.";

/// One client session's handler (cheap to clone: the core is shared).
#[derive(Clone)]
pub struct ScreenServer {
    core: Arc<McpCore>,
}

impl ScreenServer {
    /// A handler over `core`.
    pub fn new(core: Arc<McpCore>) -> Self {
        Self { core }
    }

    fn tools(&self) -> Vec<Tool> {
        self.core
            .config()
            .tools
            .into_iter()
            .map(|t| {
                let schema = match t.input_schema() {
                    Value::Object(m) => m,
                    _ => serde_json::Map::new(),
                };
                let mut hints = ToolAnnotations::new();
                // Hosts may skip their own prompt for read-only tools; acting ones say they act.
                hints.read_only_hint = Some(!t.acts());
                hints.destructive_hint = Some(t.acts());
                hints.open_world_hint = Some(false);
                let mut tool = Tool::new(t.as_str(), t.description(), Arc::new(schema));
                tool.annotations = Some(hints);
                tool
            })
            .collect()
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&McpCore) -> T + Send + 'static) -> Result<T, ErrorData> {
        let core = self.core.clone();
        tokio::task::spawn_blocking(move || f(&core)).await.map_err(|e| ErrorData::internal_error(format!("tool thread: {e}"), None))
    }

    /// Runs one call to its reply; `Err` only for protocol errors or an `input_required` step.
    async fn run(&self, tool: ToolName, call: ToolCall, request: &CallToolRequestParams, context: &RequestContext<RoleServer>, client: &str) -> Result<Step, ErrorData> {
        if !tool.acts() {
            return Ok(Step::Reply(self.blocking(move |c| c.query(&call)).await?));
        }
        if !self.core.config().allow_actions {
            // Through the agent anyway, so the refusal is in the audit log like any other.
            return Ok(Step::Reply(match call {
                ToolCall::DoTask { .. } => actions_off(),
                call => {
                    let client = client.to_string();
                    self.blocking(move |c| match c.prepare(&call) {
                        Ok(p) => c.act(&p, &client, Decision::Reject),
                        Err(r) => r,
                    })
                    .await?
                }
            }));
        }
        // What the user is asked about: the action checked against the screen, or the task.
        let asked = match call {
            ToolCall::DoTask { task, monitor, max_steps } => Asked::Task { task, monitor, max_steps },
            action => match self.blocking(move |core| core.prepare(&action)).await? {
                Ok(p) => Asked::Action(p),
                Err(r) => return Ok(Step::Reply(r)),
            },
        };
        let fingerprint = json!({"tool": tool.as_str(), "arguments": request.arguments}).to_string();
        let decision = match self.confirm(request, context, &fingerprint, &asked.question(client)).await? {
            Confirmation::Decided(d) => d,
            Confirmation::AskClient(r) => return Ok(Step::Input(r)),
            Confirmation::Impossible => {
                return Ok(Step::Reply(Reply::Refused(
                    "refused: this MCP client cannot ask the user to confirm the action (it has no elicitation support) and no \
                     ScreenPilot window is open to ask; nothing was done"
                        .into(),
                )))
            }
        };
        let client = client.to_string();
        Ok(Step::Reply(match asked {
            Asked::Task { task, monitor, max_steps } => {
                self.blocking(move |c| c.task(&task, monitor, max_steps, decision == Decision::Approve)).await?
            }
            // The action runs on the capture the user's question was about: what was confirmed
            // is what runs (a retried call prepares it again from its same arguments).
            Asked::Action(p) => self.blocking(move |c| c.act(&p, &client, decision)).await?,
        }))
    }

    /// Gets the user's answer: from a retried call's `inputResponses`, by asking the client
    /// (an `input_required` result, or `elicitation/create` on older protocol versions), or
    /// through the app's dialog.
    async fn confirm(&self, request: &CallToolRequestParams, context: &RequestContext<RoleServer>, fingerprint: &str, question: &str) -> Result<Confirmation, ErrorData> {
        if let Some(state) = &request.request_state {
            if !self.core.take(state, fingerprint) {
                return Err(ErrorData::invalid_params("unknown, expired or reused confirmation: call the tool again", None));
            }
            let answer = request.input_responses.as_ref().and_then(|r| r.get(CONFIRM_KEY)).cloned();
            let answer: Option<ElicitResult> = answer.and_then(|v| serde_json::from_value(v).ok());
            return Ok(Confirmation::Decided(approved(answer.as_ref())));
        }
        let can_elicit = context.client_capabilities().is_some_and(|c| c.elicitation.is_some());
        let modern = context.protocol_version().is_some_and(|v| v.as_str() >= ProtocolVersion::V_2026_07_28.as_str());
        if can_elicit {
            let params = form(question)?;
            if modern {
                let nonce = self.core.remember(fingerprint.to_string());
                let requests = [(CONFIRM_KEY.to_string(), InputRequest::Elicitation(ElicitRequest::new(params)))].into_iter().collect();
                return Ok(Confirmation::AskClient(InputRequiredResult::new(Some(requests), Some(nonce))));
            }
            return match context.peer.create_elicitation(params).await {
                Ok(answer) => Ok(Confirmation::Decided(approved(Some(&answer)))),
                Err(e) => Err(ErrorData::internal_error(format!("asking the user through the client failed: {e}"), None)),
            };
        }
        match self.core.ask_user() {
            Some(ask) => {
                let q = question.to_string();
                let d = tokio::task::spawn_blocking(move || ask.ask(&q)).await.map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
                Ok(Confirmation::Decided(d))
            }
            None => Ok(Confirmation::Impossible),
        }
    }
}

/// What the user is asked to allow: one action checked against the screen, or a whole task.
enum Asked {
    Action(Prepared),
    Task { task: String, monitor: Option<usize>, max_steps: u32 },
}

impl Asked {
    fn question(&self, client: &str) -> String {
        match self {
            Asked::Action(p) => format!("{client} wants ScreenPilot to {}. Allow it this once?", p.description),
            Asked::Task { task, monitor, max_steps } => {
                let on = monitor.map_or("the primary monitor".to_string(), |m| format!("monitor {m}"));
                format!("{client} wants ScreenPilot to carry out this task on {on}, taking up to {max_steps} actions without asking again: {task:?}. Allow it?")
            }
        }
    }
}

enum Step {
    Reply(Reply),
    Input(InputRequiredResult),
}

enum Confirmation {
    Decided(Decision),
    AskClient(InputRequiredResult),
    Impossible,
}

/// The yes/no form the user fills in.
fn form(question: &str) -> Result<ElicitRequestParams, ErrorData> {
    let schema = ElicitationSchema::builder().required_bool("approve").build().map_err(|e| ErrorData::internal_error(e, None))?;
    Ok(ElicitRequestParams::FormElicitationParams { meta: None, message: question.to_string(), requested_schema: schema })
}

/// Approved only when the user accepted the form with `approve: true`.
fn approved(answer: Option<&ElicitResult>) -> Decision {
    match answer {
        Some(r) if r.action == ElicitationAction::Accept && r.content.as_ref().and_then(|c| c.get("approve")).and_then(Value::as_bool) == Some(true) => {
            Decision::Approve
        }
        _ => Decision::Reject,
    }
}

fn to_result(reply: Reply) -> Result<CallToolResult, ErrorData> {
    Ok(match reply {
        Reply::Done { text, structured, png } => {
            let mut content = Vec::new();
            if !text.is_empty() {
                content.push(ContentBlock::text(text));
            }
            if let Some(png) = png {
                use base64::Engine as _;
                content.push(ContentBlock::image(base64::engine::general_purpose::STANDARD.encode(png), "image/png"));
            }
            let mut r = CallToolResult::success(content);
            r.structured_content = structured;
            r
        }
        Reply::Refused(m) | Reply::Failed(m) => CallToolResult::error(vec![ContentBlock::text(m)]),
        Reply::Bad(m) => return Err(ErrorData::invalid_params(m, None)),
    })
}

impl ServerHandler for ScreenServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("screenpilot", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(&self, _request: Option<PaginatedRequestParams>, _context: RequestContext<RoleServer>) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    async fn call_tool(&self, request: CallToolRequestParams, context: RequestContext<RoleServer>) -> Result<CallToolResponse, ErrorData> {
        let started = Instant::now();
        let client = context.client_info().map_or_else(|| "an MCP client".to_string(), |i| i.name);
        let name = request.name.to_string();
        let event = |result: &str, detail: String| McpEvent {
            client: client.clone(),
            tool: name.chars().take(64).collect(),
            result: result.to_string(),
            detail,
            ms: started.elapsed().as_secs_f64() * 1000.0,
            at_ms: crate::threads::now_ms(),
        };
        let tool = match name.parse::<ToolName>() {
            Ok(t) if self.core.config().tools.contains(&t) => t,
            _ => {
                self.core.emit(event("bad_request", "unknown tool".into()));
                return Err(ErrorData::invalid_params(format!("unknown tool {:?}", name.chars().take(64).collect::<String>()), None));
            }
        };
        let call = match ToolCall::parse(tool, request.arguments.as_ref()) {
            Ok(c) => c,
            Err(e) => {
                self.core.emit(event("bad_request", e.clone()));
                return Err(ErrorData::invalid_params(format!("{}: {e}", tool.as_str()), None));
            }
        };
        let Some(_permit) = self.core.try_begin() else {
            let m = format!("busy: {MAX_RUNNING_CALLS} calls are running; try again when one has finished");
            self.core.emit(event("refused", m.clone()));
            return Ok(CallToolResponse::Complete(CallToolResult::error(vec![ContentBlock::text(m)])));
        };
        match self.run(tool, call, &request, &context, &client).await {
            Ok(Step::Input(r)) => {
                self.core.emit(event("confirming", "asked the user through the client".into()));
                Ok(CallToolResponse::InputRequired(r))
            }
            Ok(Step::Reply(reply)) => {
                let detail = match &reply {
                    Reply::Done { text, .. } => text.lines().next().unwrap_or("").chars().take(160).collect(),
                    Reply::Refused(m) | Reply::Failed(m) | Reply::Bad(m) => m.chars().take(160).collect(),
                };
                self.core.emit(event(reply.kind(), detail));
                to_result(reply).map(CallToolResponse::Complete)
            }
            Err(e) => {
                self.core.emit(event("bad_request", e.message.to_string()));
                Err(e)
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "handler_tests.rs"]
mod tests;
