//! `screenpilot audit verify` end to end: an intact log passes with its record count; an
//! edited, deleted or reordered line fails with exit code 2 naming the first broken line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use screenpilot_agent::audit::{format_rfc3339, AuditDecision, AuditLog, AuditRecord};

/// A fresh folder of its own under the temp dir, removed on drop.
struct TempDir(PathBuf);
impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("sp-cli-audit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes a log of three records (two sessions, to cover the chain across reopening).
fn write_log(path: &Path) {
    for (session, turns) in [(0, 1..=2u32), (1, 3..=3)] {
        let mut log = AuditLog::open(path).unwrap();
        for turn in turns {
            log.record(&AuditRecord {
                time: format_rfc3339(1_700_000_000 + u64::from(turn), 0),
                turn,
                screenshot_sha256: "ab".repeat(32),
                model_output: format!("session {session}: I will press the OK button, turn {turn}"),
                action: None,
                screen_action: None,
                screen_coordinates: vec![],
                decision: AuditDecision::NoAction,
                detail: None,
            })
            .unwrap();
        }
    }
}

fn verify(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_screenpilot")).args(["audit", "verify"]).arg(path).output().expect("run screenpilot")
}

fn rewrite(path: &Path, f: impl FnOnce(&mut Vec<String>)) {
    let mut lines: Vec<String> = std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect();
    f(&mut lines);
    std::fs::write(path, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn an_untouched_log_verifies() {
    let dir = TempDir::new("ok");
    let path = dir.0.join("audit.jsonl");
    write_log(&path);
    let out = verify(&path);
    assert!(out.status.success(), "{}{}", stdout(&out), String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).starts_with("OK: 3 records"), "{}", stdout(&out));
}

#[test]
fn one_edited_character_is_reported_at_the_next_line() {
    let dir = TempDir::new("edit");
    let path = dir.0.join("audit.jsonl");
    write_log(&path);
    rewrite(&path, |l| {
        let edited = l[1].replacen("OK button", "OX button", 1);
        assert_ne!(edited, l[1]);
        l[1] = edited;
    });
    let out = verify(&path);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stdout(&out).contains("line 3: hash mismatch"), "{}", stdout(&out));
}

#[test]
fn deleted_and_reordered_lines_are_reported() {
    let dir = TempDir::new("order");
    let path = dir.0.join("audit.jsonl");
    write_log(&path);
    rewrite(&path, |l| {
        l.remove(1);
    });
    let out = verify(&path);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains("line 2: hash mismatch"), "{}", stdout(&out));

    write_log(&path.with_extension("2"));
    rewrite(&path.with_extension("2"), |l| l.swap(0, 1));
    let out = verify(&path.with_extension("2"));
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains("line 1: hash mismatch"), "{}", stdout(&out));
}

#[test]
fn bad_json_and_a_missing_file_are_clear_errors() {
    let dir = TempDir::new("bad");
    let path = dir.0.join("audit.jsonl");
    write_log(&path);
    rewrite(&path, |l| l[2].truncate(10));
    let out = verify(&path);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains("line 3: not a JSON record"), "{}", stdout(&out));

    let out = verify(&dir.0.join("missing.jsonl"));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: cannot verify") && err.contains("missing.jsonl"), "{err}");
}
