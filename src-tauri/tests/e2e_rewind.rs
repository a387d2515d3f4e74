//! Rewind as a user meets it in the app (tauri-driver + WebKitWebDriver on $DISPLAY, the tiny
//! model): off at start (no chip, nothing recorded); Settings → Rewind turns it on, the pulsing
//! sidebar chip appears and counts the seconds held; "Ask about these seconds" sends the last
//! seconds to the model as a video and streams an answer into a conversation that is not
//! stored; "What changed?" answers with two images; the window title says "Rewind recording"
//! while it records; off again, the chip goes and the frames are dropped.
//!
//! Saves target/app-rewind.png (and docs/app-rewind.png with `SCREENPILOT_UPDATE_SCREENSHOT=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/webdriver.rs"]
mod webdriver;
#[path = "support/app.rs"]
mod app;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use webdriver::Session;

use app::{repo, save_screenshot, view, LAST_TURN, LONG, SHORT};

/// The seconds the chip shows ("Rewind · N s"), or None while it is hidden.
fn chip_seconds(s: &Session) -> Option<u64> {
    let v = s.exec("const c = document.getElementById('rewind-chip'); return c.hidden ? null : document.getElementById('rewind-info').textContent", json!([])).unwrap();
    let text = v.as_str()?;
    let n = text.strip_prefix("Rewind · ")?.strip_suffix(" s")?;
    Some(n.parse().unwrap_or_else(|_| panic!("chip text {text:?}")))
}

