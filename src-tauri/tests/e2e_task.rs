//! Task mode end to end in the real webview (tauri-driver + WebKitWebDriver, the debug app on
//! $DISPLAY, e.g. Xvfb from scripts/test.sh). The model is a scripted OpenAI-compatible server
//! (crates/engine/tests/support/openai_stub.rs) that the debug-only `debug_set_backend_url`
//! makes the app's `remote` backend. A probe X window lies *under* ScreenPilot's window:
//!
//! - task 1: the model clicks the probe; Enter accepts; the click lands in the probe (so the
//!   app's window was out of the way) where the pointer now is, the model ends the task, and
//!   the audit shows as a table;
//! - every screenshot the model received shows the probe and none of the app's window, while
//!   a capture with the app shown has it there;
//! - task 2: Esc rejects; nothing is clicked and the pointer stays;
//! - tasks 3 and 4: the Stop button and the global hotkey Ctrl+Shift+X end a task waiting for
//!   a decision; nothing is clicked.
//!
//! - every task is in the history (newest first) and task 1's replay check is identical;
//! - Calibrate is refused with actions off, and reports 0.0 px error with them on.
//!
//! Writes target/e2e-task-screenshot.png (`SCREENPILOT_UPDATE_SCREENSHOT=1` also
//! docs/screenshot-task.png). Needs tauri-driver, WebKitWebDriver and xdotool.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/webdriver.rs"]
mod webdriver;
#[path = "support/app.rs"]
mod app;
#[path = "../../crates/engine/tests/support/openai_stub.rs"]
mod openai_stub;

use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use image::RgbImage;
use openai_stub::{qwen_call, StubReply, StubServer};
use serde_json::json;
use webdriver::Session;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConfigureWindowAux, ConnectionExt, CreateWindowAux, EventMask, StackMode, WindowClass};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;

use app::{move_pointer, pointer, repo, SHORT};

const ENTER: &str = "\u{E007}";
const ESCAPE: &str = "\u{E00C}";
const PROBE_RGB: [u8; 3] = [0, 200, 0];

/// A plain X window that reports the clicks it receives.
struct Probe {
    conn: RustConnection,
    rect: (i32, i32, i32, i32),
}

impl Probe {
    /// At (x, y), w x h, at the bottom of the stacking order (under the app's window).
    fn new(x: i32, y: i32, w: i32, h: i32) -> Self {
        let (conn, n) = x11rb::connect(None).unwrap();
        let root = conn.setup().roots[n].root;
        let win = conn.generate_id().unwrap();
        let color = u32::from(PROBE_RGB[0]) << 16 | u32::from(PROBE_RGB[1]) << 8 | u32::from(PROBE_RGB[2]);
        let aux = CreateWindowAux::new().background_pixel(color).event_mask(EventMask::BUTTON_PRESS).override_redirect(1);
        conn.create_window(0, win, root, x as i16, y as i16, w as u16, h as u16, 0, WindowClass::INPUT_OUTPUT, 0, &aux).unwrap();
        conn.map_window(win).unwrap();
        conn.configure_window(win, &ConfigureWindowAux::new().stack_mode(StackMode::BELOW)).unwrap();
        conn.flush().unwrap();
        Self { conn, rect: (x, y, w, h) }
    }

    /// Root coordinates of the clicks received since the last call.
    fn clicks(&self) -> Vec<(i32, i32)> {
        let mut out = Vec::new();
        while let Some(ev) = self.conn.poll_for_event().unwrap() {
            if let Event::ButtonPress(b) = ev {
                out.push((i32::from(b.root_x), i32::from(b.root_y)));
            }
        }
        out
    }
}

fn xdotool(args: &[&str]) -> String {
    let out = Command::new("xdotool").args(args).output().expect("xdotool");
    assert!(out.status.success(), "xdotool {args:?}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn shell_value(text: &str, key: &str) -> i32 {
    text.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).and_then(|v| v.parse().ok()).unwrap()
}

