//! The OpenAI-compatible server: the official `openai` Python client (installed into a venv
//! under target/ when missing) streams and not, with images; and every error is JSON with the
//! right status (401, 400, 404, 413, 429).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use screenpilot_engine::{bind, serve_on, EngineConfig, EngineHandle, Event, ServeConfig};
use serde_json::Value;
use tokio::sync::oneshot;

struct Server {
    addr: SocketAddr,
    handle: EngineHandle,
    _stop: oneshot::Sender<()>,
}

async fn start(cfg: ServeConfig, engine_cfg: EngineConfig) -> Server {
    let handle = EngineHandle::spawn(engine(engine_cfg)).unwrap();
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_on(listener, cfg, handle.clone(), async move {
        stopped.await.ok();
    }));
    Server { addr, handle, _stop: stop }
}

/// A python with the `openai` package: target/openai-venv, made on first use.
fn python_with_openai() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let venv = target.join("openai-venv");
    let python = venv.join("bin/python");
    let has_openai = |p: &Path| Command::new(p).args(["-c", "import openai"]).status().is_ok_and(|s| s.success());
    if !has_openai(&python) {
        let ok = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().is_ok_and(|s| s.success());
        assert!(ok, "cannot create a venv at {}: python3 with the venv module is needed", venv.display());
        let ok = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "openai>=1.40,<3"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok && has_openai(&python), "cannot pip install openai into {} (is PyPI reachable?)", venv.display());
    }
    python
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_client_gets_answers_streamed_and_not_with_images() {
    let python = tokio::task::spawn_blocking(python_with_openai).await.unwrap();
    let dir = std::env::temp_dir().join(format!("screenpilot-openai-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = ServeConfig { api_key: Some("sk-test".into()), allowed_dirs: vec![dir.clone()], ..Default::default() };
    let server = start(cfg, EngineConfig::default()).await;
    let png = dir.join("screen.png");
    std::fs::write(&png, png_bytes(21, 160, 128)).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py");
    let base = format!("http://{}/v1", server.addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python).arg(script).arg(base).arg("sk-test").arg(&png).output().unwrap()
    })
    .await
    .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "openai_client.py failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let summary = json(stdout.trim());
    eprintln!("openai client: {summary}");
    assert_eq!(summary["text"], summary["streamed"]);
    let stats = server.handle.stats();
    assert!(stats.caches.vision.hits >= 1, "the same screen's features were reused: {stats:?}");
    assert!(stats.caches.prefix_reused_tokens > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors_with_4xx_statuses() {
    let cfg = ServeConfig { api_key: Some("k".into()), max_body_bytes: 4096, ..Default::default() };
    let s = start(cfg, EngineConfig::default()).await;
    let auth = [("Authorization", "Bearer k"), ("Content-Type", "application/json")];
    let chat = |body: &str| body.as_bytes().to_vec();
    let bad_png = r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,aGVsbG8="}}]}]}"#;
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (&[], "GET", "/v1/models", vec![], 401, "authentication_error"),
        (&[("Authorization", "Bearer nope")], "GET", "/v1/models", vec![], 401, "authentication_error"),
        (&auth, "POST", "/v1/chat/completions", chat("{not json"), 400, "invalid_request_error"),
        (&auth, "POST", "/v1/chat/completions", chat(r#"{"messages":[]}"#), 400, "invalid_request_error"),
        (
            &auth,
            "POST",
            "/v1/chat/completions",
            chat(r#"{"messages":[{"role":"user","content":"x"}],"temperature":-1}"#),
            400,
            "invalid_request_error",
        ),
        (&auth, "POST", "/v1/chat/completions", chat(bad_png), 400, "invalid_image"),
        (
            &auth,
            "POST",
            "/v1/chat/completions",
            chat(
                r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"/etc/passwd"}}]}]}"#,
            ),
            400,
            "invalid_request_error",
        ),
        (&auth, "POST", "/v1/chat/completions", vec![b' '; 5000], 413, "request_too_large"),
        (&auth, "GET", "/v1/nothing", vec![], 404, "not_found"),
        (&auth, "GET", "/v1/chat/completions", vec![], 405, "invalid_request_error"),
    ];
    for (headers, method, path, body, status, kind) in cases {
        let (got, text) = http(s.addr, method, path, headers, &body).await;
        assert_eq!(got, status, "{method} {path}: {text}");
        let v = json(&text);
        assert_eq!(v["error"]["type"], kind, "{text}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let (ok, text) = http(s.addr, "GET", "/v1/models", &auth, &[]).await;
    assert_eq!((ok, json(&text)["data"][0]["id"].as_str()), (200, Some("qwen3-vl")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_and_streaming_ends_with_done() {
    // One answer at a time (max_active 1), so that the queue really fills.
    let cfg = EngineConfig { queue_capacity: 1, max_batch: 1, max_active: 1, ..Default::default() };
    let s = start(ServeConfig::default(), cfg).await;
    let body = |max: usize, stream: bool| {
        format!(
            r#"{{"messages":[{{"role":"user","content":"Hello"}}],"max_tokens":{max},"stream":{stream},"ignore_eos":true}}"#
        )
    };
    let (status, text) = http(s.addr, "POST", "/v1/chat/completions", &[], body(3, true).as_bytes()).await;
    assert_eq!(status, 200);
    assert_eq!(text.matches("chat.completion.chunk").count(), 5, "role chunk, 3 tokens, final chunk: {text}");
    assert!(text.contains("data: [DONE]"), "{text}");
    // Occupy the worker and the single queue slot, then ask over HTTP.
    let blocker = s.handle.validate(request(vec![user(vec![text_part("Long.")])], 3000)).unwrap();
    let mut running = s.handle.submit(blocker).unwrap();
    assert!(matches!(running.next().await, Some(Event::Token(_))));
    let queued =
        s.handle.submit(s.handle.validate(request(vec![user(vec![text_part("Queued.")])], 1)).unwrap()).unwrap();
    let (status, text) = http(s.addr, "POST", "/v1/chat/completions", &[], body(2, false).as_bytes()).await;
    assert_eq!(status, 429, "{text}");
    assert_eq!(json(&text)["error"]["type"], "overloaded");
    running.cancel();
    drop(queued);
}

fn text_part(t: &str) -> screenpilot_engine::ContentPart {
    text(t)
}
