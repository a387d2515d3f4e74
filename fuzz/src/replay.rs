//! Replays committed fuzz inputs in `cargo test` (included with `#[path]` by the owning crate's
//! tests/fuzz_regressions.rs): every file of fuzz/corpus/<target>/ and fuzz/regressions/<target>/
//! goes through the target's `run`, and a panic names the file.

use std::path::{Path, PathBuf};

/// fuzz/ of this repository.
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Runs every input of `target` through `run`; returns how many there were. Fails, naming
/// each input that panicked, if any did.
pub fn replay(target: &str, run: fn(&[u8])) -> usize {
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz_dir().join(dir).join(target)) else { continue };
        files.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()));
    }
    files.sort();
    let mut failed = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        if std::panic::catch_unwind(|| run(&bytes)).is_err() {
            failed.push(f.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target}: these inputs panicked:\n{}", failed.join("\n"));
    files.len()
}
