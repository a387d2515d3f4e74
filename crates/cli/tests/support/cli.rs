//! What the `ask` tests share: the repository root, `screenpilot ask` on the tiny model, and the
//! check that bad input ends in one clear `error:` line.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn ask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_screenpilot"))
        .arg("ask")
        .arg("--model")
        .arg(root().join("tests/fixtures/tiny"))
        .args(args)
        .output()
        .expect("run screenpilot")
}

pub fn assert_one_clear_error(out: &Output, needle: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: ") && err.contains(needle), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}
