//! `screenpilot mcp`: the screen as MCP tools for other agents, answered by the local model (or
//! `--backend`). Over stdio by default (the host starts it), or streamable HTTP with `--http`
//! (loopback by default; any other address needs a token). Screenshots are shared and actions
//! allowed only with `--share-screenshots` and `--allow-actions`; each action is still confirmed
//! by the user through the client (MCP elicitation; with `--http` started from a terminal, a
//! client without elicitation is answered there), written to the audit log, and stopped by
//! Ctrl+C. Nothing but MCP messages goes to stdout; what clients call is logged on stderr.

use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Args;
use screenpilot_agent::enigo_backend::EnigoActuator;
use screenpilot_agent::{Actuator, Decision, NoInput};
use screenpilot_desktop::mcp::screens::DesktopScreens;
use screenpilot_desktop::mcp::serve::{check_http_address, HttpServer};
use screenpilot_desktop::mcp::{parse_tool_list, serve_stdio, AskUser, McpConfig, McpCore, McpEvent, ToolName};
use screenpilot_desktop::settings::default_data_dir;

use crate::args::ModelSource;
use crate::backend::open_backend;
use crate::task::ask_on_stdin;

#[derive(Args, Debug)]
pub struct McpArgs {
    #[command(flatten)]
    pub source: ModelSource,
    /// Serve streamable HTTP at ADDR (`PORT`, `HOST:PORT`; path /mcp) instead of stdio. A host
    /// other than loopback needs a token.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// The bearer token HTTP clients must send [default: $SCREENPILOT_MCP_TOKEN]. Never logged.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Let clients act (click, type, key, scroll, do_task); the user confirms each action.
    #[arg(long)]
    pub allow_actions: bool,
    /// Let clients have the screenshot itself (`screenshot`); off: text and coordinates only.
    #[arg(long)]
    pub share_screenshots: bool,
    /// Offer only these tools (comma-separated names; default: all).
    #[arg(long, value_name = "LIST", value_parser = parse_tools)]
    pub tools: Option<std::collections::BTreeSet<ToolName>>,
    /// The hash-chained audit log of action decisions
    /// [default: mcp-audit.jsonl in ScreenPilot's data folder].
    #[arg(long)]
    pub audit: Option<PathBuf>,
    /// Most tokens per answer.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..100_000))]
    pub max_tokens: u32,
}

fn parse_tools(s: &str) -> Result<std::collections::BTreeSet<ToolName>, String> {
    let set = parse_tool_list(s)?;
    if set.is_empty() {
        return Err("name at least one tool".into());
    }
    Ok(set)
}

/// `PORT` or `HOST:PORT` (loopback when only a port is given).
fn http_address(s: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    s.parse::<SocketAddr>().with_context(|| format!("--http {s:?}: give PORT or HOST:PORT (e.g. 127.0.0.1:8765)"))
}

/// Asks on the terminal that started `mcp --http` (stdin is free there; over stdio it carries
/// the protocol): for clients without elicitation. One question at a time; `y` allows.
struct TerminalAsk(Mutex<()>);

impl AskUser for TerminalAsk {
    fn ask(&self, question: &str) -> Decision {
        let _one = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // The question on a line of its own (what a log watcher finds), the prompt after it.
        ask_on_stdin(&format!("screenpilot mcp: {question}\nscreenpilot mcp:"))
    }
}

fn log_event(e: McpEvent) {
    let detail = if e.detail.is_empty() { String::new() } else { format!(": {}", e.detail) };
    eprintln!("screenpilot mcp: {} called {} -> {} ({:.0} ms){detail}", e.client, e.tool, e.result, e.ms);
}

pub fn run(a: McpArgs) -> anyhow::Result<ExitCode> {
    let token = a.token.clone().or_else(|| std::env::var("SCREENPILOT_MCP_TOKEN").ok()).filter(|t| !t.is_empty());
    let http = a.http.as_deref().map(http_address).transpose()?;
    if let Some(addr) = http {
        // Before the model loads: a refused address is a usage error, at once.
        if let Err(e) = check_http_address(addr, token.as_deref()) {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    }
    let audit = match a.audit.clone() {
        Some(p) => p,
        None => default_data_dir().context("no data folder for the audit log: pass --audit FILE")?.join("mcp-audit.jsonl"),
    };
    if let Some(dir) = audit.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let config = McpConfig {
        tools: a.tools.clone().unwrap_or_else(|| ToolName::ALL.into_iter().collect()),
        share_screenshots: a.share_screenshots,
        allow_actions: a.allow_actions,
        max_tokens: a.max_tokens as usize,
        audit: Some(audit),
    };
    let backend = open_backend(&a.source.backend, a.source.model.as_deref(), &a.source.runtime)?;
    let actuator: Box<dyn Actuator + Send> = match EnigoActuator::new() {
        Ok(e) => Box::new(e),
        Err(e) if !a.allow_actions => Box::new(NoInput(e.to_string())),
        Err(e) => return Err(e).context("--allow-actions needs input events"),
    };
    let core = Arc::new(McpCore::new(config, Arc::new(DesktopScreens), Arc::new(Mutex::new(actuator))));
    core.set_backend(Some(backend.clone()));
    core.on_event(Arc::new(log_event));
    if http.is_some() && std::io::stdin().is_terminal() {
        core.set_ask_user(Some(Arc::new(TerminalAsk(Mutex::new(())))));
    }
    eprintln!(
        "screenpilot mcp: {} ({}; screenshots {}, actions {})",
        if http.is_some() { "streamable HTTP" } else { "stdio" },
        backend.describe(),
        if a.share_screenshots { "shared" } else { "not shared" },
        if a.allow_actions { "allowed, each confirmed" } else { "off" },
    );
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let stop_core = core.clone();
        let ctrl_c = async move {
            let _ = tokio::signal::ctrl_c().await;
            // The global stop: no input event after this.
            stop_core.stop_all();
        };
        match http {
            None => {
                tokio::select! {
                    r = serve_stdio(core) => r?,
                    () = ctrl_c => {}
                }
            }
            Some(addr) => {
                let server = HttpServer::bind(core, addr, token).await?;
                eprintln!("screenpilot mcp: listening on http://{}/mcp", server.local_addr()?);
                let shutdown = server.shutdown.clone();
                tokio::spawn(async move {
                    ctrl_c.await;
                    shutdown.cancel();
                });
                server.run().await?;
            }
        }
        anyhow::Ok(())
    })?;
    // Blocking calls still running (a model answer) are not waited for.
    rt.shutdown_background();
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_addresses_default_to_loopback() {
        assert_eq!(http_address("8765").unwrap(), "127.0.0.1:8765".parse().unwrap());
        assert_eq!(http_address("0.0.0.0:9000").unwrap(), "0.0.0.0:9000".parse().unwrap());
        assert!(http_address("localhost").is_err());
        assert!(check_http_address("0.0.0.0:9000".parse().unwrap(), None).is_err());
        assert!(check_http_address("0.0.0.0:9000".parse().unwrap(), Some("t")).is_ok());
        assert!(check_http_address("127.0.0.1:9000".parse().unwrap(), None).is_ok());
    }

    #[test]
    fn tool_lists_are_checked_by_the_argument_parser() {
        assert_eq!(parse_tools("find").unwrap().len(), 1);
        assert!(parse_tools(",").is_err());
        assert!(parse_tools("find,delete_everything").is_err());
    }
}