/// The app window's rectangle on the screen.
fn app_rect() -> (i32, i32, i32, i32) {
    let id = xdotool(&["search", "--onlyvisible", "--name", "^ScreenPilot$"]);
    let id = id.lines().next().expect("the app's window");
    let g = xdotool(&["getwindowgeometry", "--shell", id]);
    (shell_value(&g, "X"), shell_value(&g, "Y"), shell_value(&g, "WIDTH"), shell_value(&g, "HEIGHT"))
}

/// The app's page background (light or dark, as the system theme makes it).
fn background(s: &Session) -> [u8; 3] {
    let v = s.exec("return getComputedStyle(document.body).backgroundColor", json!([])).unwrap();
    let n: Vec<u8> = v.as_str().unwrap().trim_start_matches("rgb(").trim_end_matches(')').split(',').map(|x| x.trim().parse().unwrap()).collect();
    [n[0], n[1], n[2]]
}

fn decode_data_uri(uri: &str) -> RgbImage {
    let b64 = uri.split_once("base64,").expect("a base64 data URI").1;
    let png = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
    image::load_from_memory(&png).unwrap().to_rgb8()
}

/// The fraction of `rect`'s pixels in `img` that are exactly `rgb`.
fn share(img: &RgbImage, rect: (i32, i32, i32, i32), rgb: [u8; 3]) -> f64 {
    let (x0, y0, w, h) = rect;
    let (mut n, mut hit) = (0u64, 0u64);
    for y in y0.max(0)..(y0 + h).min(img.height() as i32) {
        for x in x0.max(0)..(x0 + w).min(img.width() as i32) {
            n += 1;
            hit += u64::from(img.get_pixel(x as u32, y as u32).0 == rgb);
        }
    }
    hit as f64 / n.max(1) as f64
}

/// Every screenshot the stub server was sent.
fn screenshots_sent(stub: &StubServer) -> Vec<RgbImage> {
    let mut out = Vec::new();
    for req in stub.requests.lock().unwrap().iter() {
        for m in req["messages"].as_array().unwrap() {
            for part in m["content"].as_array().into_iter().flatten() {
                if let Some(url) = part["image_url"]["url"].as_str() {
                    out.push(decode_data_uri(url));
                }
            }
        }
    }
    out
}

fn start_task(s: &Session, text: &str) {
    s.type_into("#task-text", text).unwrap();
    s.click("#task-start").unwrap();
}

/// Waits for the proposal that waits for a decision; its description.
fn pending_proposal(s: &Session) -> String {
    let v = s.wait_for("document.querySelector('.task-proposal[data-state=\"pending\"] .choices') && document.querySelector('.task-proposal[data-state=\"pending\"] .desc').textContent", SHORT).unwrap();
    v.as_str().unwrap().to_string()
}

fn outcome(s: &Session, status: &str) -> String {
    let expr = format!("document.getElementById('task-outcome').dataset.status === '{status}' && document.getElementById('task-outcome').textContent");
    s.wait_for(&expr, SHORT).map_err(|e| format!("{e}; outcome: {}", s.exec("return document.getElementById('task-outcome').dataset.status + ': ' + document.getElementById('task-outcome').textContent", json!([])).unwrap())).unwrap().as_str().unwrap().to_string()
}

/// `(x, y)` of a description like `left click at (412, 377)`.
fn target_of(description: &str) -> (i32, i32) {
    let inner = description.rsplit_once('(').unwrap().1.split_once(')').unwrap().0;
    let (x, y) = inner.split_once(", ").unwrap();
    (x.trim().parse().unwrap(), y.trim().parse().unwrap())
}

