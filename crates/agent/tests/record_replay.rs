//! Recording a task (scripted model, fake screen, recording actuator) and replaying it:
//! an unchanged recording replays without differences, an edited model output or user
//! answer shows as that step's difference, a missing or corrupt folder is one clear error,
//! and a recording that cannot be written stops the task before it acts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use image::{Rgb, RgbImage};
use screenpilot_agent::audit::screenshot_hash;
use screenpilot_agent::policy::FixedConfirmer;
use screenpilot_agent::record::{RecordError, StepLine};
use screenpilot_agent::replay::DiffKind;
use screenpilot_agent::*;
use serde_json::{json, Value};

fn call(args: &str) -> String {
    format!("<tool_call>\n{{\"name\": \"computer_use\", \"arguments\": {args}}}\n</tool_call>")
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sp-record-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    d
}

fn frame(v: u8) -> RgbImage {
    RgbImage::from_pixel(200, 100, Rgb([v, 255 - v, 7]))
}

/// A 2x monitor right of the primary, screenshots at half size; each turn shows a new frame.
fn capture() -> FakeCapture {
    let m = MonitorGeometry { name: "right".into(), origin: OsPoint { x: 1920, y: 0 }, width: 400, height: 200, scale_factor: 2.0, input_space: InputSpace::Physical };
    let mut cap = FakeCapture::new(CaptureGeometry::full_monitor(m, 200, 100).unwrap(), frame(0));
    for v in 1..20 {
        cap.push(frame(v * 10));
    }
    cap
}

/// Runs `brain` on a fresh recording in `dir`; returns the result and the input events.
fn record_with(dir: &Path, brain: &mut dyn Brain, policy: Policy, decision: Decision) -> (Result<Outcome>, Vec<InputEvent>) {
    let mut recorder = Recorder::new(dir).unwrap();
    let mut cap = capture();
    let rec = RecordingActuator::default();
    let mut act = rec.clone();
    let mut confirmer = FixedConfirmer(decision);
    let config = AgentConfig {
        settle: SettleConfig { poll: Duration::from_millis(1), threshold: 0.01, timeout: Duration::from_millis(5) },
        ..AgentConfig::default()
    };
    let mut agent = Agent {
        brain, capture: &mut cap, actuator: &mut act, confirmer: &mut confirmer, audit: None, recorder: Some(&mut recorder),
        policy, config, stop: StopFlag::new(),
    };
    let result = agent.run("copy the greeting");
    (result, rec.events())
}

fn confirm_each() -> Policy {
    Policy { actions_enabled: true, mode: Mode::ConfirmEach }
}