/// Waits until a visible window's title says rewind records (`recording`) or none does.
fn wait_title(recording: bool) {
    let start = Instant::now();
    loop {
        let out = Command::new("xdotool").args(["search", "--onlyvisible", "--name", "Rewind recording$"]).output().expect("xdotool");
        if String::from_utf8_lossy(&out.stdout).trim().is_empty() != recording {
            return;
        }
        assert!(start.elapsed() < SHORT, "the window title does not say whether rewind records ({recording})");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn status(s: &Session) -> Value {
    app::invoke(s, "rewind_status", json!({}))
}

/// Saves the settings form through its button and waits until it says saved.
fn save_settings(s: &Session) {
    s.click("#settings-save").unwrap();
    s.wait_for("document.getElementById('settings-status').dataset.state === 'saved'", SHORT).unwrap();
}

/// Clicks a rewind button with `question` in the box; waits for its answer to end and returns
/// its state, answer text, streamed pieces and the line under it (what the model saw, timings).
fn rewind_ask(s: &Session, button: &str, question: &str) -> (String, String, u64, String) {
    // Each rewind button starts a new conversation: the turns shown so far are marked, and the
    // answer is the one unmarked turn.
    s.exec("document.querySelectorAll('#messages .turn').forEach(t => t.dataset.old = 'yes'); document.getElementById('question').value = ''", json!([])).unwrap();
    if !question.is_empty() {
        s.type_into("#question", question).unwrap();
    }
    s.click(button).unwrap();
    let expr = format!(
        "(t => t && !t.dataset.old && t.dataset.state !== 'running' && \
         [t.dataset.state, t.querySelector('.answer').textContent, Number(t.dataset.pieces), t.querySelector('.meta').textContent])({LAST_TURN})"
    );
    let v = s.wait_for(&expr, LONG).unwrap();
    assert_eq!(s.exec("return document.querySelectorAll('#messages .turn').length", json!([])).unwrap(), json!(1), "a new conversation");
    let text = |i: usize| v[i].as_str().unwrap().trim().to_string();
    (text(0), text(1), v[2].as_u64().unwrap(), text(3))
}

#[test]
fn rewind_records_only_while_on_and_answers_about_the_last_seconds() {
    let tmp = std::env::temp_dir().join(format!("sp-e2e-rewind-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let (_driver, s) = app::start("e2e-rewind", &tmp, &[]);
    let tiny = repo().join("tests/fixtures/tiny");
    app::invoke(&s, "model_open", json!({"path": tiny}));

    // Off by default: no chip, no rewind buttons, nothing held.
    assert_eq!(chip_seconds(&s), None);
    assert_eq!(status(&s)["recording"], json!(false));
    wait_title(false);
    view(&s, "settings");
    assert_eq!(s.exec("return document.getElementById('set-rewind-enabled').checked", json!([])).unwrap(), json!(false));

    // On, as a user turns it on: the switch, 4 frames a second, 20 seconds kept, Save.
    s.exec("document.getElementById('rewind-fieldset').scrollIntoView()", json!([])).unwrap();
    s.click("#set-rewind-enabled").unwrap();
    s.type_into("#set-rewind-fps", "4").unwrap();
    s.type_into("#set-rewind-seconds", "20").unwrap();
    save_settings(&s);
    let saved = std::fs::read_to_string(tmp.join("config/dev.screenpilot.app/settings.json")).unwrap();
    let saved: Value = serde_json::from_str(&saved).unwrap();
    assert_eq!((saved["rewind"]["enabled"].clone(), saved["rewind"]["fps"].clone(), saved["rewind"]["seconds"].clone()), (json!(true), json!(4.0), json!(20)));

    // The chip appears, pulses red and counts up.
    s.wait_for("!document.getElementById('rewind-chip').hidden", SHORT).unwrap();
    assert_eq!(s.exec("return document.getElementById('rewind-chip').dataset.recording", json!([])).unwrap(), json!("yes"));
    wait_title(true);
    let first = chip_seconds(&s).expect("the chip shows seconds");
    s.wait_for(&format!("(m => m && Number(m[1]) >= {})(document.getElementById('rewind-info').textContent.match(/^Rewind · (\\d+) s$/))", first + 2), SHORT).unwrap();
    let held = status(&s);
    assert_eq!(held["recording"], json!(true), "{held}");
    assert!(held["frames"].as_u64().unwrap() >= 1 && held["seconds"].as_f64().unwrap() >= 1.5, "{held}");
    assert!(held["error"].is_null(), "captures fail: {held}");

    // Ask about the last seconds: Ask shows the conversation (no capture needed) with the rewind buttons.
    view(&s, "ask");
    assert_eq!(s.exec("return [document.body.dataset.view, document.getElementById('rewind-tools').hidden]", json!([])).unwrap(), json!(["ask", false]));
    let (state, answer, pieces, timings) = rewind_ask(&s, "#rewind-ask", "What happened on the screen?");
    assert_eq!(state, "done", "{answer}");
    assert!(!answer.is_empty() && pieces > 0, "an answer streamed in: {pieces} pieces, {answer:?}");
    // The engine saw one visual input (the clip as a video) and ran its vision tower on it.
    assert!(timings.contains("video of "), "{timings}");
    assert!(timings.contains("vision ") && !timings.contains("cache hit"), "{timings}");
    let frames: u64 = timings.split("video of ").nth(1).and_then(|t| t.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{timings}"));
    assert!(frames >= 2, "a clip of several frames: {timings}");
    // The newest frame of the clip is on the stage (the conversation's capture).
    let shown = s.wait_for("(i => i.complete && i.naturalWidth && [i.naturalWidth, i.naturalHeight])(document.getElementById('shot'))", SHORT).unwrap();
    assert_eq!(shown, json!([1920, 1080]));
    // The screenshot: the chip, the frame and a rewind answer naming its video.
    save_screenshot(&s, "app-rewind");

    // A follow-up through Send is about the same clip: the engine reuses its vision features.
    let (state, _) = app::ask(&s, "And then?", LONG);
    assert_eq!(state, "done");
    let t = s.exec(&format!("return {LAST_TURN}.querySelector('.timings').textContent"), json!([])).unwrap();
    assert!(t.as_str().unwrap().contains("vision cache hit"), "{t}");
    // Not stored: rewind keeps the screen in memory only.
    assert_eq!(app::invoke(&s, "threads_list", json!({})).as_array().map(Vec::len), Some(0));

    // What changed: two images, another answer.
    let (state, answer, pieces, timings) = rewind_ask(&s, "#rewind-changed", "");
    assert_eq!(state, "done", "{answer}");
    assert!(!answer.is_empty() && pieces > 0, "{answer:?}");
    assert!(timings.contains("2 images"), "{timings}");
    let q = s.exec(&format!("return {LAST_TURN}.querySelector('.q').textContent"), json!([])).unwrap();
    assert!(q.as_str().unwrap().contains("What changed?"), "{q}");

    // Off: the chip and the buttons go, the frames are dropped.
    view(&s, "settings");
    s.click("#set-rewind-enabled").unwrap();
    save_settings(&s);
    s.wait_for("document.getElementById('rewind-chip').hidden && document.getElementById('rewind-tools').hidden", SHORT).unwrap();
    let off = status(&s);
    assert_eq!((off["recording"].clone(), off["frames"].clone()), (json!(false), json!(0)), "{off}");
    wait_title(false);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(chip_seconds(&s), None, "the chip stays hidden");
}
