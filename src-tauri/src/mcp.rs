//! The app's MCP server: while Settings → MCP is on, the app serves MCP clients over
//! streamable HTTP on 127.0.0.1 (bearer token when one is set), answering with the model the
//! app has loaded. Every call goes out as the `mcp` event and into a short list the UI shows
//! ("what did the client call?"); actions a client cannot confirm through MCP elicitation
//! are asked in a native dialog; the stop hotkey and the tray's Stop stop them. Action
//! decisions go to `mcp-audit.jsonl` in the data folder, as the CLI's do.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tauri::{AppHandle, Emitter};
use tauri_plugin_dialog::{DialogExt, MessageDialogButtons, MessageDialogKind};

use screenpilot_agent::enigo_backend::input_or_reason;
use screenpilot_agent::Decision;
use screenpilot_desktop::mcp::screens::DesktopScreens;
use screenpilot_desktop::mcp::serve::{CancellationToken, HttpServer};
use screenpilot_desktop::mcp::{AskUser, McpCore, McpEvent};
use screenpilot_desktop::session::Session;
use screenpilot_desktop::settings::{FieldError, Settings};

use crate::state::lock;

/// Calls the UI lists at most.
const RECENT: usize = 50;

/// The MCP server as the app runs it.
pub struct McpHost {
    /// The tools' logic (the stop hotkey calls its `stop_all`).
    pub core: Arc<McpCore>,
    audit: PathBuf,
    running: Mutex<Option<Running>>,
    recent: Arc<Mutex<VecDeque<McpEvent>>>,
    /// Why it does not serve although it should (a port in use at start).
    error: Mutex<Option<String>>,
}

struct Running {
    port: u16,
    token: Option<String>,
    server: CancellationToken,
}

/// What Settings → MCP shows.
#[derive(Debug, Clone, Serialize)]
pub struct McpStatus {
    /// The URL clients use, while serving.
    pub url: Option<String>,
    /// The latest calls, newest first.
    pub calls: Vec<McpEvent>,
    /// Why it is not serving although switched on.
    pub error: Option<String>,
}

/// Asks the person at the screen in a native dialog.
struct DialogAsk(AppHandle);

impl AskUser for DialogAsk {
    fn ask(&self, question: &str) -> Decision {
        let yes = self
            .0
            .dialog()
            .message(question)
            .title("ScreenPilot: allow this action?")
            .kind(MessageDialogKind::Warning)
            .buttons(MessageDialogButtons::OkCancelCustom("Allow once".into(), "Don't allow".into()))
            .blocking_show();
        if yes {
            Decision::Approve
        } else {
            Decision::Reject
        }
    }
}

impl McpHost {
    /// The host; nothing listens until [`McpHost::apply`] finds MCP on.
    pub fn new(app: &AppHandle, session: Arc<Session>, data_dir: &std::path::Path, settings: &Settings) -> Self {
        let audit = data_dir.join("mcp-audit.jsonl");
        let core = Arc::new(McpCore::new(settings.mcp_config(audit.clone()), Arc::new(DesktopScreens), Arc::new(Mutex::new(input_or_reason()))));
        core.set_backend_source(Arc::new(move || session.assistant().and_then(|a| a.backend())));
        let recent: Arc<Mutex<VecDeque<McpEvent>>> = Arc::default();
        let (list, handle) = (recent.clone(), app.clone());
        core.on_event(Arc::new(move |ev: McpEvent| {
            {
                let mut l = lock(&list);
                l.push_front(ev.clone());
                l.truncate(RECENT);
            }
            let _ = handle.emit("mcp", ev);
        }));
        core.set_ask_user(Some(Arc::new(DialogAsk(app.clone()))));
        Self { core, audit, running: Mutex::new(None), recent, error: Mutex::new(None) }
    }

    /// Serves, stops or restarts as `settings` say, and passes the new permissions on. A port
    /// that cannot be bound is an `mcp_port` field error (and nothing serves).
    pub async fn apply(&self, settings: &Settings) -> Result<(), FieldError> {
        self.core.set_config(settings.mcp_config(self.audit.clone()));
        let token = settings.mcp_token.clone().filter(|t| !t.is_empty());
        let same = lock(&self.running).as_ref().is_some_and(|r| r.port == settings.mcp_port && r.token == token);
        if settings.mcp_enabled && same {
            return Ok(());
        }
        if let Some(old) = lock(&self.running).take() {
            old.server.cancel();
        }
        *lock(&self.error) = None;
        if !settings.mcp_enabled {
            return Ok(());
        }
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, settings.mcp_port));
        let server = match HttpServer::bind(self.core.clone(), addr, token.clone()).await {
            Ok(s) => s,
            Err(e) => {
                *lock(&self.error) = Some(e.to_string());
                return Err(FieldError { field: "mcp_port".into(), message: e.to_string() });
            }
        };
        let cancel = server.shutdown.clone();
        tauri::async_runtime::spawn(async move {
            if let Err(e) = server.run().await {
                eprintln!("screenpilot: MCP server: {e}");
            }
        });
        *lock(&self.running) = Some(Running { port: settings.mcp_port, token, server: cancel });
        Ok(())
    }

    /// Serving where, and the latest calls.
    pub fn status(&self) -> McpStatus {
        let url = lock(&self.running).as_ref().map(|r| format!("http://127.0.0.1:{}/mcp", r.port));
        McpStatus { url, calls: lock(&self.recent).iter().cloned().collect(), error: lock(&self.error).clone() }
    }
}

/// Settings → MCP: where the server listens and what clients called.
#[tauri::command]
pub fn mcp_status(state: tauri::State<'_, crate::AppState>) -> McpStatus {
    state.mcp.status()
}
