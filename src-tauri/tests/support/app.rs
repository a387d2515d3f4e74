//! Starting the debug app under tauri-driver for the end-to-end tests, and reading the X
//! pointer with xdotool. Shared by the e2e_*.rs tests (`#[path]`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::webdriver::Session;

pub const LONG: Duration = Duration::from_secs(300);
pub const SHORT: Duration = Duration::from_secs(30);

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().unwrap()
}

fn tauri_driver() -> PathBuf {
    let cargo_bin = std::env::var("CARGO_HOME").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo")).join("bin");
    let path = cargo_bin.join("tauri-driver");
    if !path.exists() {
        let ok = Command::new("cargo").args(["install", "tauri-driver", "--locked", "--version", "2.1.0"]).status().unwrap().success();
        assert!(ok, "cargo install tauri-driver failed");
    }
    path
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn pointer() -> (i32, i32) {
    let out = Command::new("xdotool").args(["getmouselocation", "--shell"]).output().expect("xdotool");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).and_then(|v| v.parse().ok()).unwrap();
    (get("X="), get("Y="))
}

pub fn move_pointer(x: i32, y: i32) {
    assert!(Command::new("xdotool").args(["mousemove", &x.to_string(), &y.to_string()]).status().unwrap().success());
    assert_eq!(pointer(), (x, y));
}

/// tauri-driver in its own process group, so that dropping it also ends the
/// WebKitWebDriver and app processes it started (even when the test panics).
pub struct Driver(Child);
impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let _ = self.0.wait();
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
    }
}

/// Starts tauri-driver (config and data under `tmp`, plus `env`) and the app in it; returns
/// once the UI is ready.
pub fn start(name: &str, tmp: &Path, env: &[(&str, &str)]) -> (Driver, Session) {
    assert!(std::env::var("DISPLAY").is_ok(), "needs an X display (scripts/test.sh starts Xvfb)");
    let (port, native) = (free_port(), free_port());
    let mut cmd = Command::new(tauri_driver());
    cmd.args(["--port", &port.to_string(), "--native-port", &native.to_string()])
        .env("XDG_CONFIG_HOME", tmp.join("config"))
        .env("XDG_DATA_HOME", tmp.join("data"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(std::env::temp_dir().join(format!("sp-{name}-{}-driver.log", std::process::id()))).unwrap())
        .process_group(0);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let driver = Driver(cmd.spawn().expect("start tauri-driver"));
    let base = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    while ureq::get(&format!("{base}/status")).call().is_err() {
        assert!(start.elapsed() < SHORT, "tauri-driver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = Session::new(&base, env!("CARGO_BIN_EXE_screenpilot-app")).unwrap();
    s.wait_for("document.body.dataset.ready === 'yes'", SHORT).unwrap();
    (driver, s)
}

/// Calls a command of the app from the page; its result, or panics with its error.
pub fn invoke(s: &Session, cmd: &str, args: serde_json::Value) -> serde_json::Value {
    let v = s
        .exec_async(
            "const done = arguments[arguments.length - 1];\
             window.__TAURI_INTERNALS__.invoke(arguments[0], arguments[1]).then((v) => done({ok: v === undefined ? null : v}), (e) => done({err: e}));",
            serde_json::json!([cmd, args]),
        )
        .unwrap();
    assert!(v.get("err").is_none(), "{cmd}: {v}");
    v["ok"].clone()
}

/// JS for the newest question-and-answer of the open conversation.
pub const LAST_TURN: &str = "document.querySelector('#messages .turn:last-child')";

/// Types `question` into the composer, sends it and waits until its answer has ended (done,
/// cancelled or error); the answer's state and its text as shown (trimmed).
pub fn ask(s: &Session, question: &str, timeout: Duration) -> (String, String) {
    let before = s.exec("return document.querySelectorAll('#messages .turn').length", serde_json::json!([])).unwrap().as_u64().unwrap();
    s.type_into("#question", question).unwrap();
    s.click("#send").unwrap();
    let expr = format!(
        "document.querySelectorAll('#messages .turn').length > {before} && (t => t.dataset.state !== 'running' && [t.dataset.state, t.querySelector('.answer').textContent])({LAST_TURN})"
    );
    let v = s.wait_for(&expr, timeout).unwrap();
    (v[0].as_str().unwrap().to_string(), v[1].as_str().unwrap().trim().to_string())
}

/// Shows view `name` (ask, task, html, models, settings) through its tab.
pub fn view(s: &Session, name: &str) {
    s.click(&format!("#tab-{name}")).unwrap();
    s.wait_for(&format!("document.body.dataset.view === '{name}' || (document.body.dataset.view === 'welcome' && '{name}' === 'ask')"), SHORT).unwrap();
}

/// Saves a WebDriver screenshot of the window as target/<name>.png, and as docs/<name>.png
/// when `SCREENPILOT_UPDATE_SCREENSHOT` is set (the README shows those).
pub fn save_screenshot(s: &Session, name: &str) -> Vec<u8> {
    // Let layout and images settle: WebKitGTK's screenshot right after a change can show an
    // older frame (two animation frames are not always enough).
    s.exec_async("const done = arguments[arguments.length - 1]; requestAnimationFrame(() => requestAnimationFrame(() => done(null)));", serde_json::json!([])).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let png = s.screenshot().unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    std::fs::write(repo().join(format!("target/{name}.png")), &png).unwrap();
    if std::env::var_os("SCREENPILOT_UPDATE_SCREENSHOT").is_some() {
        std::fs::create_dir_all(repo().join("docs")).unwrap();
        std::fs::write(repo().join(format!("docs/{name}.png")), &png).unwrap();
    }
    png
}