/// Click, type, an unknown action (refused, the task goes on), ctrl+c, terminate.
fn task_replies() -> Vec<String> {
    vec![
        call(r#"{"action": "left_click", "coordinate": [250, 500]}"#),
        call(r#"{"action": "type", "text": "hello"}"#),
        call(r#"{"action": "fly", "coordinate": [1, 1]}"#),
        call(r#"{"action": "key", "keys": ["ctrl", "c"]}"#),
        call(r#"{"action": "terminate", "status": "success"}"#),
    ]
}

fn record(dir: &Path) {
    let (result, events) = record_with(dir, &mut ScriptedBrain::new(task_replies()), confirm_each(), Decision::Approve);
    assert_eq!(result.unwrap(), Outcome::Terminated(model_action::TerminateStatus::Success));
    assert_eq!(events[..2], [InputEvent::MoveTo(OsPoint { x: 2020, y: 100 }), InputEvent::Button(model_action::MouseButton::Left, actuator::Press::Click)]);
}

fn steps(dir: &Path) -> Vec<Value> {
    fs::read_to_string(dir.join("steps.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn write_steps(dir: &Path, lines: &[Value]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    fs::write(dir.join("steps.jsonl"), text).unwrap();
}

#[test]
fn a_task_is_recorded_with_its_screenshots_outputs_and_decisions() {
    let d = dir("files");
    record(&d);
    let task: Value = serde_json::from_str(&fs::read_to_string(d.join("task.json")).unwrap()).unwrap();
    assert_eq!(task["task"], "copy the greeting");
    assert_eq!(task["policy"], json!({"actions_enabled": true, "mode": {"mode": "confirm_each"}}));
    assert_eq!(task["geometry"]["monitor"]["origin"], json!({"x": 1920, "y": 0}));
    assert!(task["started"].as_str().unwrap().ends_with('Z'));
    let lines = steps(&d);
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(types, [["turn", "action"]; 5].concat().into_iter().chain(["outcome"]).collect::<Vec<_>>());
    // Each turn's PNG holds the pixels the model saw (the first is the task's screenshot).
    for (n, turn) in lines.iter().step_by(2).take(5).enumerate() {
        let name = format!("step-{:03}.png", n + 1);
        assert_eq!(turn["screenshot"], name.as_str());
        assert_eq!(turn["turn"], n + 1);
        assert_eq!(turn["model_output"], task_replies()[n].as_str());
        assert!(turn["model_ms"].is_u64());
        assert_eq!(turn["geometry"]["image_width"], 200);
        let png = image::open(d.join(&name)).unwrap().to_rgb8();
        assert_eq!(turn["screenshot_sha256"], screenshot_hash(&png).as_str(), "{name}");
        assert!(n > 0 || png == frame(10), "the task's screenshot is the first frame captured");
    }
    let click = &lines[1];
    assert_eq!(click["action"], json!({"action": "click", "button": "left", "count": 1, "coordinate": {"x": 250.0, "y": 500.0}}));
    assert_eq!(click["screen_action"], json!({"kind": "click", "button": "left", "count": 1, "at": {"x": 2020, "y": 100}}));
    assert_eq!((&click["user"], &click["decision"]), (&json!("approve"), &json!("executed")));
    assert!(click["action_ms"].is_u64());
    let refused = &lines[5];
    assert_eq!((&refused["decision"], &refused["action"], &refused["user"]), (&json!("refused_invalid"), &Value::Null, &Value::Null));
    assert!(refused["detail"].as_str().unwrap().contains("unknown computer_use action"), "{refused}");
    assert_eq!(lines[10]["outcome"], json!({"terminated": "success"}));
    let rec = Recording::open(&d).unwrap();
    assert!(matches!(rec.lines.last(), Some(StepLine::Outcome(o)) if o.outcome == Some(Outcome::Terminated(model_action::TerminateStatus::Success))));
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn an_unchanged_recording_replays_without_differences() {
    let d = dir("same");
    record(&d);
    let report = replay(&d).unwrap();
    assert_eq!(report.differences, vec![], "{:#?}", report.differences);
    assert_eq!((report.steps, report.actions), (5, 5));
    assert!(report.is_identical());
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn an_edited_model_output_is_reported_at_its_step() {
    let d = dir("edited");
    record(&d);
    let mut lines = steps(&d);
    let out = lines[0]["model_output"].as_str().unwrap().replace("[250, 500]", "[750, 500]");
    lines[0]["model_output"] = out.into();
    write_steps(&d, &lines);
    let report = replay(&d).unwrap();
    let kinds: Vec<(Option<u32>, Option<usize>, DiffKind)> = report.differences.iter().map(|d| (d.step, d.action, d.kind)).collect();
    assert_eq!(kinds, vec![(Some(1), Some(1), DiffKind::ParsedAction), (Some(1), Some(1), DiffKind::ScreenAction)], "{:#?}", report.differences);
    let screen = &report.differences[1];
    assert!(screen.recorded.contains(r#""x":2020"#) && screen.replayed.contains(r#""x":2220"#), "{screen}");
    assert!(screen.to_string().starts_with("step 1, action 1: screen action differs"), "{screen}");
    // A changed key in step 4 (lines: turn, action, turn, action, ...) is that step's difference only.
    let d2 = dir("edited2");
    record(&d2);
    let mut lines = steps(&d2);
    assert_eq!(lines[6]["turn"], 4);
    lines[6]["model_output"] = call(r#"{"action": "key", "keys": ["ctrl", "v"]}"#).into();
    write_steps(&d2, &lines);
    let report = replay(&d2).unwrap();
    let kinds: Vec<(Option<u32>, Option<usize>, DiffKind)> = report.differences.iter().map(|d| (d.step, d.action, d.kind)).collect();
    assert_eq!(kinds, vec![(Some(4), Some(1), DiffKind::ParsedAction), (Some(4), Some(1), DiffKind::ScreenAction)], "{:#?}", report.differences);
    for d in [d, d2] {
        fs::remove_dir_all(&d).unwrap();
    }
}

#[test]
fn the_users_recorded_answers_drive_the_replayed_gate() {
    // Auto mode: alt+F4 always asks; the user approved it.
    let d = dir("answers");
    let replies = vec![
        call(r#"{"action": "left_click", "coordinate": [10, 10]}"#),
        call(r#"{"action": "key", "keys": ["alt", "F4"]}"#),
        call(r#"{"action": "terminate", "status": "success"}"#),
    ];
    let policy = Policy { actions_enabled: true, mode: Mode::Auto(AutoLimits::new(5, Duration::from_millis(1))) };
    let (result, _) = record_with(&d, &mut ScriptedBrain::new(replies), policy, Decision::Approve);
    assert!(result.is_ok(), "{result:?}");
    let mut lines = steps(&d);
    assert_eq!((&lines[1]["user"], &lines[3]["user"]), (&Value::Null, &json!("approve")), "only alt+F4 was asked");
    assert!(replay(&d).unwrap().is_identical());
    // Had the user said no, the task would have ended at step 2.
    lines[3]["user"] = "reject".into();
    write_steps(&d, &lines);
    let report = replay(&d).unwrap();
    let kinds: Vec<(Option<u32>, DiffKind)> = report.differences.iter().map(|d| (d.step, d.kind)).collect();
    assert_eq!(kinds, vec![(Some(2), DiffKind::Decision), (Some(3), DiffKind::Missing), (None, DiffKind::Outcome)], "{:#?}", report.differences);
    assert_eq!((report.differences[0].recorded.as_str(), report.differences[0].replayed.as_str()), ("executed", "rejected_by_user"));
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_missing_or_corrupt_recording_is_one_clear_error() {
    let err = |d: &Path| match replay(d) {
        Err(e @ AgentError::Replay(_)) => e.to_string(),
        other => panic!("{other:?}"),
    };
    let gone = dir("missing");
    assert!(err(&gone).ends_with("is not a recording: no such folder"), "{}", err(&gone));
    fs::create_dir_all(&gone).unwrap();
    assert!(err(&gone).ends_with("is not a recording: it has no task.json"), "{}", err(&gone));
    let d = dir("corrupt");
    record(&d);
    let text = fs::read_to_string(d.join("steps.jsonl")).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[2] = "{\"type\": \"turn\", \"turn\": 2, \"model_out";
    fs::write(d.join("steps.jsonl"), lines.join("\n")).unwrap();
    let e = err(&d);
    assert!(e.starts_with("cannot replay the recording: ") && e.contains("steps.jsonl line 3: "), "{e}");
    assert!(matches!(replay(&d), Err(AgentError::Replay(RecordError::Corrupt { line: 3, .. }))));
    fs::write(d.join("task.json"), "{}").unwrap();
    assert!(err(&d).contains("task.json line 1: missing field"), "{}", err(&d));
    // A screenshot that is gone or edited is a difference at its step, not an error.
    let d2 = dir("shots");
    record(&d2);
    fs::remove_file(d2.join("step-002.png")).unwrap();
    frame(99).save(d2.join("step-003.png")).unwrap();
    let report = replay(&d2).unwrap();
    let kinds: Vec<(Option<u32>, DiffKind)> = report.differences.iter().map(|d| (d.step, d.kind)).collect();
    assert_eq!(kinds, vec![(Some(2), DiffKind::Screenshot), (Some(3), DiffKind::Screenshot)], "{:#?}", report.differences);
    for d in [gone, d, d2] {
        fs::remove_dir_all(&d).unwrap();
    }
}

#[test]
fn a_recording_that_cannot_be_written_stops_the_task_before_it_acts() {
    // The folder disappears before the task starts: task.json cannot be written, nothing runs.
    let d = dir("gone-before");
    let mut asked = 0;
    let mut brain = |_: &BrainRequest| -> std::result::Result<String, BrainError> {
        asked += 1;
        Ok(call(r#"{"action": "left_click", "coordinate": [500, 500]}"#))
    };
    let (result, events) = record_with_removed(&d, &mut brain);
    assert!(matches!(&result, Err(AgentError::Record(RecordError::Write { .. }))), "{result:?}");
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(asked, 0, "the model was not even asked");

    // The folder disappears while the model thinks about turn 2: its screenshot cannot be
    // written, so turn 2's click is never gated or sent; turn 1's click did run.
    let d = dir("gone-mid");
    let gone = d.clone();
    let mut calls = 0;
    let mut brain = move |_: &BrainRequest| -> std::result::Result<String, BrainError> {
        calls += 1;
        if calls == 2 {
            fs::remove_dir_all(&gone).unwrap();
        }
        Ok(call(r#"{"action": "left_click", "coordinate": [500, 500]}"#))
    };
    let (result, events) = record_with(&d, &mut brain, confirm_each(), Decision::Approve);
    let e = match result {
        Err(e @ AgentError::Record(_)) => e.to_string(),
        other => panic!("{other:?}"),
    };
    assert!(e.contains("recording could not be written") && e.contains("step-002.png"), "{e}");
    let clicks = events.iter().filter(|e| matches!(e, InputEvent::Button(..))).count();
    assert_eq!(clicks, 1, "{events:?}");
}

/// Like [`record_with`], but the recording's folder is removed right after the recorder is made.
fn record_with_removed(d: &Path, brain: &mut dyn Brain) -> (Result<Outcome>, Vec<InputEvent>) {
    let mut recorder = Recorder::new(d).unwrap();
    fs::remove_dir_all(d).unwrap();
    let mut cap = capture();
    let rec = RecordingActuator::default();
    let mut act = rec.clone();
    let mut confirmer = FixedConfirmer(Decision::Approve);
    let mut agent = Agent {
        brain, capture: &mut cap, actuator: &mut act, confirmer: &mut confirmer, audit: None, recorder: Some(&mut recorder),
        policy: confirm_each(), config: AgentConfig::default(), stop: StopFlag::new(),
    };
    (agent.run("click"), rec.events())
}
