//! Ask and To HTML on an OpenAI-compatible server, end to end in the real webview
//! (tauri-driver + WebKitWebDriver, the debug app on $DISPLAY, e.g. Xvfb from scripts/test.sh).
//! The server is the scripted stub (crates/engine/tests/support/openai_stub.rs); no local
//! model is loaded. The server is chosen in Settings:
//!
//! - an unreachable URL is an inline message on the URL field, nothing is saved, and the app
//!   stays usable;
//! - the stub: saved (choice, URL, model, key) and shown as `server: <url> (stub-model) · remote`;
//! - a question about a capture streams the server's answer in; a follow-up sends the capture,
//!   the first exchange and the new question;
//! - To HTML shows the page the server wrote;
//! - "This computer" again: no local model is loaded, so Ask says so.
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

use app::{view, LAST_TURN, SHORT};

fn set(s: &Session, id: &str, value: &str) {
    s.exec("document.getElementById(arguments[0]).value = arguments[1]", json!([id, value])).unwrap();
}

fn ask(s: &Session, question: &str) -> String {
    let (state, text) = app::ask(s, question, SHORT);
    assert_eq!(state, "done", "{:?}", s.exec("return document.getElementById('error').textContent", json!([])));
    text
}

/// Saves the Settings form; its status ("saved" or "invalid").
fn save(s: &Session) -> String {
    s.exec("document.getElementById('settings-status').dataset.state = ''", json!([])).unwrap();
    s.click("#settings-save").unwrap();
    let v = s.wait_for("(st => !['', 'saving'].includes(st) && st)(document.getElementById('settings-status').dataset.state)", SHORT).unwrap();
    v.as_str().unwrap().to_string()
}

#[test]
fn ask_and_to_html_on_a_server_chosen_in_settings() {
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

    // Unreachable: an inline message on the URL, nothing saved, nothing changes.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    view(&s, "settings");
    s.click("#set-backend-server").unwrap();
    set(&s, "server-url", &format!("http://127.0.0.1:{dead}/v1"));
    assert_eq!(save(&s), "invalid");
    let err = s.exec("return document.querySelector(\".field-error[data-for='backend_url']\").textContent", json!([])).unwrap();
    let err = err.as_str().unwrap();
    assert!(err.contains("cannot reach the backend") && !err.contains('\n'), "{err}");
    assert_eq!(s.exec("return document.getElementById('model-info').textContent", json!([])).unwrap(), json!("no model"));
    let settings_file = tmp.join("config/dev.screenpilot.app/settings.json");
    assert!(!settings_file.exists() || !std::fs::read_to_string(&settings_file).unwrap().contains(&dead.to_string()), "the bad server was saved");

    // The stub: connected, shown, saved.
    set(&s, "server-url", &stub.url);
    set(&s, "server-model", "stub-model");
    assert_eq!(save(&s), "saved");
    let info = s.wait_for("document.getElementById('model-info').dataset.loaded === 'yes' && document.getElementById('model-info').textContent", SHORT).unwrap();
    assert_eq!(info, json!(format!("server: {} (stub-model) · remote", stub.url)));
    assert_eq!(s.exec("return document.getElementById('error').textContent", json!([])).unwrap(), json!(""));
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&settings_file).unwrap()).unwrap();
    assert_eq!((saved["use_server"].clone(), saved["backend_url"].clone(), saved["backend_model"].clone()), (json!(true), json!(stub.url), json!("stub-model")));

    // Ask and a follow-up about a capture.
    s.click("#capture").unwrap();
    s.wait_for("!!document.getElementById('shot').dataset.captured", SHORT).unwrap();
    assert_eq!(ask(&s, "What is on the screen?"), "A desktop with one window.");
    let pieces = s.exec(&format!("return Number({LAST_TURN}.dataset.pieces)"), json!([])).unwrap().as_i64().unwrap();
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
    view(&s, "html");
    s.click("#to-html").unwrap();
    s.wait_for("document.getElementById('page-score').textContent.includes('saved to')", SHORT).unwrap();
    let srcdoc = s.exec("return document.getElementById('page').srcdoc", json!([])).unwrap();
    assert!(srcdoc.as_str().unwrap().contains("<h1>Served page</h1>"), "{srcdoc}");

    // Back to "This computer": none is loaded, so Ask says so (and the app still answers).
    view(&s, "settings");
    s.click("#set-backend-local").unwrap();
    assert_eq!(save(&s), "saved");
    s.wait_for("document.getElementById('model-info').textContent === 'no model'", SHORT).unwrap();
    view(&s, "ask");
    let (state, _) = app::ask(&s, "Still there?", SHORT);
    assert_eq!(state, "error");
    let err = s.exec("return document.getElementById('error').textContent", json!([])).unwrap();
    assert!(err.as_str().unwrap().contains("no model is loaded"), "{err}");
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&settings_file).unwrap()).unwrap();
    assert_eq!(saved["use_server"], json!(false));
    let _ = s.close();
}
