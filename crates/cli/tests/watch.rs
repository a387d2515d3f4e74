//! `screenpilot watch` on a real X display (Xvfb in CI; fails without `DISPLAY`) with the tiny
//! model: it says it is recording, reads questions from stdin, answers `last N:`, a cached
//! follow-up (`more:`) and `changed:`, explains a line it does not understand and goes on, and
//! writes nothing to disk.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny")
}

/// The numbers of each `(T ms to the first token, P prompt tokens, C cached)` line.
fn answers(stderr: &str) -> Vec<(usize, usize)> {
    stderr
        .lines()
        .filter_map(|l| {
            let rest = l.split_once("to the first token, ")?.1;
            let (p, rest) = rest.split_once(" prompt tokens, ")?;
            let c = rest.split_once(" cached")?.0;
            Some((p.parse().ok()?, c.parse().ok()?))
        })
        .collect()
}

#[test]
fn watch_answers_questions_about_the_last_seconds_and_goes_on_after_bad_lines() {
    assert!(!std::env::var("DISPLAY").unwrap_or_default().is_empty(), "DISPLAY is not set: CI starts Xvfb");
    let home = std::env::temp_dir().join(format!("sp-watch-home-{}", std::process::id()));
    std::fs::create_dir_all(&home).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_screenpilot"))
        .args(["watch", "--model"])
        .arg(tiny())
        .args(["--device", "cpu", "--fps", "4", "--seconds", "4", "--max-mib", "64", "--max-image-tokens", "64"])
        .current_dir(&home)
        .env("HOME", &home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "hello there").unwrap();
    std::thread::sleep(Duration::from_millis(2500)); // loading, then a few frames
    for line in ["last 1: what happened?", "more: and then?", "changed: what changed?", "status", "quit"] {
        writeln!(stdin, "{line}").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("recording the screen into memory only"), "{stderr}");
    assert!(stderr.contains("error: not understood"), "{stderr}");
    assert!(stderr.contains("● recording at 4 fps"), "{stderr}");
    let a = answers(&stderr);
    assert_eq!(a.len(), 3, "three answers: {stderr}");
    assert!(a[1].1 > 0, "the follow-up reuses the clip's prompt: {a:?}");
    assert!(!out.stdout.is_empty());
    let written: Vec<_> = std::fs::read_dir(&home).unwrap().collect();
    assert!(written.is_empty(), "nothing on disk: {written:?}");
    std::fs::remove_dir_all(&home).unwrap();
}
