//! Fail closed: a task's recording that cannot be written (full disk) stops the task before
//! the turn's action is gated, so no input event follows a failed write. The tests mount
//! small tmpfs file systems, so they need root (CI and the dev machine run as root): without
//! it they fail with a message saying so, they do not skip.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/tmpfs.rs"]
mod tmpfs;

use std::time::Duration;

use image::RgbImage;
use screenpilot_agent::policy::FixedConfirmer;
use screenpilot_agent::replay::DiffKind;
use screenpilot_agent::*;
use tmpfs::{fill, Tmpfs};

const CLICK: &str = r#"<tool_call>{"name": "computer_use", "arguments": {"action": "left_click", "coordinate": [500, 500]}}</tool_call>"#;

/// Runs a task whose model clicks on every turn, recorded into `recorder`, with every action
/// approved; `before_reply(n)` runs before the model's n-th reply.
fn run(recorder: &mut Recorder, mut before_reply: impl FnMut(usize)) -> (Result<Outcome>, Vec<InputEvent>, usize) {
    let mut calls = 0;
    let mut brain = |_: &BrainRequest| -> std::result::Result<String, BrainError> {
        calls += 1;
        before_reply(calls);
        Ok(CLICK.to_string())
    };
    let m = MonitorGeometry { name: "m".into(), origin: OsPoint { x: 0, y: 0 }, width: 200, height: 100, scale_factor: 1.0, input_space: InputSpace::Physical };
    let mut cap = FakeCapture::new(CaptureGeometry::full_monitor(m, 200, 100).unwrap(), RgbImage::new(200, 100));
    let rec = RecordingActuator::default();
    let mut act = rec.clone();
    let mut confirmer = FixedConfirmer(Decision::Approve);
    let config = AgentConfig {
        max_turns: 5,
        settle: SettleConfig { poll: Duration::from_millis(1), threshold: 0.01, timeout: Duration::from_millis(5) },
        ..AgentConfig::default()
    };
    let mut agent = Agent {
        brain: &mut brain, capture: &mut cap, actuator: &mut act, confirmer: &mut confirmer, audit: None, recorder: Some(recorder),
        policy: Policy { actions_enabled: true, mode: Mode::ConfirmEach }, config, stop: StopFlag::new(),
    };
    let result = agent.run("click");
    drop(agent);
    (result, rec.events(), calls)
}

fn assert_no_space(result: &Result<Outcome>) {
    let err = match result {
        Err(e @ AgentError::Record(_)) => e.to_string(),
        other => panic!("expected the recording error that stops the task, got {other:?}"),
    };
    assert!(err.contains("recording could not be written") && err.contains("No space left"), "{err}");
}

#[test]
fn a_full_disk_at_the_start_runs_nothing() {
    let fs = Tmpfs::mount("record-fault", "start", "size=256k");
    let mut recorder = Recorder::new(fs.0.join("rec")).unwrap();
    fill(&fs.0);
    let (result, events, calls) = run(&mut recorder, |_| {});
    assert_no_space(&result);
    assert!(events.is_empty(), "no input may be sent: {events:?}");
    assert_eq!(calls, 0, "the model is not even asked");
}

#[test]
fn the_disk_filling_up_mid_task_stops_it_before_the_next_action() {
    let fs = Tmpfs::mount("record-fault", "mid", "size=256k");
    let dir = fs.0.clone();
    let mut recorder = Recorder::new(fs.0.join("rec")).unwrap();
    // The disk fills while the model thinks about turn 2.
    let (result, events, calls) = run(&mut recorder, |n| {
        if n == 2 {
            fill(&dir);
        }
    });
    assert_no_space(&result);
    let clicks = events.iter().filter(|e| matches!(e, InputEvent::Button(..))).count();
    assert_eq!((clicks, calls), (1, 2), "turn 1's click ran, turn 2's did not: {events:?}");
    // What was recorded replays; the cut-off end is the one difference.
    let report = replay(&fs.0.join("rec")).unwrap();
    assert_eq!(report.steps, 1);
    let kinds: Vec<DiffKind> = report.differences.iter().map(|d| d.kind).collect();
    assert_eq!(kinds, vec![DiffKind::Outcome], "{:#?}", report.differences);
    assert!(report.differences[0].recorded.contains("cut off"), "{}", report.differences[0]);
}
