//! Tests of `verify`: an untouched log passes; an edited, deleted or reordered line, a
//! dropped first line, bad JSON and a missing field are each reported at the right line.

use super::*;
use crate::audit::{AuditDecision, AuditLog, AuditRecord};
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);
impl std::io::Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A log of `n` records, as its lines.
fn log_lines(n: u32) -> Vec<String> {
    let sink = Shared::default();
    let mut log = AuditLog::new(Box::new(sink.clone()));
    for turn in 1..=n {
        log.record(&AuditRecord {
            time: crate::audit::format_rfc3339(1_700_000_000 + u64::from(turn), 0),
            turn,
            screenshot_sha256: sha256_hex(&turn.to_le_bytes()),
            model_output: format!("I will click the button number {turn}"),
            action: None,
            screen_action: None,
            screen_coordinates: vec![],
            decision: AuditDecision::NoAction,
            detail: None,
        })
        .unwrap();
    }
    let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    text.lines().map(str::to_string).collect()
}

fn check(lines: &[String]) -> VerifyReport {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    verify(text.as_bytes()).unwrap()
}

fn break_of(lines: &[String]) -> ChainBreak {
    check(lines).first_break.expect("the chain should be broken")
}

#[test]
fn an_untouched_log_verifies() {
    let lines = log_lines(4);
    let r = check(&lines);
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(r.records, 4);
    assert_eq!(r.head_sha256, sha256_hex(lines[3].as_bytes()));
    assert!(check(&[]).is_ok());
}

#[test]
fn one_changed_character_in_the_middle_record_breaks_the_next_line() {
    let mut lines = log_lines(3);
    let edited = lines[1].replacen("click the button", "click the bUtton", 1);
    assert_ne!(edited, lines[1]);
    lines[1] = edited;
    let b = break_of(&lines);
    assert_eq!(b.line, 3);
    assert!(matches!(b.reason, BreakReason::HashMismatch { .. }));
    assert!(b.to_string().contains("line 2 was changed"), "{b}");
    assert_eq!(check(&lines).records, 2);
}

#[test]
fn a_deleted_line_is_detected() {
    let mut lines = log_lines(4);
    lines.remove(1);
    assert_eq!(break_of(&lines).line, 2);
    let mut first_gone = log_lines(3);
    first_gone.remove(0);
    let b = break_of(&first_gone);
    assert_eq!(b.line, 1);
    assert!(b.to_string().contains("genesis"), "{b}");
}

#[test]
fn reordered_lines_are_detected() {
    let mut lines = log_lines(4);
    lines.swap(1, 2);
    assert_eq!(break_of(&lines).line, 2);
}

#[test]
fn bad_json_and_missing_fields_are_named() {
    let mut lines = log_lines(3);
    lines[1] = lines[1].replacen('{', "", 1);
    let b = break_of(&lines);
    assert_eq!(b.line, 2);
    assert!(matches!(b.reason, BreakReason::Unparsable(_)), "{b}");

    let mut lines = log_lines(2);
    let mut v: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    v.as_object_mut().unwrap().remove("prev_sha256");
    lines[1] = v.to_string();
    let b = break_of(&lines);
    assert_eq!((b.line, b.reason.clone()), (2, BreakReason::MissingField("prev_sha256")));
    assert!(b.to_string().contains("missing field `prev_sha256`"), "{b}");

    let mut lines = log_lines(2);
    lines.insert(1, String::new());
    assert_eq!(break_of(&lines).line, 2);
}
