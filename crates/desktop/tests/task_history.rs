//! Task recordings without a display: every task of the runner is recorded into a folder of
//! its own under the tasks folder, the history lists it (newest first) with its outcome and
//! steps, a replay check finds it identical (and finds a changed screenshot), bad ids are
//! refused, a recording that cannot be written ends the task with the error and sends
//! nothing, and calibration needs "Allow actions" and hides the window.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use image::RgbImage;
use screenpilot_agent::{CaptureGeometry, FakeCapture, InputSpace, MonitorGeometry, OsPoint, RecordingActuator, ScriptedBrain};
use screenpilot_desktop::task_events::{TaskEvent, TaskOutcome};
use screenpilot_desktop::task_parts::{AppWindow, UiDecision};
use screenpilot_desktop::task_runner::{TaskModel, TaskOptions, TaskRunner, TaskScreen, TaskSpec};

const WAIT: Duration = Duration::from_secs(20);

fn call(action: &str, extra: &str) -> String {
    format!("<tool_call>\n{{\"name\": \"computer_use\", \"arguments\": {{\"action\": \"{action}\"{extra}}}}}\n</tool_call>")
}

#[derive(Default)]
struct Window {
    hidden: AtomicBool,
    hides: AtomicUsize,
}

impl AppWindow for Window {
    fn hide(&self) -> screenpilot_desktop::Result<()> {
        self.hides.fetch_add(1, Ordering::SeqCst);
        self.hidden.store(true, Ordering::SeqCst);
        Ok(())
    }
    fn show(&self) -> screenpilot_desktop::Result<()> {
        self.hidden.store(false, Ordering::SeqCst);
        Ok(())
    }
}

fn geometry() -> CaptureGeometry {
    let m = MonitorGeometry { name: "m".into(), origin: OsPoint { x: 0, y: 0 }, width: 200, height: 100, scale_factor: 1.0, input_space: InputSpace::Physical };
    CaptureGeometry::full_monitor(m, 200, 100).unwrap()
}

struct Rig {
    runner: TaskRunner,
    events: Receiver<TaskEvent>,
    rec: RecordingActuator,
    window: Arc<Window>,
    tmp: PathBuf,
}

