//! End-to-end in the real webview: tauri-driver + WebKitWebDriver drive the debug app
//! binary on the X display ($DISPLAY, e.g. Xvfb started by scripts/test.sh). Loads the tiny
//! model, captures the screen, asks (streamed answer) and asks a follow-up (the capture's vision
//! features come from the cache), injects known model output through the debug-only command to
//! check the grounding overlay, rejects a proposed click (the pointer must not move) and accepts
//! one (the pointer must land where the model pointed, read back with xdotool), checks the audit
//! log and the To HTML view (score, difference toggle, save a copy), and chooses the model
//! folder in the native folder picker.
//! Downloads the tiny model from a loopback hub (the app reads $HF_ENDPOINT) with progress,
//! cancels the download and resumes it.
//! Needs tauri-driver (installed here if missing), WebKitWebDriver (Debian: webkit2gtk-driver)
//! and xdotool.

#[path = "support/webdriver.rs"]
mod webdriver;
#[path = "support/app.rs"]
mod app;
// The loopback hub of the desktop crate's download test.
#[path = "../../crates/desktop/tests/support/hub.rs"]
mod hub;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use app::{move_pointer, pointer, repo, view, LAST_TURN, LONG, SHORT};
use screenpilot_desktop::download::CHUNK_BYTES;
use serde_json::json;
use webdriver::Session;

const ENTER: &str = "\u{E007}";
const ESCAPE: &str = "\u{E00C}";

fn inject(s: &Session, text: &str) {
    app::invoke(s, "debug_inject_answer", json!({"text": text}));
}

fn ask(s: &Session, question: &str) {
    let (state, _) = app::ask(s, question, LONG);
    assert_eq!(state, "done", "{question}");
}

fn last_timings(s: &Session) -> (String, String) {
    let v = s.exec(&format!("const t = {LAST_TURN}.querySelector('.timings'); return [t.textContent, t.title]"), json!([])).unwrap();
    (v[0].as_str().unwrap().to_string(), v[1].as_str().unwrap().to_string())
}

