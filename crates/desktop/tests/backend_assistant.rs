//! Ask and To HTML on an OpenAI-compatible server (`BackendAssistant` over `RemoteBackend`,
//! against the engine's std-only stub server): the answer streams into the session in pieces,
//! a follow-up sends the capture, the earlier turns and the new question, To HTML gets the
//! page, a server that cannot be used gives one clear line and the session stays usable, and
//! a new question or Stop ends the wait for a silent server at once (its late text goes
//! nowhere).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../engine/tests/support/openai_stub.rs"]
mod openai_stub;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::RgbImage;
use openai_stub::{StubReply, StubServer};
use screenpilot_agent::{CaptureGeometry, InputSpace, MonitorGeometry, OsPoint, Screenshot};
use screenpilot_desktop::assistant::{Assistant, ScriptedAssistant};
use screenpilot_desktop::backend_assistant::{server_info, BackendAssistant};
use screenpilot_desktop::session::Session;
use screenpilot_desktop::DesktopError;
use screenpilot_engine::backend::{Backend, Reply};
use screenpilot_engine::{FinishReason, Request, RequestTimings};

fn screenshot() -> Screenshot {
    let (w, h) = (64, 48);
    let image = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 90]));
    let m = MonitorGeometry { name: "m".into(), origin: OsPoint { x: 0, y: 0 }, width: w, height: h, scale_factor: 1.0, input_space: InputSpace::Physical };
    Screenshot { image: Arc::new(image), geometry: CaptureGeometry::full_monitor(m, w, h).unwrap() }
}

fn session_on(a: Arc<dyn Assistant>) -> Session {
    let s = Session::new();
    s.set_assistant(a);
    s.set_capture(screenshot());
    s
}

fn one_line(e: &DesktopError) -> String {
    let m = e.to_string();
    assert!(!m.contains('\n'), "one line: {m}");
    m
}

#[test]
fn an_answer_streams_into_the_session_and_a_follow_up_sends_the_history() {
    let stub = StubServer::start(
        &["qwen-a", "qwen-b"],
        Some("sk-test"),
        vec![StubReply::Content("The screen shows a terminal window.".into()), StubReply::Content("It is black.".into())],
    );
    let a = BackendAssistant::connect_with_key(&stub.url, Some("qwen-b"), Some("sk-test".into())).unwrap();
    let info = a.info();
    assert_eq!((info.name.as_str(), info.device.as_str()), (format!("server: {} (qwen-b)", stub.url).as_str(), "remote"));
    let session = session_on(Arc::new(a));

    let mut pieces = Vec::new();
    let first = session.ask("What is on this screen?", &mut |p| pieces.push(p.to_string())).unwrap();
    assert!(!first.cancelled);
    assert_eq!(first.text, "The screen shows a terminal window.");
    assert!(pieces.len() > 1, "streamed in pieces: {pieces:?}");
    assert!(pieces.iter().all(|p| !p.is_empty()), "no empty piece reaches the UI");
    assert_eq!(pieces.concat(), first.text);
    assert_eq!(first.timings.engine.prompt_tokens, 11);
    assert!(first.cache.is_none());

    let second = session.ask("What colour is it?", &mut |_| {}).unwrap();
    assert_eq!(second.text, "It is black.");
    assert_eq!(session.history().len(), 2);

    let reqs = stub.requests.lock().unwrap();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1]["model"], "qwen-b");
    let msgs = reqs[1]["messages"].as_array().unwrap();
    let roles: Vec<&str> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user"]);
    let first_turn = msgs[0]["content"].as_array().unwrap();
    assert!(first_turn[0]["image_url"]["url"].as_str().unwrap().starts_with("data:image/png;base64,"), "{first_turn:?}");
    assert_eq!(first_turn[1]["text"], "What is on this screen?");
    let text_of = |v: &serde_json::Value| -> String {
        match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.as_array().unwrap().iter().filter_map(|p| p["text"].as_str()).collect(),
        }
    };
    assert_eq!(text_of(&msgs[1]["content"]), "The screen shows a terminal window.");
    assert_eq!(text_of(&msgs[2]["content"]), "What colour is it?");
    assert!(stub.auth_headers.lock().unwrap().iter().all(|h| h == "Bearer sk-test"));
}