#[test]
fn tasks_accept_reject_and_stop_with_the_app_window_out_of_the_way() {
    let display = xdotool(&["getdisplaygeometry"]);
    let (sw, sh) = display.trim().split_once(' ').map(|(w, h)| (w.parse::<i32>().unwrap(), h.parse::<i32>().unwrap())).unwrap();
    let tmp = std::env::temp_dir().join(format!("sp-e2e-task-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let (_driver, s) = app::start("e2e-task", &tmp, &[]);
    let (ax, ay, aw, ah) = app_rect();
    let app_rgb = background(&s);
    let probe = Probe::new(ax + 300, ay + 250, 240, 160);
    let (px, py, pw, ph) = probe.rect;
    let (cx, cy) = (px + pw / 2, py + ph / 2);
    let rel = |v: i32, total: i32| (f64::from(v) * 1000.0 / f64::from(total)).round() as i64;
    let click = qwen_call(&json!({"action": "left_click", "coordinate": [rel(cx, sw), rel(cy, sh)]}));
    let done = qwen_call(&json!({"action": "terminate", "status": "success"}));
    let replies = vec![click.clone(), done, click.clone(), click.clone(), click].into_iter().map(StubReply::Content).collect();
    let stub = StubServer::start(&["stub-model"], None, replies);
    app::invoke(&s, "debug_set_backend_url", json!({"url": stub.url}));
    s.click("#actions-enabled").unwrap();
    s.click("#tab-task").unwrap();
    s.exec("document.getElementById('task-backend').value = 'remote'", json!([])).unwrap();
    move_pointer(5, 5);

    // 1: accepted with Enter: the click lands in the probe, under where the app's window is.
    start_task(&s, "Click the green box");
    let description = pending_proposal(&s);
    let target = target_of(&description);
    assert!(description.starts_with("left click at"), "{description}");
    assert!((target.0 - cx).abs() <= 2 && (target.1 - cy).abs() <= 2, "{description} vs the probe's centre ({cx}, {cy})");
    let markers = s.exec("return document.querySelectorAll('.step .thumb img').length + ',' + document.querySelectorAll('.step .thumb .marker').length", json!([])).unwrap();
    assert_eq!(markers, json!("1,1"), "a thumbnail with the target drawn on it");
    let said = s.exec("return document.querySelector('.step .said').textContent", json!([])).unwrap();
    assert!(said.as_str().unwrap().contains("left_click"), "what the model said: {said}");
    s.press(ENTER).unwrap();
    let text = outcome(&s, "success");
    assert!(text.contains("success"), "{text}");
    assert_eq!(pointer(), target, "the pointer is where the model pointed");
    let start = Instant::now();
    let mut clicks = probe.clicks();
    while clicks.is_empty() && start.elapsed() < SHORT {
        std::thread::sleep(Duration::from_millis(50));
        clicks = probe.clicks();
    }
    assert_eq!(clicks, vec![target], "the click landed in the probe window, not on ScreenPilot");
    let audit = s.wait_for("!document.getElementById('task-audit').hidden && document.getElementById('task-audit').tBodies[0].innerText", SHORT).unwrap();
    let audit = audit.as_str().unwrap();
    let where_ = format!("({}, {})", target.0, target.1);
    for want in ["left click", where_.as_str(), "approved, about to run", "executed", "finish (success)", "finished"] {
        assert!(audit.contains(want), "audit table lacks {want:?}: {audit}");
    }
    assert!(!audit.contains('{'), "no raw JSON: {audit}");
    // The task is recorded: the history lists it, and its replay check is identical.
    let row = s.wait_for("(r => r && r.dataset.status === 'success' && r.innerText)(document.querySelector('#task-history tbody tr[data-id]'))", SHORT).unwrap();
    assert!(row.as_str().unwrap().contains("Click the green box"), "history row: {row}");
    s.click("#task-history tbody tr[data-id] .replay-check").unwrap();
    let replay = s.wait_for("(c => c && c.dataset.identical && c.dataset.identical + ': ' + c.textContent)(document.querySelector('#task-history td.replay'))", SHORT).unwrap();
    assert!(replay.as_str().unwrap().starts_with("yes: identical"), "replay check: {replay}");
    s.exec("document.getElementById('task-steps').scrollTop = 0", json!([])).unwrap();
    let png = s.screenshot().unwrap();
    std::fs::write(repo().join("target/e2e-task-screenshot.png"), &png).unwrap();
    if std::env::var_os("SCREENPILOT_UPDATE_SCREENSHOT").is_some() {
        std::fs::write(repo().join("docs/screenshot-task.png"), &png).unwrap();
    }

    // The model never saw the app's window: its screenshots show the probe beneath it. With
    // the window shown (an ordinary capture), the same places show the app.
    let sent = screenshots_sent(&stub);
    assert!(sent.len() >= 2, "a screenshot per step (the second request repeats the first): {}", sent.len());
    for img in &sent {
        assert!(share(img, (ax, ay, aw, ah), app_rgb) < 0.01, "the app's window is in a screenshot the model saw");
        assert!(share(img, probe.rect, PROBE_RGB) > 0.95, "the probe under the app's window is not in the model's screenshot");
    }
    // (The app's own captures hide it too: the control is a grab of the X root window.)
    let grab = Command::new("import").args(["-window", "root", "png:-"]).output().expect("import (ImageMagick)");
    let visible = image::load_from_memory(&grab.stdout).unwrap().to_rgb8();
    assert!(share(&visible, (ax, ay, aw, ah), app_rgb) > 0.2, "control: a capture with the app shown has it");
    assert!(share(&visible, probe.rect, PROBE_RGB) < 0.05, "control: the app covers the probe");

    // 2: rejected with Esc: nothing is clicked, the pointer stays.
    move_pointer(7, 9);
    start_task(&s, "Click the green box again");
    pending_proposal(&s);
    s.press(ESCAPE).unwrap();
    assert!(outcome(&s, "rejected").contains("rejected"));
    assert_eq!(pointer(), (7, 9));
    assert!(probe.clicks().is_empty());
    let audit = s.exec("return document.getElementById('task-audit').tBodies[0].innerText", json!([])).unwrap();
    assert!(audit.as_str().unwrap().contains("rejected by you"), "{audit}");

    // 3 and 4: the Stop button, then the global hotkey, end a task waiting for a decision.
    for how in ["button", "hotkey"] {
        start_task(&s, "Click the green box once more");
        pending_proposal(&s);
        let t0 = Instant::now();
        if how == "button" {
            s.click("#stop").unwrap();
        } else {
            xdotool(&["key", "ctrl+shift+x"]);
        }
        outcome(&s, "stopped");
        assert!(t0.elapsed() < Duration::from_secs(2), "{how}: stopped after {:?}", t0.elapsed());
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(pointer(), (7, 9), "{how}: nothing moved");
        assert!(probe.clicks().is_empty(), "{how}: nothing clicked");
        let audit = s.exec("return document.getElementById('task-audit').tBodies[0].innerText", json!([])).unwrap();
        assert!(audit.as_str().unwrap().contains("stopped"), "{how}: {audit}");
    }
    // Every task is in the history, newest first.
    s.click("#history-refresh").unwrap();
    let statuses = s.wait_for("(l => l.length === 4 && l.join(','))([...document.querySelectorAll('#task-history tbody tr[data-id]')].map(r => r.dataset.status))", SHORT).unwrap();
    assert!(statuses.as_str().unwrap().ends_with("rejected,success"), "history: {statuses}");

    // Calibrate: refused while actions are off; on Xvfb the pointer lands exactly.
    let result = "(u => u.dataset.state && u.dataset.state !== 'running' && u.dataset.state + ': ' + u.innerText)(document.getElementById('calibrate-result'))";
    s.click("#actions-enabled").unwrap();
    s.click("#calibrate").unwrap();
    let refused = s.wait_for(result, SHORT).unwrap();
    assert!(refused.as_str().unwrap().starts_with("error:") && refused.as_str().unwrap().contains("Allow actions"), "{refused}");
    s.exec("document.getElementById('calibrate-result').dataset.state = ''", json!([])).unwrap();
    s.click("#actions-enabled").unwrap();
    s.click("#calibrate").unwrap();
    let calibrated = s.wait_for(result, SHORT).unwrap();
    let calibrated = calibrated.as_str().unwrap();
    assert!(calibrated.starts_with("done:") && calibrated.contains("max error 0.0 px, mean 0.0 px"), "{calibrated}");
    assert!(probe.clicks().is_empty(), "calibration clicks nothing");

    assert_eq!(stub.requests.lock().unwrap().len(), 5, "one model call per step: {:?}", stub.requests.lock().unwrap().iter().map(|r| r["messages"].as_array().map(Vec::len)).collect::<Vec<_>>());

    s.close().unwrap();
    let _ = std::fs::remove_dir_all(&tmp);
}
