//! The app as a person uses it, end to end in the real webview (tauri-driver + WebKitWebDriver,
//! the debug app on $DISPLAY, e.g. Xvfb from scripts/test.sh), over an ordinary screen: a page
//! shown by Chromium *under* ScreenPilot's window (tests/fixtures/screen/desktop.html).
//!
//! - first run: the welcome steps; the model list marks what fits a faked device
//!   (`SCREENPILOT_FAKE_MEMORY`) exactly as the catalog computes it;
//! - settings: bad values get inline messages and nothing is saved; good ones are saved, the
//!   token cost of a capture follows the cap, and a new capture hotkey works at once;
//! - a capture never contains the app (the page beneath is there instead; a root-window grab
//!   with the app shown has it);
//! - a conversation: the tiny model answers, the follow-up is a vision-cache hit; an answer in
//!   Markdown renders as lists, tables and code with copy buttons (the copy reaches the X
//!   clipboard), and its `<script>` is shown as text, never run;
//! - conversations survive a restart, open with their capture and answers, go on, and delete;
//! - the capture hotkey and the tray's Capture work with the window hidden, and show it;
//! - light or dark as the desktop is (a GTK dark theme gives the dark colours).
//!
//! Saves target/app-*.png (and docs/app-*.png with `SCREENPILOT_UPDATE_SCREENSHOT=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/webdriver.rs"]
mod webdriver;
#[path = "support/app.rs"]
mod app;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use image::RgbImage;
use serde_json::json;
use webdriver::Session;
use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConfigureWindowAux, ConnectionExt, StackMode};

use app::{ask, repo, save_screenshot, view, LAST_TURN, LONG, SHORT};
use screenpilot_desktop::catalog;
use screenpilot_desktop::settings::image_tokens;

const FAKE_MEMORY: &str = "gpu=8GiB,ram=16GiB";