#[test]
fn to_html_gets_the_page_from_the_server() {
    let page = "<html><head><title>t</title></head><body><p>from the server</p></body></html>";
    let stub = StubServer::start(&["qwen"], None, vec![StubReply::Content(format!("Here it is:\n```html\n{page}\n```"))]);
    let session = session_on(Arc::new(BackendAssistant::connect_with_key(&stub.url, None, None).unwrap()));
    let dir = std::env::temp_dir().join(format!("sp-backend-html-{}", std::process::id()));
    let out = screenpilot_desktop::html::generate_page(&session, &dir).unwrap();
    assert!(out.html.contains("<p>from the server</p>"), "{}", out.html);
    assert!(out.html.contains("default-src 'none'"));
    assert_eq!(std::fs::read_to_string(&out.path).unwrap(), out.html);
    let reqs = stub.requests.lock().unwrap();
    let prompt = &reqs[0]["messages"][0]["content"][1]["text"];
    assert_eq!(prompt.as_str(), Some(screenpilot_desktop::html::PROMPT));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_server_that_cannot_be_used_gives_one_clear_error_and_the_app_stays_usable() {
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let t0 = Instant::now();
    let e = BackendAssistant::connect_with_key(&format!("http://127.0.0.1:{port}/v1"), None, None).err().unwrap();
    assert!(one_line(&e).contains("cannot reach the backend"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(one_line(&BackendAssistant::connect_with_key("ftp://x/v1", None, None).err().unwrap()).contains("http(s)"));

    let stub = StubServer::start(&["qwen"], Some("sk-right"), vec![StubReply::Status(500, r#"{"error":{"message":"boom"}}"#.into()), StubReply::Content("fine".into())]);
    let e = BackendAssistant::connect_with_key(&stub.url, None, Some("sk-wrong".into())).err().unwrap();
    let m = one_line(&e);
    assert!(m.contains("refused the API key") && !m.contains("sk-wrong"), "{m}");
    let e = BackendAssistant::connect_with_key(&stub.url, Some("nope"), Some("sk-right".into())).err().unwrap();
    assert!(one_line(&e).contains("does not serve the model \"nope\""), "{e}");

    // A failed connect leaves the session as it was; a failing answer is one line and the next works.
    let session = session_on(Arc::new(ScriptedAssistant { text: "local answer".into() }));
    assert_eq!(session.ask("q?", &mut |_| {}).unwrap().text, "local answer");
    session.set_assistant(Arc::new(BackendAssistant::connect_with_key(&stub.url, None, Some("sk-right".into())).unwrap()));
    let e = session.ask("q?", &mut |_| {}).err().unwrap();
    assert!(one_line(&e).contains("boom"), "{e}");
    assert_eq!(session.history().len(), 1, "a failed answer is not part of the conversation");
    assert_eq!(session.ask("again?", &mut |_| {}).unwrap().text, "fine");
}

/// Silent for `silent` ms on its first request (then says "late"), answers the others at once.
struct SlowFirst {
    calls: AtomicUsize,
    silent: u64,
}

impl Backend for SlowFirst {
    fn chat(&self, _: Request, on_text: &mut dyn FnMut(&str)) -> screenpilot_engine::Result<Reply> {
        let text = if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(self.silent));
            "late"
        } else {
            "fast"
        };
        on_text(text);
        Ok(Reply { text: text.into(), reasoning: String::new(), finish_reason: FinishReason::Stop, timings: RequestTimings::default() })
    }
    fn describe(&self) -> String {
        "slow".into()
    }
}

#[test]
fn a_new_question_or_stop_ends_the_wait_for_a_silent_server() {
    let backend = Arc::new(SlowFirst { calls: AtomicUsize::new(0), silent: 800 });
    let session = Arc::new(session_on(Arc::new(BackendAssistant::new(backend.clone(), server_info("http://x/v1", "m")))));
    let seen_by_first = Arc::new(Mutex::new(String::new()));
    let (s1, seen1) = (session.clone(), seen_by_first.clone());
    let first = std::thread::spawn(move || s1.ask("one?", &mut |p| seen1.lock().unwrap().push_str(p)));
    while backend.calls.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let t0 = Instant::now();
    let second = session.ask("two?", &mut |_| {}).unwrap();
    assert_eq!(second.text, "fast");
    assert!(t0.elapsed() < Duration::from_millis(400), "the new question did not wait for the old: {:?}", t0.elapsed());
    let out = first.join().unwrap().unwrap();
    assert!(out.cancelled);
    std::thread::sleep(Duration::from_millis(900)); // the old request's text arrives now, and goes nowhere
    assert_eq!(seen_by_first.lock().unwrap().as_str(), "");
    assert_eq!(session.history().len(), 1);

    // Stop (the session's cancel) ends a wait with no text at all.
    let backend = Arc::new(SlowFirst { calls: AtomicUsize::new(0), silent: 2000 });
    let session = Arc::new(session_on(Arc::new(BackendAssistant::new(backend.clone(), server_info("http://x/v1", "m")))));
    let s1 = session.clone();
    let asking = std::thread::spawn(move || s1.ask("one?", &mut |_| {}));
    while backend.calls.load(Ordering::SeqCst) == 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let t0 = Instant::now();
    session.cancel();
    let out = asking.join().unwrap().unwrap();
    assert!(out.cancelled && out.text.is_empty());
    assert!(t0.elapsed() < Duration::from_millis(300), "{:?}", t0.elapsed());
}
