//! The app's MCP server as a user and an MCP client meet it (tauri-driver + WebKitWebDriver on
//! $DISPLAY, the tiny model): Settings → MCP turns it on with a token and actions allowed; a
//! client speaking MCP 2026-07-28 over HTTP is refused without the token, lists the tools, asks
//! about the screen through the loaded model, is refused a screenshot (sharing off), and clicks
//! only after the user approved through elicitation (the pointer moves; the audit log has the
//! decision). The Settings page and the sidebar show what the client called.
//!
//! Saves target/app-mcp.png (and docs/app-mcp.png with `SCREENPILOT_UPDATE_SCREENSHOT=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/webdriver.rs"]
mod webdriver;
#[path = "support/app.rs"]
mod app;

use std::time::Duration;

use serde_json::{json, Value};
use webdriver::Session;

use app::{pointer, repo, save_screenshot, view, SHORT};

const TOKEN: &str = "e2e-secret-token";

/// One `tools/call` (or `tools/list` when `tool` is None) as an MCP 2026-07-28 client sends it
/// over streamable HTTP: the status and the JSON-RPC message.
fn rpc(port: u16, token: Option<&str>, tool: Option<&str>, params: Value) -> (u16, Value) {
    let method = if tool.is_some() { "tools/call" } else { "tools/list" };
    let mut params = params;
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "e2e-client", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}}
    });
    let mut req = ureq::post(&format!("http://127.0.0.1:{port}/mcp"))
        .set("Content-Type", "application/json")
        .set("Accept", "application/json, text/event-stream")
        .set("MCP-Protocol-Version", "2026-07-28")
        .set("Mcp-Method", method);
    if let Some(t) = tool {
        req = req.set("Mcp-Name", t);
    }
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let resp = match req.send_json(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => return (code, json!({"body": r.into_string().unwrap_or_default()})),
        Err(e) => panic!("{e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap();
    // A JSON body, or server-sent events whose data line is the message.
    let msg = serde_json::from_str(&text).unwrap_or_else(|_| {
        let data = text.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim).find(|d| d.starts_with('{')).expect("an SSE data line");
        serde_json::from_str(data).unwrap()
    });
    (status, msg)
}

fn call(port: u16, tool: &str, args: Value) -> Value {
    let (status, msg) = rpc(port, Some(TOKEN), Some(tool), json!({"name": tool, "arguments": args}));
    assert_eq!(status, 200, "{tool}: {msg}");
    msg
}

fn set(s: &Session, id: &str, value: &str) {
    s.exec("const e = document.getElementById(arguments[0]); e.value = arguments[1]; e.dispatchEvent(new Event('input'))", json!([id, value])).unwrap();
}

fn check(s: &Session, id: &str, on: bool) {
    s.exec("const e = document.getElementById(arguments[0]); e.checked = arguments[1]; e.dispatchEvent(new Event('change'))", json!([id, on])).unwrap();
}

