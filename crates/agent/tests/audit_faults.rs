//! Fail closed: when an action's audit record cannot be written (full disk, read-only
//! folder, log file or folder removed), no input event is sent and the error says so.
//! The tmpfs tests mount small file systems, so they need root (CI and the dev machine run
//! as root): without it they fail with a message saying so, they do not skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/tmpfs.rs"]
mod tmpfs;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use image::RgbImage;
use screenpilot_agent::audit::AuditLog;
use screenpilot_agent::audit_verify::verify_file;
use screenpilot_agent::policy::FixedConfirmer;
use screenpilot_agent::*;
use tmpfs::{fill, Tmpfs};

const CLICK: &str = r#"<tool_call>{"name": "computer_use", "arguments": {"action": "left_click", "coordinate": [500, 500]}}</tool_call>"#;
const DONE: &str = r#"<tool_call>{"name": "computer_use", "arguments": {"action": "terminate", "status": "success"}}</tool_call>"#;

/// Runs a task whose model clicks, clicks again, then terminates, with actions allowed
/// and every action approved. Returns the result and the input events sent.
fn run_task(log: &mut AuditLog) -> (Result<Outcome>, Vec<InputEvent>) {
    run_task_with(log, |_| {})
}

/// As [`run_task`], calling `between` after the first action's records are written.
fn run_task_with(log: &mut AuditLog, between: impl FnMut(usize) + Send + 'static) -> (Result<Outcome>, Vec<InputEvent>) {
    run_replies(log, vec![CLICK, CLICK, DONE], between)
}

/// Runs a task on the model `replies`, calling `between` before every reply but the first.
fn run_replies(log: &mut AuditLog, replies: Vec<&'static str>, between: impl FnMut(usize) + Send + 'static) -> (Result<Outcome>, Vec<InputEvent>) {
    let mut brain = HookBrain { replies, calls: 0, hook: Box::new(between) };
    let m = MonitorGeometry { name: "m".into(), origin: OsPoint { x: 0, y: 0 }, width: 200, height: 100, scale_factor: 1.0, input_space: InputSpace::Physical };
    let mut cap = FakeCapture::new(CaptureGeometry::full_monitor(m, 200, 100).unwrap(), RgbImage::new(200, 100));
    let rec = RecordingActuator::default();
    let mut act = rec.clone();
    let mut confirmer = FixedConfirmer(Decision::Approve);
    let config = AgentConfig {
        settle: SettleConfig { poll: Duration::from_millis(1), threshold: 0.01, timeout: Duration::from_millis(5) },
        ..AgentConfig::default()
    };
    let policy = Policy { actions_enabled: true, mode: Mode::ConfirmEach };
    let mut agent = Agent { brain: &mut brain, capture: &mut cap, actuator: &mut act, confirmer: &mut confirmer, audit: Some(log), recorder: None, policy, config, stop: StopFlag::new() };
    let result = agent.run("click twice");
    (result, rec.events())
}

/// A scripted model that calls a hook before each reply after the first.
struct HookBrain {
    replies: Vec<&'static str>,
    calls: usize,
    hook: Box<dyn FnMut(usize) + Send>,
}
impl Brain for HookBrain {
    fn respond(&mut self, _: &BrainRequest) -> std::result::Result<String, BrainError> {
        if self.calls > 0 {
            (self.hook)(self.calls);
        }
        self.calls += 1;
        Ok(self.replies.get(self.calls - 1).copied().unwrap_or(DONE).to_string())
    }
}

fn assert_refused(result: &Result<Outcome>) {
    let err = match result {
        Err(e @ AgentError::Audit(_)) => e.to_string(),
        other => panic!("expected the audit error that refuses the action, got {other:?}"),
    };
    assert!(err.contains("audit log could not be written") && err.contains("action was not performed"), "{err}");
}

#[test]
fn log_on_dev_full_runs_no_action() {
    let mut log = AuditLog::open(Path::new("/dev/full")).unwrap();
    let (result, events) = run_task(&mut log);
    assert_refused(&result);
    assert!(events.is_empty(), "no input may be sent: {events:?}");
}

#[test]
fn log_on_a_full_tmpfs_runs_no_action() {
    let fs = Tmpfs::mount("audit-fault", "full", "size=16k");
    fill(&fs.0);
    let path = fs.0.join("audit.jsonl");
    let mut log = AuditLog::open(&path).unwrap();
    let (result, events) = run_task(&mut log);
    assert_refused(&result);
    assert!(result.unwrap_err().to_string().contains("No space left"));
    assert!(events.is_empty(), "no input may be sent: {events:?}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
}

#[test]
fn log_in_a_read_only_folder_cannot_be_opened() {
    let fs = Tmpfs::mount("audit-fault", "ro", "ro,size=16k");
    let path = fs.0.join("audit.jsonl");
    let err = AuditLog::open(&path).unwrap_err();
    let msg = AgentError::from(err).to_string();
    assert!(msg.contains("audit log could not be written") && msg.contains("audit.jsonl") && msg.contains("Read-only"), "{msg}");
}

#[test]
fn log_in_a_folder_remounted_read_only_cannot_be_reopened() {
    let fs = Tmpfs::mount("audit-fault", "remount", "size=64k");
    let path = fs.0.join("audit.jsonl");
    let mut log = AuditLog::open(&path).unwrap();
    let (result, events) = run_task(&mut log);
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(events.len(), 4, "two clicks of two events each");
    drop(log);
    let out = Command::new("mount").args(["-o", "remount,ro"]).arg(&fs.0).output().unwrap();
    assert!(out.status.success(), "remount: {}", String::from_utf8_lossy(&out.stderr));
    assert!(AuditLog::open(&path).is_err());
    assert!(verify_file(&path).unwrap().is_ok());
}

#[test]
fn the_second_action_does_not_run_once_the_log_file_is_removed() {
    let dir = std::env::temp_dir().join(format!("sp-audit-fault-{}-removed", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("audit.jsonl");
    let mut log = AuditLog::open(&path).unwrap();
    let gone = path.clone();
    let (result, events) = run_task_with(&mut log, move |_| {
        let _ = std::fs::remove_file(&gone);
    });
    let _ = std::fs::remove_dir_all(&dir);
    assert_refused(&result);
    assert!(result.unwrap_err().to_string().contains("removed or replaced"));
    assert_eq!(events.len(), 2, "only the first click (move + click) ran: {events:?}");
}

#[test]
fn the_second_action_does_not_run_once_the_disk_fills_up() {
    let fs = Tmpfs::mount("audit-fault", "fills", "size=64k");
    let path = fs.0.join("audit.jsonl");
    let mut log = AuditLog::open(&path).unwrap();
    let dir = fs.0.clone();
    // Records larger than a page, so the next one always needs a page the full disk lacks.
    let long_click: &'static str = Box::leak(format!("{}\n{CLICK}", "I look at the screen. ".repeat(300)).into_boxed_str());
    let (result, events) = run_replies(&mut log, vec![long_click, long_click, DONE], move |_| fill(&dir));
    assert_refused(&result);
    assert!(result.unwrap_err().to_string().contains("No space left"));
    assert_eq!(events.len(), 2, "only the first click ran: {events:?}");
    // The two records of the first click verify; the torn third line is where it breaks.
    let report = verify_file(&path).unwrap();
    assert_eq!(report.records, 2, "{report:?}");
}
