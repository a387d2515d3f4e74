//! Backends: the remote one against a scripted OpenAI-compatible server (both reply formats,
//! streamed and not; retries; refused key, unknown model, unreachable server, no choices; what it
//! sends), and local vs remote through a real `screenpilot serve` on the tiny model giving the
//! same tokens for the same request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "support/openai_stub.rs"]
mod openai_stub;

use std::time::{Duration, Instant};

use common::*;
use openai_stub::{qwen_call, StubReply, StubServer};
use screenpilot_engine::backend::{tool_text, Backend, LocalBackend, RemoteBackend, RemoteConfig};
use screenpilot_engine::{
    bind, serve_on, ChatMessage, EngineConfig, EngineError, EngineHandle, FinishReason, GenerationOptions, Request,
    Role, ServeConfig,
};
use serde_json::{json, Value};

fn cfg(url: &str, stream: bool) -> RemoteConfig {
    RemoteConfig { stream, backoff: Duration::from_millis(10), ..RemoteConfig::new(url) }
}

fn ask(text: &str) -> Request {
    Request { messages: vec![ChatMessage::text(Role::User, text)], ..Default::default() }
}

fn err(r: Result<impl std::fmt::Debug, EngineError>) -> String {
    r.expect_err("an error").to_string()
}

#[test]
fn raw_and_structured_tool_calls_streamed_or_not_give_the_same_reply() {
    let args = json!({"action": "left_click", "coordinate": [120, 340]});
    let raw = format!("Clicking OK.\n{}", qwen_call(&args));
    let structured = StubReply::ToolCalls("Clicking OK.".into(), vec![("computer_use".into(), args.to_string())]);
    let mut seen = Vec::new();
    for stream in [false, true] {
        for reply in [StubReply::Content(raw.clone()), structured.clone()] {
            let stub = StubServer::start(&["qwen3-vl"], None, vec![reply]);
            let b = RemoteBackend::connect(cfg(&stub.url, stream)).unwrap();
            let mut pieces = Vec::new();
            let r = b.chat(ask("click OK"), &mut |t| pieces.push(t.to_string())).unwrap();
            assert_eq!(r.finish_reason, FinishReason::Stop);
            let (content, calls) = tool_text::split(&r.text);
            assert_eq!(content, "Clicking OK.");
            assert_eq!(calls.len(), 1, "{}", r.text);
            assert_eq!((calls[0].name.as_str(), &calls[0].arguments), ("computer_use", &args));
            assert_eq!(r.timings.completion_tokens, 7);
            assert!(!pieces.is_empty());
            if stream {
                assert!(pieces.len() > 1, "a streamed reply arrives in pieces: {pieces:?}");
            }
            seen.push(calls);
        }
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn the_request_carries_images_as_data_uris_tools_and_earlier_calls_in_openais_form() {
    let stub = StubServer::start(&["a", "b"], None, vec![StubReply::Content("ok".into())]);
    let b = RemoteBackend::connect(RemoteConfig { model: Some("b".into()), ..cfg(&stub.url, false) }).unwrap();
    assert_eq!(b.model(), "b");
    let call = qwen_call(&json!({"action": "key", "keys": ["ctrl", "s"]}));
    let req = Request {
        messages: vec![
            ChatMessage::text(Role::System, "Be careful."),
            ChatMessage { role: Role::User, parts: vec![text("save it"), img(&image(1, 32, 32))] },
            ChatMessage::text(Role::Assistant, format!("Saving.\n{call}")),
            ChatMessage { role: Role::Tool, parts: vec![img(&image(2, 32, 32))] },
        ],
        options: GenerationOptions { max_tokens: 9, stop: vec!["END".into()], repetition_penalty: 1.1, ..Default::default() },
        tools: vec![json!({"name": "computer_use", "parameters": {"type": "object"}})],
    };
    b.chat(req, &mut |_| {}).unwrap();
    let sent = stub.requests.lock().unwrap()[0].clone();
    assert_eq!(sent["model"], "b");
    assert_eq!(sent["max_tokens"], 9);
    assert_eq!(sent["stop"], json!(["END"]));
    assert_eq!(sent["repetition_penalty"], 1.1);
    assert_eq!(sent["tools"][0]["type"], "function");
    assert_eq!(sent["tools"][0]["function"]["name"], "computer_use");
    let m = &sent["messages"];
    assert_eq!(m[0], json!({"role": "system", "content": "Be careful."}));
    let url = m[1]["content"][1]["image_url"]["url"].as_str().unwrap();
    assert!(url.starts_with("data:image/png;base64,iVBOR"), "{url:.40}");
    assert_eq!(m[2]["content"], "Saving.");
    let tc = &m[2]["tool_calls"][0];
    assert_eq!(tc["function"]["name"], "computer_use");
    let a: Value = serde_json::from_str(tc["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(a, json!({"action": "key", "keys": ["ctrl", "s"]}));
    assert_eq!(m[3]["role"], "tool");
    assert_eq!(m[3]["tool_call_id"], tc["id"]);
    assert!(m[3]["content"][0]["image_url"]["url"].as_str().unwrap().starts_with("data:image/png;base64,"));
}

#[test]
fn videos_go_as_data_uris_of_the_file_and_frames_are_refused() {
    use screenpilot_engine::{ContentPart, VideoSource};
    let files = fixtures().join("video_files");
    let stub = StubServer::start(&["a"], None, vec![StubReply::Content("ok".into())]);
    let b = RemoteBackend::connect(cfg(&stub.url, false)).unwrap();
    let video = |src: VideoSource| Request {
        messages: vec![ChatMessage { role: Role::User, parts: vec![ContentPart::Video(src), text("What happens?")] }],
        ..Default::default()
    };
    b.chat(video(VideoSource::Path(files.join("vp9.webm"))), &mut |_| {}).unwrap();
    let sent = stub.requests.lock().unwrap()[0].clone();
    let part = &sent["messages"][0]["content"][0];
    assert_eq!(part["type"], "video_url");
    let url = part["video_url"]["url"].as_str().unwrap();
    let b64 = url.strip_prefix("data:video/webm;base64,").unwrap_or_else(|| panic!("{url:.40}"));
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    assert_eq!(bytes, std::fs::read(files.join("vp9.webm")).unwrap());
    // Frames are no file; a FIFO is not read (it would wait for a writer).
    let frames = VideoSource::Frames { frames: vec![image(1, 32, 32), image(2, 32, 32)], fps: 2.0 };
    assert!(err(b.chat(video(frames), &mut |_| {})).contains("need the local model"));
    let fifo = std::env::temp_dir().join(format!("screenpilot-remote-fifo-{}.mp4", std::process::id()));
    let _ = std::fs::remove_file(&fifo);
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    assert!(err(b.chat(video(VideoSource::Path(fifo.clone())), &mut |_| {})).contains("not a regular file"));
    std::fs::remove_file(&fifo).ok();
    assert_eq!(stub.requests.lock().unwrap().len(), 1, "refused videos send nothing");
}

#[test]
fn busy_servers_are_retried_with_backoff_and_then_reported() {
    let busy = || StubReply::Status(429, r#"{"error":{"message":"slow down"}}"#.into());
    let stub = StubServer::start(&["m"], None, vec![busy(), StubReply::Status(503, "{}".into()), StubReply::Content("fine".into())]);
    let b = RemoteBackend::connect(cfg(&stub.url, false)).unwrap();
    let t = Instant::now();
    assert_eq!(b.chat(ask("hi"), &mut |_| {}).unwrap().text, "fine");
    assert!(t.elapsed() >= Duration::from_millis(30), "backoff 10 + 20 ms");
    assert_eq!(stub.requests.lock().unwrap().len(), 3);

    let stub = StubServer::start(&["m"], None, (0..3).map(|_| busy()).collect());
    let b = RemoteBackend::connect(RemoteConfig { retries: 2, ..cfg(&stub.url, false) }).unwrap();
    let e = err(b.chat(ask("hi"), &mut |_| {}));
    assert!(e.contains("busy") && e.contains("429") && e.contains("slow down"), "{e}");
}

#[test]
fn a_refused_key_an_unknown_model_an_unreachable_server_and_no_choices_are_one_clear_error() {
    let secret = "sk-very-secret-123";
    let stub = StubServer::start(&["m"], Some("right-key"), vec![]);
    let e = err(RemoteBackend::connect(RemoteConfig { api_key: Some(secret.into()), ..cfg(&stub.url, false) }));
    assert!(e.contains("refused the API key") && e.contains("401"), "{e}");
    assert!(!e.contains(secret), "{e}");
    assert_eq!(stub.auth_headers.lock().unwrap()[0], format!("Bearer {secret}"), "the key goes in the header");
    let dbg = format!("{:?}", RemoteConfig { api_key: Some(secret.into()), ..cfg(&stub.url, false) });
    assert!(!dbg.contains(secret), "{dbg}");
    let ok = RemoteBackend::connect(RemoteConfig { api_key: Some("right-key".into()), ..cfg(&stub.url, false) });
    assert!(ok.is_ok());
    assert!(!format!("{:?} {}", ok.as_ref().unwrap(), ok.as_ref().unwrap().describe()).contains("right-key"));

    let e = err(RemoteBackend::connect(RemoteConfig { model: Some("qwen3-vl-235b".into()), ..cfg(&stub_url(&["x", "y"]), false) }));
    assert!(e.contains("does not serve the model \"qwen3-vl-235b\"") && e.contains("x, y"), "{e}");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let e = err(RemoteBackend::connect(cfg(&format!("http://127.0.0.1:{port}/v1"), false)));
    assert!(e.starts_with("cannot reach the backend at http://127.0.0.1:"), "{e}");
    let e = err(RemoteBackend::connect(cfg("localhost:8000", false)));
    assert!(e.contains("must be http(s)://"), "{e}");

    for stream in [false, true] {
        let stub = StubServer::start(&["m"], None, vec![StubReply::NoChoices]);
        let b = RemoteBackend::connect(cfg(&stub.url, stream)).unwrap();
        let e = err(b.chat(ask("hi"), &mut |_| {}));
        assert!(e.contains("no choices"), "{e}");
    }
    let stub = StubServer::start(&["m"], None, vec![StubReply::ToolCalls(String::new(), vec![("f".into(), "{broken".into())])]);
    let b = RemoteBackend::connect(cfg(&stub.url, false)).unwrap();
    let e = err(b.chat(ask("hi"), &mut |_| {}));
    assert!(e.contains("not a JSON object"), "{e}");
}

fn stub_url(models: &[&str]) -> String {
    // Kept alive by its thread for the rest of the test process.
    StubServer::start(models, None, vec![]).url
}

#[test]
fn the_same_request_gives_the_same_tokens_locally_and_through_screenpilot_serve() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let handle = EngineHandle::spawn(engine(EngineConfig::default())).unwrap();
    let listener = rt.block_on(bind("127.0.0.1:0".parse().unwrap())).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(serve_on(listener, ServeConfig::default(), handle.clone(), std::future::pending::<()>()));
    let local = LocalBackend::new(handle);
    for stream in [false, true] {
        let remote = RemoteBackend::connect(cfg(&format!("http://{addr}/v1"), stream)).unwrap();
        let req = Request {
            messages: vec![ChatMessage { role: Role::User, parts: vec![img(&image(5, 64, 48)), text("What is here?")] }],
            options: GenerationOptions {
                max_tokens: 12,
                ignore_eos: true,
                repetition_penalty: 1.3,
                temperature: 0.7,
                seed: 42,
                ..Default::default()
            },
            tools: vec![json!({"name": "computer_use", "parameters": {"type": "object"}})],
        };
        let a = local.chat(req.clone(), &mut |_| {}).unwrap();
        let b = remote.chat(req, &mut |_| {}).unwrap();
        assert_eq!(a.text, b.text);
        assert!(!a.text.is_empty());
        assert_eq!(a.timings.prompt_tokens, b.timings.prompt_tokens);
        assert_eq!(b.timings.completion_tokens, 12);
    }
}
