//! Function calling over the OpenAI-compatible server: a request with `tools`, an earlier
//! assistant turn's `tool_calls` and a tool result holding a screenshot is answered, the tools
//! reach the prompt (more prompt tokens) unless `tool_choice` is `"none"`, the streamed content
//! is the content of the whole answer, and what cannot be honoured (`tool_choice: "required"`,
//! malformed tools or calls) is a 400 naming it. The tiny random model writes no real tool call:
//! turning `<tool_call>` blocks into `tool_calls` is tested in `server/tools.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use screenpilot_engine::{bind, serve_on, EngineConfig, EngineHandle, ServeConfig};
use serde_json::{json, Value};
use tokio::sync::oneshot;

struct Server {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start() -> Server {
    let handle = EngineHandle::spawn(engine(EngineConfig::default())).unwrap();
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_on(listener, ServeConfig::default(), handle, async move {
        stopped.await.ok();
    }));
    Server { addr, _stop: stop }
}

/// POSTs a chat body; returns the status and the raw response body (chunked encoding undone).
async fn post(addr: SocketAddr, body: &Value) -> (u16, String) {
    let bytes = body.to_string();
    let exchange = http(addr, "POST", "/v1/chat/completions", &[], bytes.as_bytes());
    let (status, raw) = tokio::time::timeout(LIMIT, exchange).await.expect("the server answers");
    (status, if body["stream"] == true { dechunk(&raw) } else { raw })
}

async fn post_json(addr: SocketAddr, body: &Value) -> (u16, Value) {
    let (status, text) = post(addr, body).await;
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

/// The payload of an HTTP/1.1 chunked body.
fn dechunk(raw: &str) -> String {
    let mut out = String::new();
    let mut rest = raw;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or_else(|_| panic!("bad chunk size {size:?} in {raw}"));
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    out
}

const TOOLS: &str = r#"[
    {"type": "function", "function": {"name": "click", "description": "Click a point of the screen.",
        "parameters": {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                       "required": ["x", "y"]}}},
    {"type": "function", "function": {"name": "type_text", "description": "Type text.",
        "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}}]"#;

/// An agent's conversation: a task, the model's call, its result with a screenshot.
fn conversation() -> Value {
    let png = base64::engine::general_purpose::STANDARD.encode(png_bytes(5, 64, 48));
    json!([
        {"role": "system", "content": "You operate a computer."},
        {"role": "user", "content": "Open the settings."},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "click", "arguments": "{\"x\": 10, \"y\": 20}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": [
            {"type": "text", "text": "Clicked. The screen now:"},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{png}")}}]},
    ])
}

fn body(extra: Value) -> Value {
    let mut b = json!({"messages": conversation(), "max_tokens": 6, "ignore_eos": true});
    b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_conversations_are_answered_and_the_tools_reach_the_prompt_unless_tool_choice_is_none() {
    let s = start().await;
    let tools: Value = serde_json::from_str(TOOLS).unwrap();
    let (status, plain) = post_json(s.addr, &body(json!({}))).await;
    assert_eq!(status, 200, "{plain}");
    let (status, with) = post_json(s.addr, &body(json!({"tools": tools, "parallel_tool_calls": false}))).await;
    assert_eq!(status, 200, "{with}");
    let prompt = |v: &Value| v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt(&with) > prompt(&plain) + 50, "the tools block is in the prompt: {with} vs {plain}");
    assert_eq!(with["timings"]["images"], 1, "the tool result's screenshot is in the prompt: {with}");
    let choice = &with["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(choice["message"]["content"].is_string(), "{with}");
    assert_eq!(choice["finish_reason"], "length", "cut by max_tokens: {with}");
    assert!(choice["message"].get("tool_calls").is_none(), "the random model calls nothing: {with}");
    let (status, auto) = post_json(s.addr, &body(json!({"tools": tools, "tool_choice": "auto"}))).await;
    assert_eq!((status, prompt(&auto)), (200, prompt(&with)), "{auto}");
    let (status, none) = post_json(s.addr, &body(json!({"tools": tools, "tool_choice": "none"}))).await;
    assert_eq!((status, prompt(&none)), (200, prompt(&plain)), "tool_choice none leaves the tools out: {none}");

    // Without the earlier call the prompt is shorter: the call is written into the assistant turn.
    let mut no_call = body(json!({"tools": tools}));
    no_call["messages"][2] = json!({"role": "assistant", "content": ""});
    let (status, shorter) = post_json(s.addr, &no_call).await;
    assert_eq!(status, 200, "{shorter}");
    assert!(prompt(&shorter) + 10 < prompt(&with), "{shorter} vs {with}");

    // Streamed, the same content arrives in deltas and the stream ends as usual.
    let (status, text) = post(s.addr, &body(json!({"tools": tools, "stream": true}))).await;
    assert_eq!(status, 200, "{text}");
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.trim().strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("bad chunk ({e}): {d}")))
        .collect();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let streamed: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect::<Vec<_>>().concat();
    assert!(!streamed.is_empty(), "{text}");
    assert_eq!(streamed, choice["message"]["content"].as_str().unwrap(), "{text}");
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "length", "{text}");
    assert!(chunks.iter().all(|c| c["choices"][0]["delta"].get("tool_calls").is_none()), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_honoured_is_a_400_naming_it() {
    let s = start().await;
    let tools: Value = serde_json::from_str(TOOLS).unwrap();
    let mut bad_args = body(json!({"tools": tools}));
    bad_args["messages"][2]["tool_calls"][0]["function"]["arguments"] = json!("{\"x\": 10,");
    let mut call_on_user = body(json!({}));
    call_on_user["messages"][1]["tool_calls"] = json!([]);
    for (request, needle) in [
        (body(json!({"tools": tools, "tool_choice": "required"})), "`tool_choice`"),
        (
            body(json!({"tools": tools, "tool_choice": {"type": "function", "function": {"name": "click"}}})),
            "`tool_choice`",
        ),
        (body(json!({"tools": [{"type": "code_interpreter"}]})), "`tools[0]`"),
        (body(json!({"tools": [{"type": "function", "function": {"description": "no name"}}]})), "`function.name`"),
        (body(json!({"functions": [{"name": "click"}]})), "`functions`"),
        (body(json!({"function_call": "auto"})), "`function_call`"),
        (bad_args, "not valid JSON"),
        (call_on_user, "`tool_calls`"),
    ] {
        let (status, v) = post_json(s.addr, &request).await;
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(status, 400, "{needle}: {v}");
        assert!(message.contains(needle), "{message} should name {needle}");
    }
    // The server goes on answering.
    let (status, v) = tokio::time::timeout(Duration::from_secs(60), post_json(s.addr, &body(json!({})))).await.unwrap();
    assert_eq!(status, 200, "{v}");
}
