//! Downloads tests/fixtures/tiny from a hub-shaped HTTP server on 127.0.0.1, cancels the
//! download in the middle of model.safetensors, resumes it, and checks that the second run
//! did not fetch the committed part again and that the folder is a valid, identical model;
//! a third run fetches nothing and reports every file complete.

#[path = "support/hub.rs"]
mod hub;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hub::{committed, last_chunk_gate, sha, HubServer, BIG, REPO};
use screenpilot_desktop::download::{download, CancelToken, DownloadProgress, DownloadRequest, CHUNK_BYTES};
use screenpilot_desktop::DesktopError;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny")
}

#[test]
fn downloads_cancels_and_resumes_from_a_local_hub() {
    let big_size = std::fs::metadata(fixture().join(BIG)).unwrap().len();
    let gate = last_chunk_gate(&fixture(), CHUNK_BYTES as u64);
    let server = HubServer::start(&fixture(), Some(gate));
    let cache = std::env::temp_dir().join(format!("sp-download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let req = DownloadRequest { endpoint: server.url.clone(), repo: REPO.into(), revision: "main".into(), cache_dir: cache.clone(), parallel: 16 };

    // Run 1: blocks at the last chunk of the weights; cancel once the others are committed.
    let token = CancelToken::new();
    let (r1, t1) = (req.clone(), token.clone());
    let first = std::thread::spawn(move || download(&r1, &t1, Arc::new(|_| {})));
    assert!(server.wait_blocked(Duration::from_secs(120)), "the download never reached the last chunk");
    let deadline = Instant::now() + Duration::from_secs(30);
    while committed(&cache, big_size) != Some(gate) {
        assert!(Instant::now() < deadline, "hf-hub never committed the chunks before the last");
        std::thread::yield_now();
    }
    token.cancel();
    assert!(matches!(first.join().unwrap(), Err(DesktopError::Cancelled)));
    let requests_before = server.requests().len();

    // Run 2: the gate is open; it must resume at the committed offset.
    server.open_gate();
    let seen: Arc<Mutex<Vec<DownloadProgress>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let dir = download(&req, &CancelToken::new(), Arc::new(move |p| sink.lock().unwrap().push(p))).unwrap();

    let requests = server.requests()[requests_before..].to_vec();
    let big_data: Vec<_> = requests.iter().filter(|(f, a, b)| f == BIG && !(*a == 0 && *b == 0)).collect();
    assert_eq!(big_data.iter().map(|r| r.1).min(), Some(gate), "resumed at the committed offset: {requests:?}");
    let last = seen.lock().unwrap().iter().rfind(|p| p.file == BIG).cloned().unwrap();
    assert_eq!((last.bytes, last.total), (big_size, big_size), "progress reaches the end");
    for f in ["config.json", "tokenizer.json", BIG] {
        assert_eq!(sha(&std::fs::read(dir.join(f)).unwrap()), sha(&std::fs::read(fixture().join(f)).unwrap()), "{f}");
    }
    screenpilot_desktop::assistant::validate_folder(&dir).unwrap();

    // Run 3: everything is cached; no file is fetched again and each reports itself complete.
    let requests_before = server.requests().len();
    let seen: Arc<Mutex<Vec<DownloadProgress>>> = Arc::default();
    let sink = Arc::clone(&seen);
    assert_eq!(download(&req, &CancelToken::new(), Arc::new(move |p| sink.lock().unwrap().push(p))).unwrap(), dir);
    assert_eq!(server.requests().len(), requests_before, "nothing fetched again");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), hub::FILES.len(), "{seen:?}");
    for p in seen.iter() {
        let size = std::fs::metadata(fixture().join(&p.file)).unwrap().len();
        assert_eq!((p.bytes, p.total), (size, size), "{p:?}");
    }
    let _ = std::fs::remove_dir_all(&cache);
}
