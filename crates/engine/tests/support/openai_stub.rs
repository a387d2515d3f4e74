//! A small OpenAI-compatible test server (std only): `GET /v1/models` and
//! `POST /v1/chat/completions` answering scripted replies in either of the formats real servers
//! use (Qwen's raw `<tool_call>` text in `content`, or structured `tool_calls`), streamed when
//! the request asks for it; scripted HTTP errors; an optional API key. Every chat request's
//! body is kept for the test to inspect. Shared by the engine's and the CLI's tests (`#[path]`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// One scripted answer to a chat request.
#[derive(Debug, Clone)]
pub enum StubReply {
    /// `message.content` is this text (raw `<tool_call>` blocks included).
    Content(String),
    /// Text (may be empty) and structured calls: (name, arguments JSON string).
    ToolCalls(String, Vec<(String, String)>),
    /// An HTTP error status with this body.
    Status(u16, String),
    /// A 200 whose body has an empty `choices`.
    NoChoices,
}

/// The raw Qwen text of a `computer_use` call.
pub fn qwen_call(args: &Value) -> String {
    format!("<tool_call>\n{}\n</tool_call>", json!({"name": "computer_use", "arguments": args}))
}

pub struct StubServer {
    /// Base URL ending in `/v1`.
    pub url: String,
    /// Bodies of the chat requests received, in order.
    pub requests: Arc<Mutex<Vec<Value>>>,
    /// `Authorization` headers received (any route).
    pub auth_headers: Arc<Mutex<Vec<String>>>,
}

struct State {
    replies: Mutex<VecDeque<StubReply>>,
    models: Vec<String>,
    key: Option<String>,
    requests: Arc<Mutex<Vec<Value>>>,
    auth: Arc<Mutex<Vec<String>>>,
}

impl StubServer {
    pub fn start(models: &[&str], key: Option<&str>, replies: Vec<StubReply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let auth_headers = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new(State {
            replies: Mutex::new(replies.into()),
            models: models.iter().map(|m| m.to_string()).collect(),
            key: key.map(String::from),
            requests: requests.clone(),
            auth: auth_headers.clone(),
        });
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let st = state.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &st);
                });
            }
        });
        Self { url, requests, auth_headers }
    }
}

fn serve(mut conn: TcpStream, st: &State) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let (mut len, mut auth) = (0usize, None);
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap_or((h, ""));
        match k.to_ascii_lowercase().as_str() {
            "content-length" => len = v.trim().parse().unwrap_or(0),
            "authorization" => auth = Some(v.trim().to_string()),
            _ => {}
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    if let Some(a) = &auth {
        st.auth.lock().unwrap().push(a.clone());
    }
    if let Some(k) = &st.key {
        if auth.as_deref() != Some(&format!("Bearer {k}")) {
            return respond(&mut conn, 401, "application/json", &json!({"error": {"message": "invalid API key"}}).to_string());
        }
    }
    match (method.as_str(), path.as_str()) {
        ("GET", "/v1/models") => {
            let data: Vec<Value> = st.models.iter().map(|m| json!({"id": m, "object": "model"})).collect();
            respond(&mut conn, 200, "application/json", &json!({"object": "list", "data": data}).to_string())
        }
        ("POST", "/v1/chat/completions") => {
            let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            st.requests.lock().unwrap().push(req.clone());
            let reply = st.replies.lock().unwrap().pop_front();
            let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
            match reply {
                None => respond(&mut conn, 500, "application/json", r#"{"error":{"message":"stub: no reply left"}}"#),
                Some(StubReply::Status(code, b)) => respond(&mut conn, code, "application/json", &b),
                Some(StubReply::NoChoices) => respond(&mut conn, 200, "application/json", r#"{"choices":[]}"#),
                Some(StubReply::Content(text)) => answer(&mut conn, stream, &text, &[]),
                Some(StubReply::ToolCalls(text, calls)) => answer(&mut conn, stream, &text, &calls),
            }
        }
        _ => respond(&mut conn, 404, "application/json", r#"{"error":{"message":"no such route"}}"#),
    }
}

fn answer(conn: &mut TcpStream, stream: bool, text: &str, calls: &[(String, String)]) -> std::io::Result<()> {
    let structured: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(i, (n, a))| json!({"index": i, "id": format!("call_{i}"), "type": "function", "function": {"name": n, "arguments": a}}))
        .collect();
    let finish = if calls.is_empty() { "stop" } else { "tool_calls" };
    if !stream {
        let mut message = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
        if !structured.is_empty() {
            message["tool_calls"] = Value::Array(structured);
        }
        let body = json!({"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                          "usage": {"prompt_tokens": 11, "completion_tokens": 7}});
        return respond(conn, 200, "application/json", &body.to_string());
    }
    // Streamed: the text in pieces of 5 characters, each call's arguments in two halves.
    let mut chunks = vec![json!({"choices": [{"index": 0, "delta": {"role": "assistant"}}]})];
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(5) {
        chunks.push(json!({"choices": [{"index": 0, "delta": {"content": piece.iter().collect::<String>()}}]}));
    }
    for (i, (n, a)) in calls.iter().enumerate() {
        let mid = a.char_indices().nth(a.chars().count() / 2).map_or(0, |(b, _)| b);
        chunks.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": i, "id": format!("call_{i}"), "type": "function", "function": {"name": n, "arguments": &a[..mid]}}]}}]}));
        chunks.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": i, "function": {"arguments": &a[mid..]}}]}}]}));
    }
    chunks.push(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}));
    chunks.push(json!({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7}}));
    let mut body = String::new();
    for c in chunks {
        body.push_str(&format!("data: {c}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    respond(conn, 200, "text/event-stream", &body)
}

fn respond(conn: &mut TcpStream, code: u16, ctype: &str, body: &str) -> std::io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {code} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}
