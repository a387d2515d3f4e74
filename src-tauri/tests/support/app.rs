//! Starting the debug app under tauri-driver for the end-to-end tests, and reading the X
//! pointer with xdotool. Shared by e2e.rs and e2e_task.rs (`#[path]`).
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

fn free_port() -> u16 {
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
