//! Downloads tests/fixtures/tiny from a hub-shaped HTTP server on 127.0.0.1, cancels the
//! download in the middle of model.safetensors, resumes it, and checks that the second run
//! did not fetch the committed part again and that the folder is a valid, identical model.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use screenpilot_desktop::download::{download, CancelToken, DownloadProgress, DownloadRequest, CHUNK_BYTES};
use screenpilot_desktop::DesktopError;
use sha2::{Digest, Sha256};

const REPO: &str = "test-org/tiny-qwen3-vl";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const BIG: &str = "model.safetensors";

#[derive(Default)]
struct ServerState {
    /// (file, first byte, last byte) of every ranged file request.
    requests: Vec<(String, u64, u64)>,
    /// Requests for BIG starting at or after this wait until it is cleared.
    gate_from: Option<u64>,
    blocked: bool,
}

struct Server {
    url: String,
    state: Arc<(Mutex<ServerState>, Condvar)>,
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny")
}

fn serve(files: Arc<HashMap<String, Vec<u8>>>, state: Arc<(Mutex<ServerState>, Condvar)>, mut s: TcpStream) -> std::io::Result<()> {
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
    let Some(data) = path.strip_prefix(&file_prefix).and_then(|f| files.get(f).map(|d| (f.to_string(), d))) else {
        return write!(s, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    };
    let (name, bytes) = data;
    let len = bytes.len() as u64;
    let (start, end) = match range {
        Some((a, b)) => (a, b.unwrap_or(len - 1).min(len - 1)),
        None => (0, len - 1),
    };
    {
        let (m, cv) = &*state;
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

fn start_server(gate_from: Option<u64>) -> Server {
    let mut files = HashMap::new();
    for f in ["config.json", "generation_config.json", "preprocessor_config.json", "tokenizer.json", BIG] {
        files.insert(f.to_string(), std::fs::read(fixture().join(f)).expect("fixture file (run scripts/setup.sh for tokenizer.json)"));
    }
    let files = Arc::new(files);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = Arc::new((Mutex::new(ServerState { gate_from, ..Default::default() }), Condvar::new()));
    let st = Arc::clone(&state);
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (files, st) = (Arc::clone(&files), Arc::clone(&st));
            std::thread::spawn(move || serve(files, st, conn));
        }
    });
    Server { url, state }
}

/// The committed length hf-hub records at the end of its part file, if the file is there.
fn committed(cache: &Path, size: u64) -> Option<u64> {
    let blobs = cache.join("models--test-org--tiny-qwen3-vl/blobs");
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

#[test]
fn downloads_cancels_and_resumes_from_a_local_hub() {
    let big_size = std::fs::metadata(fixture().join(BIG)).unwrap().len();
    assert!(big_size > 3 * CHUNK_BYTES as u64, "the fixture must span several chunks");
    let server = start_server(Some(2 * CHUNK_BYTES as u64));
    let cache = std::env::temp_dir().join(format!("sp-download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let req = DownloadRequest { endpoint: server.url.clone(), repo: REPO.into(), revision: "main".into(), cache_dir: cache.clone(), parallel: 16 };

    // Run 1: blocks at the third chunk of the weights; cancel once two chunks are committed.
    let token = CancelToken::new();
    let (r1, t1) = (req.clone(), token.clone());
    let first = std::thread::spawn(move || download(&r1, &t1, Arc::new(|_| {})));
    {
        let (m, cv) = &*server.state;
        let st = m.lock().unwrap();
        let (st, timeout) = cv.wait_timeout_while(st, Duration::from_secs(120), |s| !s.blocked).unwrap();
        assert!(!timeout.timed_out() && st.blocked, "the download never reached the third chunk");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while committed(&cache, big_size) != Some(2 * CHUNK_BYTES as u64) {
        assert!(Instant::now() < deadline, "hf-hub never committed the first two chunks");
        std::thread::yield_now();
    }
    token.cancel();
    assert!(matches!(first.join().unwrap(), Err(DesktopError::Cancelled)));
    let requests_before = server.state.0.lock().unwrap().requests.len();

    // Run 2: the gate is open; it must resume at the committed offset.
    {
        let (m, cv) = &*server.state;
        m.lock().unwrap().gate_from = None;
        cv.notify_all();
    }
    let seen: Arc<Mutex<Vec<DownloadProgress>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let dir = download(&req, &CancelToken::new(), Arc::new(move |p| sink.lock().unwrap().push(p))).unwrap();

    let requests = server.state.0.lock().unwrap().requests[requests_before..].to_vec();
    let big_data: Vec<_> = requests.iter().filter(|(f, a, b)| f == BIG && !(*a == 0 && *b == 0)).collect();
    assert_eq!(big_data.iter().map(|r| r.1).min(), Some(2 * CHUNK_BYTES as u64), "resumed at the committed offset: {requests:?}");
    let last = seen.lock().unwrap().iter().filter(|p| p.file == BIG).last().cloned().unwrap();
    assert_eq!((last.bytes, last.total), (big_size, big_size), "progress reaches the end");
    for f in ["config.json", "tokenizer.json", BIG] {
        assert_eq!(sha(&std::fs::read(dir.join(f)).unwrap()), sha(&std::fs::read(fixture().join(f)).unwrap()), "{f}");
    }
    screenpilot_desktop::assistant::validate_folder(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&cache);
}