#[test]
fn an_mcp_client_asks_and_acts_only_as_the_user_allowed() {
    let tmp = std::env::temp_dir().join(format!("sp-e2e-mcp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let (_driver, s) = app::start("e2e-mcp", &tmp, &[]);
    // The tiny model answers.
    let tiny = repo().join("tests/fixtures/tiny");
    app::invoke(&s, "model_open", json!({"path": tiny}));

    // Off by default: nothing listens, the chip is hidden.
    view(&s, "settings");
    assert_eq!(s.exec("return document.getElementById('mcp-enabled').checked", json!([])).unwrap(), json!(false));
    assert_eq!(s.exec("return document.getElementById('mcp-chip').hidden", json!([])).unwrap(), json!(true));
    // A port another program holds: an inline error on the port, nothing saved, nothing serves.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held_port = held.local_addr().unwrap().port();
    check(&s, "mcp-enabled", true);
    set(&s, "mcp-port", &held_port.to_string());
    s.click("#settings-save").unwrap();
    s.wait_for("document.getElementById('settings-status').dataset.state === 'invalid'", SHORT).unwrap();
    let message = s.exec("return document.querySelector(`.field-error[data-for='mcp_port']`).textContent", json!([])).unwrap();
    assert!(message.as_str().unwrap().contains("cannot listen"), "{message}");
    let saved = std::fs::read_to_string(tmp.join("config/dev.screenpilot.app/settings.json")).unwrap_or_default();
    assert!(!saved.contains(&format!("\"mcp_port\": {held_port}")), "saved although the port is held");
    drop(held);
    // On, on a free port, with a token; actions allowed, screenshots not shared; all tools.
    let port = app::free_port();
    set(&s, "mcp-port", &port.to_string());
    set(&s, "mcp-token", TOKEN);
    check(&s, "mcp-actions", true);
    s.click("#settings-save").unwrap();
    s.wait_for("document.getElementById('settings-status').dataset.state === 'saved'", SHORT).unwrap();
    let url = format!("http://127.0.0.1:{port}/mcp");
    s.wait_for(&format!("document.getElementById('mcp-state').textContent.includes('{url}')"), SHORT).unwrap();

    // The token is checked before anything else.
    assert_eq!(rpc(port, None, None, json!({})).0, 401);
    assert_eq!(rpc(port, Some("wrong"), None, json!({})).0, 401);
    let (status, list) = rpc(port, Some(TOKEN), None, json!({}));
    assert_eq!(status, 200, "{list}");
    let names: Vec<&str> = list["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    for t in ["ask_screen", "find", "screenshot", "click", "do_task", "wait_for_change"] {
        assert!(names.contains(&t), "{t} missing from {names:?}");
    }

    // A question about the screen, answered by the loaded model.
    let asked = call(port, "ask_screen", json!({"question": "What is on the screen?"}));
    let result = &asked["result"];
    assert_eq!(result["isError"], json!(false), "{asked}");
    assert!(result["structuredContent"]["answer"].is_string(), "{asked}");
    assert_eq!(result["structuredContent"]["capture"]["image_width"], json!(1920));
    // Screenshots are not shared.
    let shot = call(port, "screenshot", json!({}));
    assert_eq!(shot["result"]["isError"], json!(true), "{shot}");
    // Bad arguments are a protocol error.
    let bad = call(port, "ask_screen", json!({"question": 5}));
    assert_eq!(bad["error"]["code"], json!(-32602), "{bad}");

    // A click: the user is asked first (input_required with a form), nothing moves meanwhile.
    app::move_pointer(10, 10);
    let (x, y) = (1900, 1060);
    let asked = call(port, "click", json!({"x": x, "y": y}));
    let r = &asked["result"];
    assert_eq!(r["resultType"], json!("input_required"), "{asked}");
    let question = r["inputRequests"]["confirm"]["params"]["message"].as_str().unwrap_or_else(|| panic!("{asked}"));
    assert!(question.contains(&format!("({x}, {y})")), "{question}");
    assert_eq!(pointer(), (10, 10));
    let state = r["requestState"].as_str().unwrap().to_string();
    // Declined: refused, nothing moves.
    let (_, no) = rpc(port, Some(TOKEN), Some("click"), json!({"name": "click", "arguments": {"x": x, "y": y},
        "inputResponses": {"confirm": {"action": "decline"}}, "requestState": state}));
    assert_eq!(no["result"]["isError"], json!(true), "{no}");
    assert_eq!(pointer(), (10, 10));
    // Asked again and approved: the pointer goes there.
    let asked = call(port, "click", json!({"x": x, "y": y}));
    let state = asked["result"]["requestState"].as_str().unwrap().to_string();
    let retry = json!({"name": "click", "arguments": {"x": x, "y": y},
        "inputResponses": {"confirm": {"action": "accept", "content": {"approve": true}}}, "requestState": state});
    let (_, yes) = rpc(port, Some(TOKEN), Some("click"), retry.clone());
    assert_eq!(yes["result"]["isError"], json!(false), "{yes}");
    assert_eq!(pointer(), (x, y));
    // The same approval does not count twice.
    let (_, again) = rpc(port, Some(TOKEN), Some("click"), retry);
    assert_eq!(again["error"]["code"], json!(-32602), "{again}");
    // The decisions are in the audit log.
    let audit = std::fs::read_to_string(tmp.join("data/dev.screenpilot.app/mcp-audit.jsonl")).unwrap();
    let decisions: Vec<String> = audit.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()["decision"].as_str().unwrap().to_string()).collect();
    assert_eq!(decisions, ["rejected_by_user", "approved", "executed", "finished"]);

    // The app shows who called what.
    s.wait_for("[...document.querySelectorAll('#mcp-calls li strong')].some(e => e.textContent === 'e2e-client · ask_screen')", SHORT).unwrap();
    let chip = s.wait_for("!document.getElementById('mcp-chip').hidden && document.getElementById('mcp-info').textContent", SHORT).unwrap();
    assert_eq!(chip, json!("MCP · e2e-client: click"));
    s.exec("document.getElementById('mcp-fieldset').scrollIntoView()", json!([])).unwrap();
    save_screenshot(&s, "app-mcp");

    // Off again: nothing listens.
    check(&s, "mcp-enabled", false);
    s.click("#settings-save").unwrap();
    s.wait_for("document.getElementById('settings-status').dataset.state === 'saved'", SHORT).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(ureq::post(&url).call().is_err(), "still listening after MCP was switched off");
}
