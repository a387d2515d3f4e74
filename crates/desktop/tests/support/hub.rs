//! A hub-shaped HTTP server on 127.0.0.1 for tests: serves a model folder as the repo [`REPO`]
//! at revision `main` (`/api/models/{repo}/revision/main` lists the files,
//! `/{repo}/resolve/main/{file}` serves byte ranges with the ETag and commit headers hf-hub
//! reads). It records every ranged request, and can hold back requests for [`BIG`] from a byte
//! offset on (a "gate") so that a test can cancel a download in the middle and resume it.
//! Shared by crates/desktop/tests/download.rs and the app's end-to-end test (src-tauri/tests/e2e.rs).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// The repo id the server answers for.
pub const REPO: &str = "test-org/tiny-qwen3-vl";
/// The commit `main` resolves to.
pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
/// The weights file (the one the gate holds back).
pub const BIG: &str = "model.safetensors";
/// The files of a model folder the server serves.
pub const FILES: [&str; 5] = ["config.json", "generation_config.json", "preprocessor_config.json", "tokenizer.json", BIG];

#[derive(Default)]
struct State {
    /// (file, first byte, last byte) of every ranged file request.
    requests: Vec<(String, u64, u64)>,
    /// Requests for BIG starting at or after this wait until it is cleared.
    gate_from: Option<u64>,
    blocked: bool,
}

/// A running server; its threads live as long as the test process.
pub struct HubServer {
    /// `http://127.0.0.1:PORT` (the hub endpoint).
    pub url: String,
    state: Arc<(Mutex<State>, Condvar)>,
}

/// SHA-256 of `bytes` in hex.
pub fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl HubServer {
    /// Serves [`FILES`] of `folder`; requests for [`BIG`] from byte `gate_from` on wait until
    /// [`HubServer::open_gate`].
    pub fn start(folder: &Path, gate_from: Option<u64>) -> Self {
        let mut files = HashMap::new();
        for f in FILES {
            let bytes = std::fs::read(folder.join(f)).expect("fixture file (run scripts/setup.sh for tokenizer.json)");
            files.insert(f.to_string(), bytes);
        }
        let files = Arc::new(files);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new((Mutex::new(State { gate_from, ..Default::default() }), Condvar::new()));
        let st = Arc::clone(&state);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (files, st) = (Arc::clone(&files), Arc::clone(&st));
                std::thread::spawn(move || serve(&files, &st, conn));
            }
        });
        Self { url, state }
    }

    /// Waits until a request is held at the gate; false after `timeout`.
    pub fn wait_blocked(&self, timeout: Duration) -> bool {
        let (m, cv) = &*self.state;
        let st = m.lock().unwrap();
        let (st, _) = cv.wait_timeout_while(st, timeout, |s| !s.blocked).unwrap();
        st.blocked
    }

    /// Lets every held and later request through.
    pub fn open_gate(&self) {
        let (m, cv) = &*self.state;
        m.lock().unwrap().gate_from = None;
        cv.notify_all();
    }

    /// Every ranged file request so far: (file, first byte, last byte).
    pub fn requests(&self) -> Vec<(String, u64, u64)> {
        self.state.0.lock().unwrap().requests.clone()
    }
}

fn serve(files: &HashMap<String, Vec<u8>>, state: &(Mutex<State>, Condvar), mut s: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut range: Option<(u64, Option<u64>)> = None;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("range: bytes=") {
            let (a, b) = v.trim().split_once('-').unwrap_or(("0", ""));
            range = Some((a.parse().unwrap_or(0), b.parse().ok()));
        }
    }
    let info_path = format!("/api/models/{REPO}/revision/main");
    let file_prefix = format!("/{REPO}/resolve/main/");
    if path == info_path {
        let siblings: Vec<_> = files.keys().map(|f| serde_json::json!({ "rfilename": f })).collect();
        let body = serde_json::json!({ "sha": COMMIT, "siblings": siblings }).to_string();
        return write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    }
    let Some((name, bytes)) = path.strip_prefix(&file_prefix).and_then(|f| files.get(f).map(|d| (f.to_string(), d))) else {
        return write!(s, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    };
    let len = bytes.len() as u64;
    let (start, end) = match range {
        Some((a, b)) => (a, b.unwrap_or(len - 1).min(len - 1)),
        None => (0, len - 1),
    };
    {
        let (m, cv) = state;
        let mut st = m.lock().unwrap();
        st.requests.push((name.clone(), start, end));
        while name == BIG && st.gate_from.is_some_and(|g| start >= g) {
            st.blocked = true;
            cv.notify_all();
            st = cv.wait(st).unwrap();
        }
    }
    let body = &bytes[start as usize..=end as usize];
    write!(
        s,
        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{end}/{len}\r\nETag: \"{}\"\r\nX-Repo-Commit: {COMMIT}\r\nConnection: close\r\n\r\n",
        body.len(),
        sha(bytes)
    )?;
    s.write_all(body)
}

/// The start of the last `chunk`-byte chunk of [`BIG`] in `folder`: a gate there holds back
/// only that chunk, so every other chunk completes whatever order the downloader's parallel
/// chunk tasks take their permits in (with a gate further forward, held chunks can take every
/// permit and starve the ones before them), and the committed length reaches the gate.
pub fn last_chunk_gate(folder: &Path, chunk: u64) -> u64 {
    let size = std::fs::metadata(folder.join(BIG)).unwrap().len();
    assert!(size > 3 * chunk, "{BIG} must span several chunks");
    (size - 1) / chunk * chunk
}

/// The length hf-hub has committed in its part file for a download of [`REPO`] into the
/// hub-style cache `cache` (the last 8 bytes of `<blob>.sync.part`), if that file is there.
pub fn committed(cache: &Path, size: u64) -> Option<u64> {
    let blobs = cache.join(format!("models--{}/blobs", REPO.replace('/', "--")));
    for e in std::fs::read_dir(blobs).ok()?.flatten() {
        let p = e.path();
        if p.to_string_lossy().ends_with(".sync.part") {
            let bytes = std::fs::read(&p).ok()?;
            if bytes.len() as u64 == size + 8 {
                let tail: [u8; 8] = bytes[bytes.len() - 8..].try_into().ok()?;
                return Some(u64::from_le_bytes(tail));
            }
        }
    }
    None
}
