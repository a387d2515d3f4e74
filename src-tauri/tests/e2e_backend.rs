//! Ask and To HTML on an OpenAI-compatible server, end to end in the real webview
//! (tauri-driver + WebKitWebDriver, the debug app on $DISPLAY, e.g. Xvfb from scripts/test.sh).
//! The server is the scripted stub (crates/engine/tests/support/openai_stub.rs); no local
//! model is loaded:
//!
//! - "Server" with an unreachable URL shows one line of error and the app stays usable;
//! - Connect to the stub shows `server: <url> (stub-model) · remote` and saves the choice,
//!   URL and model to settings.json;
//! - a question about a capture streams the server's answer in; a follow-up sends the capture,
//!   the first exchange and the new question;
//! - To HTML shows the page the server wrote;
//! - "Local model" again: no local model is loaded, so Ask says so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/webdriver.rs"]
mod webdriver;
#[path = "support/app.rs"]
mod app;
#[path = "../../crates/engine/tests/support/openai_stub.rs"]
mod openai_stub;

use openai_stub::{StubReply, StubServer};
use serde_json::json;
use webdriver::Session;

use app::SHORT;

fn set(s: &Session, id: &str, value: &str) {
    s.exec("document.getElementById(arguments[0]).value = arguments[1]", json!([id, value])).unwrap();
}

fn ask(s: &Session, question: &str) -> String {
    set(s, "question", question);
    s.click("#send").unwrap();
    let state = s.wait_for("['done', 'error'].includes(document.getElementById('answer').dataset.state) && document.getElementById('answer').dataset.state", SHORT).unwrap();
    assert_eq!(state, json!("done"), "{:?}", s.exec("return document.getElementById('error').textContent", json!([])));
    s.exec("return document.getElementById('answer').textContent", json!([])).unwrap().as_str().unwrap().to_string()
}

#[test]
fn ask_and_to_html_on_a_server_chosen_in_the_model_bar() {
    let tmp = std::env::temp_dir().join(format!("sp-e2e-backend-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let page = "<html><head></head><body><h1>Served page</h1></body></html>";
    let replies = vec![
        StubReply::Content("A desktop with one window.".into()),
        StubReply::Content("The window is grey.".into()),
        StubReply::Content(format!("```html\n{page}\n```")),
    ];
    let stub = StubServer::start(&["stub-model"], None, replies);
    let (_driver, s) = app::start("e2e-backend", &tmp, &[]);

    // Unreachable: one line of error, nothing changes.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    s.exec("const b = document.getElementById('ask-backend'); b.value = 'server'; b.dispatchEvent(new Event('change'))", json!([])).unwrap();
    set(&s, "server-url", &format!("http://127.0.0.1:{dead}/v1"));
    s.click("#server-connect").unwrap();
    let err = s.wait_for("document.getElementById('error').textContent", SHORT).unwrap();
    let err = err.as_str().unwrap();
    assert!(err.contains("cannot reach the backend") && !err.contains('\n'), "{err}");
    assert_eq!(s.exec("return document.getElementById('model-info').textContent", json!([])).unwrap(), json!("no model"));

    // The stub: connected, shown, saved.
    set(&s, "server-url", &stub.url);
    set(&s, "server-model", "stub-model");
    s.click("#server-connect").unwrap();
    let info = s.wait_for("document.getElementById('model-info').dataset.loaded === 'yes' && document.getElementById('model-info').textContent", SHORT).unwrap();
    assert_eq!(info, json!(format!("server: {} (stub-model) · remote", stub.url)));
    assert_eq!(s.exec("return document.getElementById('error').textContent", json!([])).unwrap(), json!(""));
    let settings_file = tmp.join("config/dev.screenpilot.app/settings.json");
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&settings_file).unwrap()).unwrap();
    assert_eq!((saved["use_server"].clone(), saved["backend_url"].clone(), saved["backend_model"].clone()), (json!(true), json!(stub.url), json!("stub-model")));

    // Ask and a follow-up about a capture.
    s.click("#capture").unwrap();
    s.wait_for("!!document.getElementById('shot').dataset.captured", SHORT).unwrap();
    assert_eq!(ask(&s, "What is on the screen?"), "A desktop with one window.");
    let pieces = s.exec("return Number(document.getElementById('answer').dataset.pieces)", json!([])).unwrap().as_i64().unwrap();
    assert!(pieces > 1, "streamed in pieces: {pieces}");
    assert_eq!(ask(&s, "What colour is it?"), "The window is grey.");
    {
        let reqs = stub.requests.lock().unwrap();
        let msgs = reqs[1]["messages"].as_array().unwrap();
        let roles: Vec<&str> = msgs.iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["user", "assistant", "user"]);
        assert!(msgs[0]["content"][0]["image_url"]["url"].as_str().unwrap().starts_with("data:image/png;base64,"));
    }

    // To HTML: the server's page in the sandboxed frame.
    s.click("#to-html").unwrap();
    s.wait_for("document.getElementById('page-score').textContent.includes('saved to')", SHORT).unwrap();
    let srcdoc = s.exec("return document.getElementById('page').srcdoc", json!([])).unwrap();
    assert!(srcdoc.as_str().unwrap().contains("<h1>Served page</h1>"), "{srcdoc}");

    // Back to "Local model": none is loaded, so Ask says so (and the app still answers).
    s.exec("const b = document.getElementById('ask-backend'); b.value = 'local'; b.dispatchEvent(new Event('change'))", json!([])).unwrap();
    s.wait_for("document.getElementById('model-info').textContent === 'no model'", SHORT).unwrap();
    set(&s, "question", "Still there?");
    s.click("#send").unwrap();
    let err = s.wait_for("document.getElementById('answer').dataset.state === 'error' && document.getElementById('error').textContent", SHORT).unwrap();
    assert!(err.as_str().unwrap().contains("no model is loaded"), "{err}");
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&settings_file).unwrap()).unwrap();
    assert_eq!(saved["use_server"], json!(false));
    let _ = s.close();
}
