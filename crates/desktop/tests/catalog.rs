//! The model manager against a cache made by the crate's real download: tests/fixtures/tiny
//! downloaded from a hub-shaped server on 127.0.0.1 shows up in `installed` as complete, with
//! its bytes counted once (hf-hub keeps blobs and links the snapshot to them), in the
//! catalogue's rows only when its repo is in the catalogue, and `delete_installed` frees it all.

#[path = "support/hub.rs"]
mod hub;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hub::{HubServer, FILES, REPO};
use screenpilot_desktop::catalog::{delete_installed, installed, parse_memory_override, rows};
use screenpilot_desktop::download::{download, CancelToken, DownloadRequest};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny")
}

#[test]
fn a_downloaded_model_is_installed_complete_counted_once_and_deleted() {
    let server = HubServer::start(&fixture(), None);
    let cache = std::env::temp_dir().join(format!("sp-catalog-dl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let req = DownloadRequest { endpoint: server.url.clone(), repo: REPO.into(), revision: "main".into(), cache_dir: cache.clone(), parallel: 4 };
    let snapshot = download(&req, &CancelToken::new(), Arc::new(|_| {})).unwrap();

    let found = installed(&cache);
    assert_eq!(found.len(), 1, "{found:?}");
    let m = &found[0];
    assert_eq!(m.repo.as_deref(), Some(REPO));
    assert_eq!(m.name, REPO);
    assert_eq!(Path::new(&m.path), snapshot.as_path());
    assert!(m.complete);
    let files: u64 = FILES.iter().map(|f| std::fs::metadata(fixture().join(f)).unwrap().len()).sum();
    let refs = std::fs::metadata(cache.join(format!("models--{}", REPO.replace('/', "--"))).join("refs/main")).unwrap().len();
    assert_eq!(m.bytes, files + refs, "each file once (blob), plus refs/main");
    screenpilot_desktop::assistant::validate_folder(Path::new(&m.path)).unwrap();

    // Not a catalogue model: the rows do not claim it.
    let mem = parse_memory_override("ram=16GiB").unwrap();
    assert!(rows(&mem, &found).iter().all(|r| r.installed.is_none()));

    // Removing the tokenizer makes it incomplete.
    std::fs::remove_file(snapshot.join("tokenizer.json")).unwrap();
    assert!(!installed(&cache)[0].complete);

    // Its blob is still there (only the link went), so deleting frees every byte.
    assert_eq!(delete_installed(&cache, REPO).unwrap(), files + refs);
    assert!(installed(&cache).is_empty());
    assert!(cache.is_dir(), "only the model's folder goes");
    let _ = std::fs::remove_dir_all(&cache);
}
