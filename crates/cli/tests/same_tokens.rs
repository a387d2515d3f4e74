//! One path (issue 14): the same request (an image and a question, sampling with a seed,
//! repetition penalty 1.3, a stop string that occurs) gives the same tokens and text through
//! `screenpilot ask --json`, `screenpilot serve` over HTTP, `ask --backend` against that server,
//! and the engine's `LocalBackend` (what the app and `do` use); the timings are one type,
//! serialised alike by `ask --json` and the server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use screenpilot_engine::backend::{Backend, LocalBackend};
use screenpilot_engine::load::{open, DeviceChoice, RuntimeConfig};
use screenpilot_engine::{
    ChatMessage, ContentPart, EngineConfig, EngineHandle, Event, FinishReason, GenerationOptions, ImageSource,
    Request, Role,
};
use serde_json::{json, Value};

const QUESTION: &str = "What is this?";
const STOP: &str = "wm";
const SEED: u64 = 7;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tiny() -> PathBuf {
    root().join("tests/fixtures/tiny")
}

fn image() -> PathBuf {
    root().join("tests/fixtures/images/small_50x40.png")
}

/// The request's sampling flags as `ask` takes them.
fn flags() -> Vec<String> {
    let f = ["--temperature", "0.9", "--top-k", "50", "--seed", "7", "--repetition-penalty", "1.3"];
    let mut v: Vec<String> = f.iter().map(|s| s.to_string()).collect();
    v.extend(["--max-tokens".into(), "20".into(), "--stop".into(), STOP.into()]);
    v
}

fn screenpilot(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_screenpilot")).args(args).output().expect("run screenpilot")
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            out.push(if i <= c.len() { A[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

/// The server, killed when dropped.
struct Serve(Child, SocketAddr);

impl Drop for Serve {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn serve() -> Serve {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(env!("CARGO_BIN_EXE_screenpilot"))
        .args(["serve", "--device", "cpu", "--port", &port.to_string(), "--model"])
        .arg(tiny())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut s = Serve(child, SocketAddr::from(([127, 0, 0, 1], port)));
    let start = Instant::now();
    while TcpStream::connect_timeout(&s.1, Duration::from_millis(200)).is_err() {
        assert!(s.0.try_wait().unwrap().is_none(), "the server exited before listening");
        assert!(start.elapsed() < Duration::from_secs(120), "the server did not start listening");
        std::thread::sleep(Duration::from_millis(100));
    }
    s
}

/// POSTs a chat completion (not streamed) and returns the response's JSON.
fn chat(addr: SocketAddr, body: &Value) -> Value {
    let body = body.to_string();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{out}");
    serde_json::from_str(body).unwrap()
}

fn engine_request() -> Request {
    let options = GenerationOptions {
        max_tokens: 20,
        temperature: 0.9,
        top_k: 50,
        seed: SEED,
        repetition_penalty: 1.3,
        stop: vec![STOP.into()],
        ..Default::default()
    };
    let parts = vec![ContentPart::Image(ImageSource::Path(image())), ContentPart::Text(QUESTION.into())];
    Request { messages: vec![ChatMessage { role: Role::User, parts }], options, tools: Vec::new() }
}

#[test]
fn ask_serve_remote_ask_and_local_backend_give_the_same_tokens() {
    // screenpilot ask --json
    let mut args: Vec<String> = vec!["ask".into(), "--device".into(), "cpu".into(), "--json".into()];
    args.extend(["--model".into(), tiny().to_string_lossy().into(), "--image".into(), image().to_string_lossy().into()]);
    args.extend(flags());
    args.push(QUESTION.into());
    let out = screenpilot(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<u32> = cli["steps"].as_array().unwrap().iter().map(|s| s["id"].as_u64().unwrap() as u32).collect();
    let text = cli["text"].as_str().unwrap().to_string();
    assert_eq!(cli["finish_reason"], "stop_string", "the stop string occurs: {cli}");
    assert!(ids.len() > 2 && ids.len() < 20, "{ids:?}");
    assert!(!text.contains(STOP), "the stop string is cut: {text:?}");
    assert!(cli["steps"][0]["top"].as_array().unwrap().len() == 5);

    // The engine's LocalBackend (caches on, as the app and the server have them).
    let loaded = open(&tiny(), &RuntimeConfig { device: DeviceChoice::Cpu, ..Default::default() }).unwrap();
    let handle = EngineHandle::spawn(loaded.into_engine(EngineConfig::default())).unwrap();
    let mut events = handle.submit(handle.validate(engine_request()).unwrap()).unwrap();
    let mut local_ids = Vec::new();
    while let Some(ev) = events.blocking_next() {
        if let Event::Token(t) = ev {
            local_ids.push(t.id);
        }
    }
    assert_eq!(local_ids, ids, "the engine's events");
    let local = LocalBackend::new(handle);
    let mut streamed = String::new();
    let reply = local.chat(engine_request(), &mut |t| streamed.push_str(t)).unwrap();
    assert_eq!((reply.text.as_str(), streamed.as_str()), (text.as_str(), text.as_str()), "LocalBackend");
    assert_eq!(reply.finish_reason, FinishReason::StopString);
    assert_eq!(reply.timings.completion_tokens, ids.len());

    // screenpilot serve over HTTP, the image as a data: URI.
    let server = serve();
    let url = format!("data:image/png;base64,{}", base64(&std::fs::read(image()).unwrap()));
    let body = json!({
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": QUESTION}]}],
        "max_tokens": 20, "temperature": 0.9, "top_k": 50, "seed": SEED, "repetition_penalty": 1.3, "stop": [STOP],
    });
    let r = chat(server.1, &body);
    assert_eq!(r["choices"][0]["message"]["content"], text.as_str(), "serve: {r}");
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    assert_eq!(r["usage"]["completion_tokens"], ids.len());
    assert_eq!(r["timings"]["completion_tokens"], ids.len());
    assert_eq!(r["timings"]["prompt_tokens"], cli["prompt_token_ids"].as_array().unwrap().len());
    // One timings type: the server's fields are ask's (which adds the model's load time).
    let keys = |v: &Value| v.as_object().unwrap().keys().filter(|k| *k != "load_ms").cloned().collect::<Vec<_>>();
    assert_eq!(keys(&r["timings"]), keys(&cli["timings"]));

    // screenpilot ask --backend URL: the same text, streamed from the server.
    let mut args: Vec<String> = vec!["ask".into(), "--backend".into(), format!("http://{}/v1", server.1)];
    args.extend(["--image".into(), image().to_string_lossy().into()]);
    args.extend(flags());
    args.push(QUESTION.into());
    let out = screenpilot(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.strip_suffix('\n'), Some(text.as_str()), "ask --backend");
}

#[test]
fn json_and_logits_are_refused_with_a_remote_backend() {
    for flag in [vec!["--json"], vec!["--dump-logits", "/tmp/x.f32"]] {
        let mut args: Vec<String> = vec!["ask".into(), "--backend".into(), "http://127.0.0.1:9/v1".into()];
        args.extend(flag.iter().map(|s| s.to_string()));
        args.push("hi".into());
        let out = screenpilot(&args);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: ") && err.contains("remote server reports no logits"), "{err}");
    }
    let out = screenpilot(&["ask".into(), "hi".into()]);
    assert_eq!(out.status.code(), Some(2), "neither --model nor --backend");
}