fn rig(name: &str, tasks_dir: Option<&Path>) -> Rig {
    let tmp = std::env::temp_dir().join(format!("sp-history-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let (tx, events) = mpsc::channel();
    let tx = Mutex::new(tx);
    let rec = RecordingActuator::default();
    let window = Arc::new(Window::default());
    let tasks_dir = tasks_dir.map_or_else(|| tmp.join("tasks"), Path::to_path_buf);
    let options = TaskOptions { hide_settle: Duration::from_millis(2), tasks_dir: Some(tasks_dir), ..TaskOptions::default() };
    let sink = Arc::new(move |ev: TaskEvent| drop(tx.lock().unwrap().send(ev)));
    let runner = TaskRunner::new(Box::new(rec.clone()), &tmp.join("audit.jsonl"), window.clone(), sink, options).unwrap();
    runner.set_actions_enabled(true);
    Rig { runner, events, rec, window, tmp }
}

impl Rig {
    /// Runs `task` with `replies`, answering each proposal with `decision`; its outcome.
    fn run(&self, task: &str, replies: &[String], decision: UiDecision) -> TaskOutcome {
        let img = RgbImage::from_fn(200, 100, |x, _| image::Rgb([x as u8, 60, 90]));
        let spec = TaskSpec {
            task: task.into(),
            model: TaskModel::Brain(Box::new(ScriptedBrain::new(replies.to_vec()))),
            screen: TaskScreen::Live(Box::new(FakeCapture::new(geometry(), img))),
            one_step: false,
        };
        self.runner.start(spec).unwrap();
        loop {
            match self.events.recv_timeout(WAIT).expect("an event") {
                TaskEvent::Proposal(p) => self.runner.decide(p.id, decision).unwrap(),
                TaskEvent::Outcome(o) => return o,
                _ => {}
            }
        }
    }
}

#[test]
fn tasks_are_recorded_listed_newest_first_and_replay_identically() {
    let r = rig("list", None);
    assert!(r.runner.history().unwrap().is_empty(), "no tasks folder yet: an empty list");
    let click = call("left_click", ", \"coordinate\": [500, 500]");
    let done = call("terminate", ", \"status\": \"success\"");
    let o = r.run("click the middle", &[click.clone(), done], UiDecision::Accept);
    assert_eq!(o.status, "success", "{o:?}");
    std::thread::sleep(Duration::from_millis(20)); // the start times differ
    let o = r.run("click it again", &[click], UiDecision::Reject);
    assert_eq!(o.status, "rejected", "{o:?}");

    let list = r.runner.history().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!((list[0].task.as_str(), list[0].status.as_str(), list[0].steps), ("click it again", "rejected", 1));
    assert_eq!((list[1].task.as_str(), list[1].status.as_str(), list[1].steps), ("click the middle", "success", 2));
    assert!(list[0].started > list[1].started, "{list:?}");
    for t in &list {
        assert!(r.tmp.join("tasks").join(&t.id).join("task.json").is_file(), "{t:?}");
        let check = r.runner.replay_check(&t.id).unwrap();
        assert!(check.identical && check.differences.is_empty(), "{check:?}");
        assert_eq!(check.steps, t.steps);
    }

    // A screenshot changed after the fact is a difference, named with its step.
    let first = r.tmp.join("tasks").join(&list[1].id);
    let other = RgbImage::from_pixel(200, 100, image::Rgb([1, 2, 3]));
    other.save(first.join("step-001.png")).unwrap();
    let check = r.runner.replay_check(&list[1].id).unwrap();
    assert!(!check.identical, "{check:?}");
    assert!(check.differences.iter().any(|d| d.starts_with("step 1") && d.contains("screenshot")), "{check:?}");
    std::fs::remove_dir_all(&r.tmp).unwrap();
}

#[test]
fn bad_task_ids_are_refused() {
    let r = rig("ids", None);
    let o = r.run("answer", &[call("answer", ", \"text\": \"42\"")], UiDecision::Accept);
    assert_eq!(o.status, "answered", "{o:?}");
    let id = r.runner.history().unwrap()[0].id.clone();
    assert!(r.runner.replay_check(&id).is_ok());
    std::fs::write(r.tmp.join("tasks").join("a-file"), b"x").unwrap();
    std::fs::create_dir_all(r.tmp.join("elsewhere")).unwrap();
    for bad in ["", ".", "..", "../elsewhere", "../tasks/x", "a/b", "a\\b", ".hidden", "/etc", "no-such-task", "a-file", "x\0y"] {
        let err = r.runner.replay_check(bad).expect_err(bad);
        assert_eq!(err.kind(), "invalid_argument", "{bad:?}: {err}");
    }
    std::fs::remove_dir_all(&r.tmp).unwrap();
}

#[test]
fn a_recording_that_cannot_be_written_ends_the_task_and_nothing_runs() {
    let tmp = std::env::temp_dir().join(format!("sp-history-blocked-outer-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let blocked = tmp.join("tasks-is-a-file");
    std::fs::write(&blocked, b"x").unwrap();
    let r = rig("blocked", Some(&blocked));
    let o = r.run("click", &[call("left_click", ", \"coordinate\": [500, 500]")], UiDecision::Accept);
    assert_eq!(o.status, "error", "{o:?}");
    assert!(o.message.contains("record") && o.message.contains("tasks-is-a-file"), "{}", o.message);
    assert!(r.rec.events().is_empty(), "nothing was sent: {:?}", r.rec.events());
    std::fs::remove_dir_all(&r.tmp).unwrap();
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn calibration_needs_actions_on_and_runs_with_the_window_hidden() {
    let r = rig("calibrate", None);
    r.runner.set_actions_enabled(false);
    let err = r.runner.calibrate(&[geometry()], &mut r.rec.clone()).unwrap_err();
    assert!(err.to_string().contains("Allow actions"), "{err}");
    assert!(r.rec.events().is_empty() && r.window.hides.load(Ordering::SeqCst) == 0);

    r.runner.set_actions_enabled(true);
    let reports = r.runner.calibrate(&[geometry(), geometry()], &mut r.rec.clone()).unwrap();
    assert_eq!(reports.len(), 2);
    for rep in &reports {
        assert_eq!((rep.max_error_px, rep.mean_error_px), (0.0, 0.0), "{rep:?}");
    }
    assert_eq!(r.window.hides.load(Ordering::SeqCst), 1, "hidden once for the whole test");
    assert!(!r.window.hidden.load(Ordering::SeqCst), "shown again afterwards");
    assert_eq!(r.rec.events().len(), 10, "five pointer moves a monitor");
    std::fs::remove_dir_all(&r.tmp).unwrap();
}