fn xdotool(args: &[&str]) -> String {
    let out = Command::new("xdotool").args(args).output().expect("xdotool");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Chromium showing the fixture page full-screen, lowered beneath every other window.
struct Page(Child);
impl Page {
    fn show(tmp: &Path) -> Self {
        let page = repo().join("tests/fixtures/screen/desktop.html");
        let child = Command::new("chromium")
            .args(["--no-sandbox", "--test-type", "--disable-infobars", "--no-first-run", "--disable-gpu", "--password-store=basic", "--window-position=0,0", "--window-size=1920,1080"])
            .arg(format!("--user-data-dir={}", tmp.join("chromium").display()))
            .arg(format!("--app=file://{}", page.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium (scripts/setup.sh installs it)");
        let start = Instant::now();
        let id = loop {
            let ids = xdotool(&["search", "--onlyvisible", "--name", "Invoice settings"]);
            if let Some(id) = ids.lines().next() {
                break id.trim().parse::<u32>().unwrap();
            }
            assert!(start.elapsed() < LONG, "the fixture page did not appear");
            std::thread::sleep(Duration::from_millis(200));
        };
        // Beneath ScreenPilot's window.
        let (conn, _) = x11rb::connect(None).unwrap();
        conn.configure_window(id, &ConfigureWindowAux::new().stack_mode(StackMode::BELOW)).unwrap();
        conn.flush().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        Self(child)
    }
}
impl Drop for Page {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn decode_png(png: &[u8]) -> RgbImage {
    image::load_from_memory(png).unwrap().to_rgb8()
}

fn shown_capture(s: &Session) -> RgbImage {
    let src = s.exec("return document.getElementById('shot').src", json!([])).unwrap();
    let b64 = src.as_str().unwrap().split_once("base64,").unwrap().1.to_string();
    decode_png(&base64::engine::general_purpose::STANDARD.decode(b64).unwrap())
}

/// The whole X screen as it is now (ImageMagick's root-window grab).
fn root_grab() -> RgbImage {
    let out = Command::new("import").args(["-window", "root", "png:-"]).output().expect("import (ImageMagick)");
    assert!(out.status.success());
    decode_png(&out.stdout)
}

/// The fraction of `rect`'s pixels that are the same in `a` and `b`.
fn same(a: &RgbImage, b: &RgbImage, rect: (i32, i32, i32, i32)) -> f64 {
    let (x0, y0, w, h) = rect;
    let (mut n, mut hit) = (0u64, 0u64);
    for y in y0.max(0)..(y0 + h).min(a.height().min(b.height()) as i32) {
        for x in x0.max(0)..(x0 + w).min(a.width().min(b.width()) as i32) {
            n += 1;
            hit += u64::from(a.get_pixel(x as u32, y as u32) == b.get_pixel(x as u32, y as u32));
        }
    }
    hit as f64 / n.max(1) as f64
}

fn wait_window(shown: bool) {
    let start = Instant::now();
    while app_window().is_some() != shown {
        assert!(start.elapsed() < SHORT, "the window did not {}", if shown { "show" } else { "hide" });
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn app_window() -> Option<(i32, i32, i32, i32)> {
    let id = xdotool(&["search", "--onlyvisible", "--name", "^ScreenPilot$"]);
    let id = id.lines().next()?.to_string();
    let g = xdotool(&["getwindowgeometry", "--shell", &id]);
    let get = |k: &str| g.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).and_then(|v| v.parse().ok()).unwrap();
    Some((get("X"), get("Y"), get("WIDTH"), get("HEIGHT")))
}

/// The page's background colour.
fn background(s: &Session) -> [u8; 3] {
    let v = s.exec("return getComputedStyle(document.body).backgroundColor", json!([])).unwrap();
    let n: Vec<u8> = v.as_str().unwrap().trim_start_matches("rgb(").trim_end_matches(')').split(',').map(|x| x.trim().parse().unwrap()).collect();
    [n[0], n[1], n[2]]
}

fn thread_count(s: &Session) -> usize {
    s.exec("return document.querySelectorAll('#threads li').length", json!([])).unwrap().as_u64().unwrap() as usize
}

fn wait_threads(s: &Session, n: usize) {
    s.wait_for(&format!("document.querySelectorAll('#threads li').length === {n}"), SHORT).unwrap();
}

fn set(s: &Session, id: &str, value: &str) {
    s.exec("const e = document.getElementById(arguments[0]); e.value = arguments[1]; e.dispatchEvent(new Event('input'))", json!([id, value])).unwrap();
}

fn field_error(s: &Session, field: &str) -> String {
    s.exec("return document.querySelector(`.field-error[data-for='${arguments[0]}']`).textContent", json!([field])).unwrap().as_str().unwrap().to_string()
}

const MARKDOWN: &str = "The form failed because the **VAT number** is invalid.\n\n\
1. Open *Invoice settings*\n2. Fix the VAT number\n3. Click **Save changes**\n\n\
| Field | Value |\n|---|---|\n| Company | Acme Trading Ltd |\n| VAT | GB12345 |\n\n\
```python\nprint(\"GB\" + \"123456789\")\n```\n\n\
<script>window.__pwned = 1</script> <img src=x onerror=\"window.__pwned = 2\">\n\n\
The button:\n\n```json\n[{\"bbox_2d\": [225, 578, 310, 619], \"label\": \"Save changes\"}]\n```";

/// A page like the fixture, as a model might write it.
const PAGE: &str = "```html\n<!doctype html><html><head><style>body{margin:0;font:15px sans-serif;background:#e8eef9}\
header{background:#1e3a8a;color:#fff;padding:14px 28px;font-size:20px;font-weight:bold}\
section{background:#fff;margin:28px 28px 28px 272px;padding:24px 28px;border-radius:8px;max-width:900px}\
.e{background:#fee2e2;color:#991b1b;padding:10px 14px;border-radius:6px}input{display:block;width:420px;padding:8px;margin:6px 0 14px}\
button{padding:9px 22px;border-radius:6px}.p{background:#16a34a;color:#fff;border:0}</style></head><body>\
<header>Acme Books</header><section><h2>Invoice settings</h2><div class=e>Could not save: the VAT number is not valid.</div>\
<label>Company name<input value=\"Acme Trading Ltd\"></label><label>VAT number<input value=\"GB12345\"></label>\
<button>Cancel</button> <button class=p>Save changes</button></section></body></html>\n```";

#[test]
fn conversations_models_settings_and_window_behaviour_as_a_user_sees_them() {
    let tmp = std::env::temp_dir().join(format!("sp-e2e-app-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let tiny = repo().join("tests/fixtures/tiny");
    let env = [("SCREENPILOT_FAKE_MEMORY", FAKE_MEMORY)];
    let (driver, s) = app::start("e2e-app", &tmp, &env);
    let _page = Page::show(&tmp);

    // First run: the welcome steps, nothing loaded, nothing stored.
    assert_eq!(s.exec("return document.body.dataset.view", json!([])).unwrap(), json!("welcome"));
    assert_eq!(thread_count(&s), 0);
    save_screenshot(&s, "app-welcome");

    // The model list marks fits as the catalog computes them for the faked device.
    s.click("#welcome-models").unwrap();
    s.wait_for("document.querySelectorAll('#catalog tbody tr').length > 0", SHORT).unwrap();
    let marks = s.exec("return [...document.querySelectorAll('#catalog tbody tr')].map(r => [r.dataset.repo, r.dataset.fit])", json!([])).unwrap();
    let memory = catalog::parse_memory_override(FAKE_MEMORY).unwrap();
    let expected: Vec<_> = catalog::rows(&memory, &[]).iter().map(|r| json!([r.entry.repo, r.fit])).collect();
    assert_eq!(marks, json!(expected), "fit marks for {FAKE_MEMORY}");
    let kinds: std::collections::BTreeSet<_> = expected.iter().map(|r| r[1].as_str().unwrap().to_string()).collect();
    assert!(kinds.len() >= 2, "an 8 GiB GPU fits some models and not others: {kinds:?}");
    let line = s.exec("return document.getElementById('device-line').textContent", json!([])).unwrap();
    assert!(line.as_str().unwrap().contains("8 GiB") && line.as_str().unwrap().contains("16 GiB"), "{line}");
    save_screenshot(&s, "app-models");

    // Settings: bad values are refused inline and nothing is saved.
    s.type_into("#model-path", tiny.to_str().unwrap()).unwrap();
    s.click("#load").unwrap();
    s.wait_for("document.getElementById('model-info').dataset.loaded === 'yes'", LONG).unwrap();
    let settings_file = tmp.join("config/dev.screenpilot.app/settings.json");
    let saved_before = std::fs::read_to_string(&settings_file).unwrap();
    view(&s, "settings");
    set(&s, "set-tokens", "10");
    set(&s, "set-hotkey-capture", "Ctrl+Shift");
    set(&s, "set-thread-days", "-3");
    s.click("#settings-save").unwrap();
    s.wait_for("document.getElementById('settings-status').dataset.state === 'invalid'", SHORT).unwrap();
    save_screenshot(&s, "app-settings-invalid");
    for field in ["max_image_tokens", "hotkey_capture", "thread_days"] {
        assert!(!field_error(&s, field).is_empty(), "no inline message for {field}");
    }
    assert!(field_error(&s, "hotkey_stop").is_empty());
    assert_eq!(std::fs::read_to_string(&settings_file).unwrap(), saved_before, "invalid settings were saved");
    // Good values: saved; the cost line follows the cap; the new hotkey captures at once.
    set(&s, "set-tokens", "512");
    let cost = image_tokens(1920, 1080, Some(512));
    let line = s.wait_for(&format!("document.getElementById('set-tokens-cost').textContent.includes('costs {cost} image tokens') && document.getElementById('set-tokens-cost').textContent"), SHORT).unwrap();
    assert!(line.as_str().unwrap().contains("1920×1080"), "{line}");
    set(&s, "set-hotkey-capture", "Ctrl+Alt+K");
    set(&s, "set-thread-days", "30");
    s.click("#settings-save").unwrap();
    s.wait_for("document.getElementById('settings-status').dataset.state === 'saved'", SHORT).unwrap();
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&settings_file).unwrap()).unwrap();
    assert_eq!((saved["max_image_tokens"].clone(), saved["hotkey_capture"].clone()), (json!(512), json!("Ctrl+Alt+K")));
    save_screenshot(&s, "app-settings");

    // A capture never has the app in it: where the app's window is, it shows exactly what is
    // beneath (a root grab with the app hidden), while a root grab with the app shown differs.
    let rect = app_window().expect("the app's window is shown");
    app::invoke(&s, "debug_hide_window", json!({}));
    wait_window(false);
    let beneath = root_grab();
    app::invoke(&s, "debug_tray", json!({"id": "toggle"}));
    wait_window(true);
    let with_app = root_grab();
    s.click("#new-capture").unwrap();
    s.wait_for("document.body.dataset.view === 'ask' && !!document.getElementById('shot').dataset.captured", SHORT).unwrap();
    wait_threads(&s, 1);
    let shot = shown_capture(&s);
    shot.save(repo().join("target/app-capture.png")).unwrap();
    assert!(same(&shot, &beneath, rect) > 0.98, "the capture shows what is beneath the app: {}", same(&shot, &beneath, rect));
    assert!(same(&with_app, &beneath, rect) < 0.5, "control: the app covers it when shown");

    // A conversation with the tiny model: the follow-up reuses the capture's vision features.
    let (state, _) = ask(&s, "What is wrong on this screen?", LONG);
    assert_eq!(state, "done");
    let t = s.exec(&format!("return {LAST_TURN}.querySelector('.timings').textContent"), json!([])).unwrap();
    assert!(t.as_str().unwrap().starts_with("vision ") && t.as_str().unwrap().contains("first token"), "{t}");
    let (state, _) = ask(&s, "And how do I fix it?", LONG);
    assert_eq!(state, "done");
    let t = s.exec(&format!("return {LAST_TURN}.querySelector('.timings').textContent"), json!([])).unwrap();
    assert!(t.as_str().unwrap().starts_with("vision cache hit") && t.as_str().unwrap().contains("prompt tokens cached"), "{t}");

    // Markdown, rendered and inert.
    app::invoke(&s, "debug_inject_answer", json!({"text": MARKDOWN}));
    let (state, text) = ask(&s, "Why did saving fail?", SHORT);
    assert_eq!(state, "done");
    assert!(text.contains("<script>window.__pwned = 1</script>"), "the script is shown as text: {text}");
    let dom = s.exec(&format!("const a = {LAST_TURN}.querySelector('.answer'); return [a.querySelectorAll('ol li').length, a.querySelectorAll('table td').length, a.querySelectorAll('pre code').length, a.querySelectorAll('strong').length, document.querySelectorAll('#messages script, #messages img').length, window.__pwned === undefined]"), json!([])).unwrap();
    assert_eq!(dom, json!([3, 4, 2, 2, 0, true]), "list items, table cells, code blocks, bold, no script or img, nothing ran");
    s.wait_for("document.querySelectorAll('#overlay .shape.box').length === 1", SHORT).unwrap();
    let label = s.exec("return document.querySelector('#overlay .shape.box').title", json!([])).unwrap();
    assert!(label.as_str().unwrap().starts_with("Save changes: screen "), "hover shows where the box is: {label}");
    // Copy a code block: it reaches the X clipboard.
    s.click("#messages .turn:last-child .code-block button.copy").unwrap();
    s.wait_for(&format!("{LAST_TURN}.querySelector('.code-block button.copy').dataset.copied === 'yes'"), SHORT).unwrap();
    let clip = Command::new("xclip").args(["-o", "-selection", "clipboard"]).output().expect("xclip");
    assert_eq!(String::from_utf8_lossy(&clip.stdout).trim_end(), "print(\"GB\" + \"123456789\")");
    // A Thinking model's reasoning is folded away above its answer.
    app::invoke(&s, "debug_inject_answer", json!({"text": "<think>\nThe banner says the VAT number is invalid.\n</think>\n\nThe **VAT number** is not valid."}));
    let (state, _) = ask(&s, "Short answer?", SHORT);
    assert_eq!(state, "done");
    let folded = s.exec(&format!("const a = {LAST_TURN}.querySelector('.answer'); const d = a.querySelector('details.reasoning'); return [!!d && !d.open, d && d.textContent.includes('banner says'), a.lastElementChild.textContent]"), json!([])).unwrap();
    assert_eq!(folded, json!([true, true, "The VAT number is not valid."]));

    // Everything a person can operate has a name a screen reader can say.
    let unnamed = s.exec("return [...document.querySelectorAll('button, input, select, textarea, [role=tab]')].filter(e => e.getClientRects().length && e.type !== 'hidden').filter(e => !((e.getAttribute('aria-label') || (e.labels && [...e.labels].map(l => l.textContent).join('')) || e.textContent || e.title || e.placeholder || '').trim())).map(e => e.outerHTML.slice(0, 80))", json!([])).unwrap();
    assert_eq!(unnamed, json!([]), "controls without an accessible name");

    let title = s.exec("return document.querySelector('#threads li .thread-title').textContent", json!([])).unwrap();
    assert_eq!(title, json!("What is wrong on this screen?"));
    save_screenshot(&s, "app-ask");

    // To HTML: the page beside the capture it was made from, with its score.
    app::invoke(&s, "debug_inject_answer", json!({"text": PAGE}));
    view(&s, "html");
    s.click("#to-html").unwrap();
    s.wait_for("document.getElementById('page-score').textContent.includes('saved to')", LONG).unwrap();
    let shown = s.exec("return [document.getElementById('html-shot').naturalWidth, document.getElementById('page').style.width, document.getElementById('to-html').textContent]", json!([])).unwrap();
    assert_eq!(shown, json!([1920, "1920px", "Regenerate"]), "the page is laid out at the capture's size beside it");
    save_screenshot(&s, "app-html");
    view(&s, "ask");

    // The capture hotkey (Ctrl+Alt+K since the settings changed) works with the window hidden
    // and shows it; the old one does nothing now.
    app::invoke(&s, "debug_hide_window", json!({}));
    wait_window(false);
    xdotool(&["key", "ctrl+shift+s"]);
    std::thread::sleep(Duration::from_millis(800));
    assert!(app_window().is_none(), "the old hotkey no longer captures");
    xdotool(&["key", "ctrl+alt+k"]);
    wait_threads(&s, 2);
    wait_window(true);
    assert!(same(&shown_capture(&s), &beneath, rect) > 0.98, "the hotkey capture has no app in it");
    assert_eq!(s.exec("return document.querySelectorAll('#messages .turn').length", json!([])).unwrap(), json!(0), "a new capture starts a new conversation");
    // The tray's Capture does the same.
    app::invoke(&s, "debug_tray", json!({"id": "capture"}));
    wait_threads(&s, 3);

    // Restart: the conversations are still there and go on where they were.
    s.close().unwrap();
    drop(driver);
    let (_driver, s) = app::start("e2e-app", &tmp, &env);
    wait_threads(&s, 3);
    s.click("#threads li:last-child .thread-open").unwrap();
    s.wait_for("document.querySelectorAll('#messages .turn').length === 4", SHORT).unwrap();
    let turns = s.exec("return [...document.querySelectorAll('#messages .turn')].map(t => [t.querySelector('.q').textContent, !!t.querySelector('.timings')])", json!([])).unwrap();
    assert_eq!(turns[0][0], json!("You asked: What is wrong on this screen?"));
    assert!(turns.as_array().unwrap().iter().all(|t| t[1] == json!(true)), "each answer keeps its timings line: {turns}");
    const THIRD: &str = "document.querySelector('#messages .turn:nth-child(3)')";
    assert_eq!(s.exec(&format!("return {THIRD}.querySelectorAll('table td').length"), json!([])).unwrap(), json!(4), "Markdown again");
    // The last answer has no box; an earlier one's is drawn on request.
    assert_eq!(s.exec("return document.querySelectorAll('#overlay .shape').length", json!([])).unwrap(), json!(0));
    s.exec(&format!("{THIRD}.querySelector('.show-shapes').click()"), json!([])).unwrap();
    s.wait_for("document.querySelectorAll('#overlay .shape.box').length === 1", SHORT).unwrap();
    s.wait_for("document.getElementById('model-info').dataset.loaded === 'yes'", LONG).unwrap();
    let (state, _) = ask(&s, "Anything else?", LONG);
    assert_eq!(state, "done");
    let turns = app::invoke(&s, "threads_list", json!({}));
    let opened = turns.as_array().unwrap().iter().find(|t| t["title"] == json!("What is wrong on this screen?")).unwrap();
    assert_eq!(opened["turns"], json!(5), "the follow-up after the restart is stored with its conversation");

    // Deleting a conversation removes it from the list and from disk.
    let id = opened["id"].as_str().unwrap().to_string();
    let dir = tmp.join("data/dev.screenpilot.app/threads").join(&id);
    assert!(dir.is_dir(), "{}", dir.display());
    s.click(&format!("#threads li[data-id='{id}'] .thread-delete")).unwrap();
    wait_threads(&s, 2);
    assert!(!dir.exists(), "deleted from disk");
    let light = background(&s);
    s.close().unwrap();
    drop(_driver);

    // Dark, when the desktop is dark (a GTK dark theme here).
    let dark_env = [env[0], ("GTK_THEME", "Adwaita:dark")];
    let (_driver, s) = app::start("e2e-app", &tmp, &dark_env);
    let dark = background(&s);
    let luma = |c: [u8; 3]| 0.2126 * f64::from(c[0]) + 0.7152 * f64::from(c[1]) + 0.0722 * f64::from(c[2]);
    assert!(luma(light) > 200.0 && luma(dark) < 50.0, "light {light:?}, dark {dark:?}");
    s.click("#threads li:first-child .thread-open").unwrap();
    s.wait_for("!!document.getElementById('shot').dataset.captured", SHORT).unwrap();
    save_screenshot(&s, "app-dark");

    s.close().unwrap();
    let _ = std::fs::remove_dir_all(&tmp);
}
