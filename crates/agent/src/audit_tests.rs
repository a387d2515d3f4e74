//! Tests of the audit log writer: the hash chain across reopenings and torn lines, and the
//! failures that must reach the caller (full device, file removed, folder gone).

use std::path::PathBuf;

use super::*;
use crate::audit_verify::verify_file;

fn rec(turn: u32, output: &str) -> AuditRecord {
    AuditRecord {
        time: format_rfc3339(1_700_000_000 + u64::from(turn), 0),
        turn,
        screenshot_sha256: sha256_hex(b"shot"),
        model_output: output.to_string(),
        action: None,
        screen_action: None,
        screen_coordinates: vec![],
        decision: AuditDecision::NoAction,
        detail: None,
    }
}

/// A fresh folder of its own under the temp dir, removed on drop.
struct TempDir(PathBuf);
impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("sp-audit-unit-{}-{name}", std::process::id()));
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

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn formats_known_instants() {
    assert_eq!(format_rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
    assert_eq!(format_rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
    assert_eq!(format_rfc3339(1_767_225_599, 999), "2025-12-31T23:59:59.999Z");
}

#[test]
fn hash_depends_on_pixels() {
    let a = RgbImage::new(4, 4);
    let mut b = a.clone();
    b.put_pixel(1, 1, image::Rgb([1, 0, 0]));
    assert_ne!(screenshot_hash(&a), screenshot_hash(&b));
    assert_eq!(screenshot_hash(&a).len(), 64);
}

#[test]
fn each_line_carries_the_hash_of_the_line_before() {
    let dir = TempDir::new("chain");
    let path = dir.0.join("audit.jsonl");
    let mut log = AuditLog::open(&path).unwrap();
    for t in 1..=3 {
        log.record(&rec(t, "hello")).unwrap();
    }
    let ls = lines(&path);
    let prev = |i: usize| serde_json::from_str::<serde_json::Value>(&ls[i]).unwrap()["prev_sha256"].as_str().unwrap().to_string();
    assert_eq!(prev(0), GENESIS);
    assert_eq!(prev(1), sha256_hex(ls[0].as_bytes()));
    assert_eq!(prev(2), sha256_hex(ls[1].as_bytes()));
    assert_eq!(log.head(), sha256_hex(ls[2].as_bytes()));
}

#[test]
fn reopening_chains_from_the_last_line_in_the_file() {
    let dir = TempDir::new("reopen");
    let path = dir.0.join("audit.jsonl");
    AuditLog::open(&path).unwrap().record(&rec(1, &"x".repeat(20_000))).unwrap();
    let mut again = AuditLog::open(&path).unwrap();
    again.record(&rec(2, "second session")).unwrap();
    let ls = lines(&path);
    assert_eq!(ls.len(), 2);
    let second: serde_json::Value = serde_json::from_str(&ls[1]).unwrap();
    assert_eq!(second["prev_sha256"], sha256_hex(ls[0].as_bytes()));
    let report = verify_file(&path).unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.records, 2);
}

#[test]
fn a_torn_last_line_is_ended_and_chained_so_verify_points_at_it() {
    let dir = TempDir::new("torn");
    let path = dir.0.join("audit.jsonl");
    AuditLog::open(&path).unwrap().record(&rec(1, "whole")).unwrap();
    std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"time\": \"2025").unwrap();
    AuditLog::open(&path).unwrap().record(&rec(2, "after the tear")).unwrap();
    let ls = lines(&path);
    assert_eq!(ls.len(), 3, "the torn line is ended, not merged with the next record");
    let third: serde_json::Value = serde_json::from_str(&ls[2]).unwrap();
    assert_eq!(third["prev_sha256"], sha256_hex(ls[1].as_bytes()));
    let b = verify_file(&path).unwrap().first_break.unwrap();
    assert_eq!(b.line, 2);
}

#[test]
fn a_full_device_fails_the_record() {
    let mut log = AuditLog::open(Path::new("/dev/full")).unwrap();
    let err = log.record(&rec(1, "nothing fits")).unwrap_err();
    assert!(matches!(err, AuditError::Write { .. }), "{err:?}");
    assert!(err.to_string().contains("/dev/full"), "{err}");
}

#[test]
fn a_removed_file_fails_the_record_instead_of_writing_into_the_void() {
    let dir = TempDir::new("removed");
    let path = dir.0.join("audit.jsonl");
    let mut log = AuditLog::open(&path).unwrap();
    log.record(&rec(1, "before")).unwrap();
    std::fs::remove_file(&path).unwrap();
    let err = log.record(&rec(2, "after")).unwrap_err();
    assert!(matches!(err, AuditError::Gone { .. }), "{err:?}");
    // Replaced by another file of the same name: also not the log we hold.
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(log.record(&rec(3, "replaced")), Err(AuditError::Gone { .. })));
}

#[test]
fn a_removed_folder_fails_the_record() {
    let dir = TempDir::new("folder");
    let sub = dir.0.join("logs");
    std::fs::create_dir_all(&sub).unwrap();
    let path = sub.join("audit.jsonl");
    let mut log = AuditLog::open(&path).unwrap();
    std::fs::remove_dir_all(&sub).unwrap();
    let err = log.record(&rec(1, "no folder")).unwrap_err();
    assert!(err.to_string().contains("removed or replaced"), "{err}");
}

#[test]
fn opening_in_a_missing_folder_fails_with_the_path() {
    let dir = TempDir::new("missing");
    let path = dir.0.join("nope/audit.jsonl");
    let err = AuditLog::open(&path).unwrap_err();
    assert!(err.to_string().contains("nope/audit.jsonl"), "{err}");
}

/// Fails every write after the first `ok` ones.
struct FailAfter {
    ok: usize,
}
impl Write for FailAfter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        if self.ok == 0 {
            return Err(io::Error::from_raw_os_error(28));
        }
        self.ok -= 1;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_failed_write_does_not_advance_the_chain() {
    let mut log = AuditLog::new(Box::new(FailAfter { ok: 1 }));
    log.record(&rec(1, "ok")).unwrap();
    let head = log.head().to_string();
    assert!(log.record(&rec(2, "fails")).is_err());
    assert_eq!(log.head(), head);
}