#[test]
fn load_capture_ask_ground_and_act_in_the_real_webview() {
    let tmp = std::env::temp_dir().join(format!("sp-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let tiny = repo().join("tests/fixtures/tiny");
    // Downloads go to this hub (the app reads $HF_ENDPOINT); the last chunk of the weights
    // waits for the gate.
    let gate = hub::last_chunk_gate(&tiny, CHUNK_BYTES as u64);
    let hub = hub::HubServer::start(&tiny, Some(gate));
    let (_driver, s) = app::start("e2e", &tmp, &[("HF_ENDPOINT", &hub.url)]);

    // A folder that is not a model: clear error, the app stays usable.
    view(&s, "models");
    s.type_into("#model-path", "/nonexistent/model").unwrap();
    s.click("#load").unwrap();
    let err = s.wait_for("document.getElementById('error').textContent", SHORT).unwrap();
    assert!(err.as_str().unwrap().contains("not a usable model folder"), "{err}");

    // Load the tiny model.
    s.type_into("#model-path", tiny.to_str().unwrap()).unwrap();
    s.click("#load").unwrap();
    let info = s.wait_for("document.getElementById('model-info').dataset.loaded === 'yes' && document.getElementById('model-info').textContent", LONG).unwrap();
    assert!(info.as_str().unwrap().contains("cpu · f32"), "{info}");

    // Capture the (only) monitor.
    s.click("#capture").unwrap();
    let w = s.wait_for("document.getElementById('shot').dataset.captured && document.getElementById('shot').naturalWidth", SHORT).unwrap();
    let screen_w = w.as_i64().unwrap();
    let screen_h = s.exec("return document.getElementById('shot').naturalHeight", json!([])).unwrap().as_i64().unwrap();
    assert!(screen_w >= 640 && screen_h >= 480, "{screen_w}x{screen_h}");

    // The global hotkey Ctrl+Shift+S captures too.
    let before = s.exec("return document.getElementById('shot').dataset.captured", json!([])).unwrap();
    assert!(Command::new("xdotool").args(["key", "ctrl+shift+s"]).status().unwrap().success());
    s.wait_for(&format!("document.getElementById('shot').dataset.captured !== {before}"), SHORT).unwrap();

    // A region dragged on the frozen frame becomes the capture (in screen pixels).
    s.click("#region").unwrap();
    s.drag("#shot", (-100, -50), (100, 50)).unwrap();
    let region_w = s.wait_for(&format!("document.getElementById('shot').naturalWidth < {screen_w} && document.getElementById('shot').naturalWidth"), SHORT).unwrap();
    let shown_w = s.exec("return document.getElementById('shot').getBoundingClientRect().width", json!([])).unwrap().as_f64().unwrap();
    let expected = 200.0 * screen_w as f64 / shown_w;
    assert!((region_w.as_f64().unwrap() - expected).abs() <= 3.0, "region {region_w} px, expected {expected:.1}");
    s.click("#capture").unwrap();
    s.wait_for(&format!("document.getElementById('shot').naturalWidth === {screen_w}"), SHORT).unwrap();

    // Ask the real (random) model: text streams in several pieces, one line of timings.
    ask(&s, "What is on this screen?");
    let pieces: i64 = s.exec(&format!("return Number({LAST_TURN}.dataset.pieces)"), json!([])).unwrap().as_i64().unwrap();
    assert!(pieces >= 2, "streamed in {pieces} pieces");
    let (timings, _) = last_timings(&s);
    assert!(timings.contains("first token") && timings.contains("tok/s"), "{timings}");
    assert!(timings.starts_with("vision ") && !timings.contains("vision cache hit"), "a new capture runs the vision tower: {timings}");

    // A follow-up on the same capture: the engine reuses the capture's vision features and the
    // first turn's KV, and the timings line says so. Both stay in the conversation.
    ask(&s, "And what is in the top left corner?");
    let (timings, counters) = last_timings(&s);
    assert!(timings.contains("vision cache hit") && timings.contains("prompt tokens cached"), "{timings}");
    assert!(timings.contains("first token") && timings.contains("tok/s"), "{timings}");
    assert!(counters.contains("vision cache: 1 hits, 1 misses"), "{counters}");
    assert_eq!(s.exec("return document.querySelectorAll('#messages .turn').length", json!([])).unwrap(), json!(2));

    // Known grounding output draws a labelled box at the right place.
    inject(&s, "Here:\n```json\n[{\"bbox_2d\": [100, 200, 300, 400], \"label\": \"OK button\"}]\n```");
    ask(&s, "Where is the OK button?");
    s.wait_for("document.querySelectorAll('#overlay .shape.box').length === 1", SHORT).unwrap();
    let b = s.exec("const b = document.querySelector('#overlay .shape.box'); return [b.style.left, b.style.top, b.style.width, b.textContent];", json!([])).unwrap();
    let (cx, cy) = (screen_w * 200 / 1000, screen_h * 300 / 1000);
    assert_eq!(b[0], json!("10%"));
    assert_eq!(b[1], json!("20%"));
    assert_eq!(b[2], json!("20%"));
    assert_eq!(b[3], json!(format!("OK button ({cx}, {cy})")));

    // A proposed click: rejected with Esc (the pointer stays), accepted with Enter (it moves).
    let click = "<tool_call>\n{\"name\": \"computer_use\", \"arguments\": {\"action\": \"mouse_move\", \"coordinate\": [250, 500]}}\n</tool_call>";
    let target = ((screen_w * 250 / 1000) as i32, (screen_h * 500 / 1000) as i32);
    inject(&s, click);
    s.click("#actions-enabled").unwrap();
    move_pointer(7, 9);
    ask(&s, "Move to the middle left");
    let text = s.wait_for("!document.getElementById('proposal').hidden && document.getElementById('proposal-text').textContent", SHORT).unwrap();
    assert!(text.as_str().unwrap().contains(&format!("({}, {})", target.0, target.1)), "{text}");
    s.wait_for("document.querySelectorAll('#overlay .marker').length === 1", SHORT).unwrap();
    s.press(ESCAPE).unwrap();
    s.wait_for("document.getElementById('action-status').textContent === 'rejected'", SHORT).unwrap();
    assert_eq!(pointer(), (7, 9), "a rejected action must not move the pointer");

    ask(&s, "Move to the middle left");
    s.wait_for("!document.getElementById('proposal').hidden", SHORT).unwrap();
    s.press(ENTER).unwrap();
    s.wait_for("document.getElementById('action-status').textContent === 'executed'", SHORT).unwrap();
    assert_eq!(pointer(), target, "the accepted action moves the pointer where the model pointed");

    // The audit log has both decisions, as a table (in the Task view).
    view(&s, "task");
    s.click("#audit-open").unwrap();
    let audit = s.wait_for("!document.getElementById('audit').hidden && document.getElementById('audit').tBodies[0].innerText", SHORT).unwrap();
    let audit = audit.as_str().unwrap();
    assert!(audit.contains("rejected by you") && audit.contains("executed") && audit.contains("move the pointer"), "{audit}");
    assert!(!audit.contains('{'), "no raw JSON: {audit}");
    view(&s, "ask");

    // A box and a point in one answer: both drawn on the capture.
    move_pointer(7, 9);
    inject(&s, "The dialog's confirm button:\n```json\n[{\"bbox_2d\": [60, 120, 420, 330], \"label\": \"screen\"}, {\"point_2d\": [700, 500], \"label\": \"point\"}]\n```");
    ask(&s, "Point at things");
    s.wait_for("document.querySelectorAll('#overlay .shape').length === 2", SHORT).unwrap();

    // Screenshot → HTML: shown beside the capture in a sandboxed iframe, carrying the no-script
    // CSP, saved to a file.
    inject(&s, "```html\n<html><head><title>p</title></head><body style=\"background:#123\"><h1>Hi</h1></body></html>\n```");
    view(&s, "html");
    s.click("#to-html").unwrap();
    let score = s.wait_for("document.getElementById('page-score').textContent.includes('saved to') && document.getElementById('page-score').textContent", LONG).unwrap();
    let frame = s.exec("const f = document.getElementById('page'); return [f.getAttribute('sandbox'), f.srcdoc];", json!([])).unwrap();
    assert_eq!(frame[0], json!(""), "sandboxed without allow-scripts");
    assert!(frame[1].as_str().unwrap().contains("default-src 'none'"), "{frame}");
    let saved = score.as_str().unwrap().rsplit("saved to ").next().unwrap().to_string();
    assert!(std::fs::read_to_string(&saved).unwrap().contains("<h1>Hi</h1>"), "{saved}");
    // Fidelity: the page was rendered at the capture's size by headless Chromium (scripts/setup.sh
    // installs it) and compared with the capture: a score in [0, 1] and a difference image.
    let text = score.as_str().unwrap();
    let value: f64 = text
        .split("fidelity (SSIM) ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no fidelity score shown: {text}"));
    assert!((0.0..=1.0).contains(&value), "{text}");
    let diff = s.exec("const d = document.getElementById('page-diff'); return [d.hidden, d.src.length];", json!([])).unwrap();
    assert_eq!(diff[0], json!(true), "the page shows first: {diff}");
    assert!(diff[1].as_u64().unwrap() > 100, "difference image empty: {diff}");
    s.click("#html-diff-toggle").unwrap();
    let shown = s.exec("return [document.getElementById('page-diff').hidden, document.getElementById('page-frame').hidden]", json!([])).unwrap();
    assert_eq!(shown, json!([false, true]), "the toggle shows the difference instead of the page");
    s.click("#html-diff-toggle").unwrap();
    // "Save…" copies the page where the save dialog says (the command behind it, here).
    let copy = tmp.join("copy.html");
    app::invoke(&s, "html_save", json!({"dest": copy.to_str().unwrap()}));
    assert!(std::fs::read_to_string(&copy).unwrap().contains("<h1>Hi</h1>"));
    let refused = s.exec_async("const done = arguments[arguments.length - 1]; window.__TAURI_INTERNALS__.invoke('html_save', {dest: 'relative.txt'}).then(() => done('saved'), (e) => done(e.message));", json!([])).unwrap();
    assert!(refused.as_str().unwrap().contains(".html"), "{refused}");

    // Open a folder…: the native folder picker (tauri-plugin-dialog) opens at the typed folder; the
    // folder chosen in it replaces the path and is loaded.
    view(&s, "models");
    s.type_into("#model-path", tiny.parent().unwrap().to_str().unwrap()).unwrap();
    s.exec("document.getElementById('model-info').textContent = ''", json!([])).unwrap();
    s.click("#browse").unwrap();
    choose_folder_in_gtk_dialog("Model folder", "tiny");
    let info = s.wait_for("document.getElementById('model-info').textContent.startsWith('tiny ') && document.getElementById('model-info').textContent", LONG).unwrap();
    assert!(info.as_str().unwrap().contains("cpu · f32"), "{info}");
    let picked = s.exec("return document.getElementById('model-path').value", json!([])).unwrap();
    assert_eq!(Path::new(picked.as_str().unwrap()), tiny.as_path());

    download_through_the_ui(&s, &hub, gate, &tiny, &tmp.join("data/dev.screenpilot.app/models"));

    s.close().unwrap();
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Waits for the GTK file chooser titled `title`, types `name` (relative to the folder it
/// shows) into its location field and accepts it. xdotool focuses the dialog explicitly, as
/// there is no window manager.
fn choose_folder_in_gtk_dialog(title: &str, name: &str) {
    let find = || {
        let out = Command::new("xdotool").args(["search", "--onlyvisible", "--name", &format!("^{title}$")]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().next().map(str::to_string)
    };
    let start = Instant::now();
    let window = loop {
        if let Some(id) = find() {
            break id;
        }
        assert!(start.elapsed() < SHORT, "no '{title}' dialog appeared");
        std::thread::sleep(Duration::from_millis(100));
    };
    let xdo = |args: &[&str]| assert!(Command::new("xdotool").args(args).status().unwrap().success(), "xdotool {args:?}");
    // The dialog may take a moment to take keys after it maps (more on a busy machine): type the
    // name again until it closes.
    let start = Instant::now();
    while find().is_some() {
        xdo(&["windowfocus", "--sync", &window]);
        std::thread::sleep(Duration::from_millis(500));
        xdo(&["key", "--clearmodifiers", "ctrl+l"]);
        xdo(&["key", "--clearmodifiers", "ctrl+a"]);
        xdo(&["type", "--delay", "20", name]);
        std::thread::sleep(Duration::from_millis(300));
        // Drop a selected inline completion (e.g. a trailing "/", which would open the folder).
        xdo(&["key", "Delete", "Return"]);
        let tried = Instant::now();
        while find().is_some() && tried.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(100));
        }
        if find().is_some() && start.elapsed() > SHORT {
            let _ = Command::new("import").args(["-window", "root", repo().join("target/e2e-dialog.png").to_str().unwrap()]).status();
            panic!("the '{title}' dialog did not accept {name} (screen: target/e2e-dialog.png)");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

const PROGRESS: &str = "document.getElementById('download-progress').value";

/// Downloads the tiny model from the loopback hub through the UI: the progress bar moves while
/// the last chunk of the weights is held at `gate`, Cancel stops the download, Download resumes
/// it from the committed offset, and the downloaded folder is loaded. `cache` is the app's
/// models folder.
fn download_through_the_ui(s: &Session, hub: &hub::HubServer, gate: u64, tiny: &Path, cache: &Path) {
    let big_size = std::fs::metadata(tiny.join(hub::BIG)).unwrap().len();
    s.type_into("#repo", hub::REPO).unwrap();
    s.click("#download").unwrap();
    assert!(hub.wait_blocked(LONG), "the download never reached the gate");
    let deadline = Instant::now() + SHORT;
    while hub::committed(cache, big_size) != Some(gate) {
        assert!(Instant::now() < deadline, "the app never committed the chunks before the gate in {}", cache.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = s.wait_for(&format!("{PROGRESS} > 0 && document.getElementById('download-status').textContent"), SHORT).unwrap();
    assert!(status.as_str().unwrap().contains(hub::BIG), "{status}");
    let moved = s.exec(&format!("return {PROGRESS}"), json!([])).unwrap().as_f64().unwrap();
    assert!(moved > 0.0 && moved < 1.0, "progress while held at the gate: {moved}");

    s.click("#download-cancel").unwrap();
    s.wait_for("document.getElementById('error').textContent === 'cancelled' && document.getElementById('download-cancel').disabled && document.getElementById('download-status').textContent.startsWith('cancelled')", SHORT).unwrap();
    let before = hub.requests().len();

    hub.open_gate();
    s.click("#download").unwrap();
    let info = s
        .wait_for(
            &format!("document.getElementById('download-status').textContent === 'downloaded' && document.getElementById('model-info').dataset.loaded === 'yes' && document.getElementById('model-info').textContent.startsWith('{}') && document.getElementById('model-info').textContent", hub::REPO),
            LONG,
        )
        .unwrap();
    assert!(info.as_str().unwrap().contains("cpu · f32"), "{info}");
    assert_eq!(s.exec(&format!("return {PROGRESS}"), json!([])).unwrap(), json!(1), "the progress bar ends full");
    let path = s.exec("return document.getElementById('model-path').value", json!([])).unwrap();
    assert!(Path::new(path.as_str().unwrap()).starts_with(cache), "{path}");
    let resumed: Vec<_> = hub.requests()[before..].iter().filter(|(f, a, b)| f == hub::BIG && !(*a == 0 && *b == 0)).map(|r| r.1).collect();
    assert_eq!(resumed.iter().min(), Some(&gate), "resumed at the committed offset: {resumed:?}");

    // The download is listed as installed with its size on disk; Delete (asked twice) removes it
    // from the list and from the disk.
    let row = format!("#installed tbody tr[data-path='{}']", path.as_str().unwrap());
    let size = s.wait_for(&format!("(r => r && r.cells[2].textContent)(document.querySelector(\"{row}\"))"), SHORT).unwrap();
    assert!(size.as_str().unwrap().ends_with("MB") || size.as_str().unwrap().ends_with("kB"), "size on disk: {size}");
    // The list may still be re-rendered by the load that just finished (a new button, the click
    // on the old one lost): the first click counts once the button shows it is armed.
    let armed = format!("document.querySelector(\"{row} .delete-model\").dataset.armed === 'yes'");
    s.click(&format!("{row} .delete-model")).unwrap();
    if s.wait_for(&armed, SHORT).is_err() {
        s.click(&format!("{row} .delete-model")).unwrap();
        s.wait_for(&armed, SHORT).unwrap();
    }
    s.click(&format!("{row} .delete-model")).unwrap();
    s.wait_for(&format!("!document.querySelector(\"{row}\")"), SHORT).unwrap();
    let repo_dir = cache.join(format!("models--{}", hub::REPO.replace('/', "--")));
    assert!(!repo_dir.exists(), "{} is still on disk", repo_dir.display());
}
