//! Task mode without a display: the runner drives the agent loop with a scripted brain, a fake
//! screen whose pixels show ScreenPilot's window while it is visible, and a recording
//! actuator. Accept, reject, auto for N steps (actions that always ask still ask), stop while a
//! proposal waits and while the model thinks (the outcome is `stopped`, nothing follows it, no
//! input event after it), the window kept out of every screenshot the model sees and hidden at
//! every input event, a one-step task on a fixed screenshot, and the readable audit table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::RgbImage;
use screenpilot_agent::{
    Actuator, Brain, BrainError, BrainRequest, Capture, CaptureGeometry, InputEvent, InputSpace, MonitorGeometry, OsPoint,
    RecordingActuator, Screenshot,
};
use screenpilot_desktop::task_events::{Proposal, TaskEvent, TaskOutcome};
use screenpilot_desktop::task_parts::{AppWindow, UiDecision};
use screenpilot_desktop::task_runner::{TaskModel, TaskOptions, TaskRunner, TaskScreen, TaskSpec};
use screenpilot_desktop::DesktopError;

const WAIT: Duration = Duration::from_secs(20);
/// ScreenPilot's window, as the fake screen paints it while the window is visible.
const WINDOW_RGB: [u8; 3] = [250, 10, 10];

fn call(action: &str, extra: &str) -> String {
    format!("<tool_call>\n{{\"name\": \"computer_use\", \"arguments\": {{\"action\": \"{action}\"{extra}}}}}\n</tool_call>")
}
fn click(x: u32, y: u32) -> String {
    call("left_click", &format!(", \"coordinate\": [{x}, {y}]"))
}
fn done() -> String {
    call("terminate", ", \"status\": \"success\"")
}

struct FakeWindow {
    visible: AtomicBool,
    hides: AtomicUsize,
    fail: bool,
}

impl FakeWindow {
    fn new(fail: bool) -> Arc<Self> {
        Arc::new(Self { visible: AtomicBool::new(true), hides: AtomicUsize::new(0), fail })
    }
}

impl AppWindow for FakeWindow {
    fn hide(&self) -> screenpilot_desktop::Result<()> {
        if self.fail {
            return Err(DesktopError::Window("the window manager said no".into()));
        }
        self.hides.fetch_add(1, Ordering::SeqCst);
        self.visible.store(false, Ordering::SeqCst);
        Ok(())
    }
    fn show(&self) -> screenpilot_desktop::Result<()> {
        self.visible.store(true, Ordering::SeqCst);
        Ok(())
    }
}

fn geometry() -> CaptureGeometry {
    let m = MonitorGeometry { name: "m".into(), origin: OsPoint { x: 1000, y: 0 }, width: 200, height: 100, scale_factor: 1.0, input_space: InputSpace::Physical };
    CaptureGeometry::full_monitor(m, 200, 100).unwrap()
}

/// A 200x100 monitor; while the app's window is visible, it covers (20..80, 20..60).
struct Screen(Arc<FakeWindow>);

impl Capture for Screen {
    fn capture(&mut self) -> screenpilot_agent::Result<Screenshot> {
        let visible = self.0.visible.load(Ordering::SeqCst);
        let img = RgbImage::from_fn(200, 100, |x, y| {
            let inside = (20..80).contains(&x) && (20..60).contains(&y);
            image::Rgb(if visible && inside { WINDOW_RGB } else { [40, 40, 40] })
        });
        Ok(Screenshot { image: Arc::new(img), geometry: geometry() })
    }
}

/// Records each event and whether the app's window was visible when it was sent.
struct Probe {
    rec: RecordingActuator,
    window: Arc<FakeWindow>,
    visible_at: Arc<Mutex<Vec<bool>>>,
}

impl Actuator for Probe {
    fn perform(&mut self, e: &InputEvent) -> screenpilot_agent::Result<()> {
        self.visible_at.lock().unwrap().push(self.window.visible.load(Ordering::SeqCst));
        self.rec.perform(e)
    }
}

/// A brain answering `replies` in order (after `delay`), keeping every image it was shown.
fn brain(replies: Vec<String>, seen: Arc<Mutex<Vec<Arc<RgbImage>>>>, delay: Duration) -> Box<dyn Brain + Send> {
    let mut replies = VecDeque::from(replies);
    Box::new(move |req: &BrainRequest| -> Result<String, BrainError> {
        seen.lock().unwrap().extend(req.turns.iter().flat_map(|t| t.images().cloned()));
        std::thread::sleep(delay);
        replies.pop_front().ok_or_else(|| "no more replies".into())
    })
}

struct Rig {
    runner: TaskRunner,
    events: Receiver<TaskEvent>,
    window: Arc<FakeWindow>,
    rec: RecordingActuator,
    visible_at: Arc<Mutex<Vec<bool>>>,
    seen: Arc<Mutex<Vec<Arc<RgbImage>>>>,
    audit: PathBuf,
}

fn rig(name: &str, window: Arc<FakeWindow>) -> Rig {
    let audit = std::env::temp_dir().join(format!("sp-task-{name}-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&audit);
    let (tx, events) = mpsc::channel();
    let tx = Mutex::new(tx);
    let rec = RecordingActuator::default();
    let visible_at = Arc::new(Mutex::new(Vec::new()));
    let probe = Probe { rec: rec.clone(), window: window.clone(), visible_at: visible_at.clone() };
    let options = TaskOptions { hide_settle: Duration::from_millis(5), auto_interval: Duration::from_millis(5), ..TaskOptions::default() };
    let sink = Arc::new(move |ev: TaskEvent| drop(tx.lock().unwrap().send(ev)));
    let runner = TaskRunner::new(Box::new(probe), &audit, window.clone(), sink, options).unwrap();
    runner.set_actions_enabled(true);
    Rig { runner, events, window, rec, visible_at, seen: Arc::new(Mutex::new(Vec::new())), audit }
}

impl Rig {
    fn start(&self, replies: Vec<String>, delay: Duration) -> u64 {
        let spec = TaskSpec {
            task: "do it".into(),
            model: TaskModel::Brain(brain(replies, self.seen.clone(), delay)),
            screen: TaskScreen::Live(Box::new(Screen(self.window.clone()))),
            one_step: false,
        };
        self.runner.start(spec).unwrap()
    }

    /// The next event `f` picks, skipping others.
    fn wait<T>(&self, mut f: impl FnMut(&TaskEvent) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            let left = WAIT.checked_sub(start.elapsed()).expect("timed out waiting for a task event");
            let ev = self.events.recv_timeout(left).expect("timed out waiting for a task event");
            if let Some(t) = f(&ev) {
                return t;
            }
        }
    }

    fn proposal(&self) -> Proposal {
        self.wait(|e| match e {
            TaskEvent::Proposal(p) => Some(p.clone()),
            _ => None,
        })
    }

    fn outcome(&self) -> TaskOutcome {
        self.wait(|e| match e {
            TaskEvent::Outcome(o) => Some(o.clone()),
            _ => None,
        })
    }

    fn no_window_in_any_screenshot(&self) {
        let seen = self.seen.lock().unwrap();
        assert!(!seen.is_empty());
        for img in seen.iter() {
            assert!(img.pixels().all(|p| p.0 != WINDOW_RGB), "the model was shown ScreenPilot's window");
        }
    }
}

#[test]
fn an_accepted_step_runs_with_the_window_hidden_and_the_audit_reads_as_a_table() {
    let r = rig("accept", FakeWindow::new(false));
    let task = r.start(vec![click(500, 500), done()], Duration::ZERO);
    let thumb = r.wait(|e| match e {
        TaskEvent::Step { step: 1, thumbnail, image_width: 200, .. } => Some(thumbnail.clone()),
        _ => None,
    });
    assert!(thumb.starts_with("data:image/png;base64,"));
    let p = r.proposal();
    assert_eq!((p.task, p.step, p.auto), (task, 1, false));
    assert_eq!(p.description, "left click at (1100, 50)");
    assert_eq!(p.image_points, vec![(100.0, 50.0)]);
    assert!(r.window.visible.load(Ordering::SeqCst), "the window is shown while the proposal waits");
    assert!(r.runner.decide(p.id + 1, UiDecision::Accept).is_err(), "only the waiting proposal can be decided");
    r.runner.decide(p.id, UiDecision::Accept).unwrap();
    let o = r.outcome();
    assert_eq!(o.status, "success", "{o:?}");
    assert_eq!(r.rec.events().first(), Some(&InputEvent::MoveTo(OsPoint { x: 1100, y: 50 })));
    let visible_at = r.visible_at.lock().unwrap().clone();
    assert!(!visible_at.is_empty() && visible_at.iter().all(|v| !v), "hidden at every input event: {visible_at:?}");
    r.no_window_in_any_screenshot();
    assert!(r.window.visible.load(Ordering::SeqCst), "shown again after the task");
    let rows: Vec<(u32, &str, &str, &str)> = o.audit.iter().map(|a| (a.step, a.action.as_str(), a.target.as_str(), a.decision.as_str())).collect();
    assert_eq!(
        rows,
        vec![
            (1, "left click", "(1100, 50)", "approved, about to run"),
            (1, "left click", "(1100, 50)", "executed"),
            (2, "finish (success)", "", "finished"),
        ]
    );
    assert!(o.audit.iter().all(|a| a.time.len() == 8), "{:?}", o.audit);
    assert!(screenpilot_agent::audit_verify::verify_file(&r.audit).unwrap().is_ok());
    assert!(r.runner.current().is_none());
    assert!(r.runner.decide(p.id, UiDecision::Accept).is_err(), "nothing waits after the end");
}

#[test]
fn a_rejected_step_sends_nothing_and_ends_the_task() {
    let r = rig("reject", FakeWindow::new(false));
    r.start(vec![click(10, 10)], Duration::ZERO);
    let p = r.proposal();
    r.runner.decide(p.id, UiDecision::Reject).unwrap();
    let decided = r.wait(|e| match e {
        TaskEvent::Decided { proposal, decision, .. } if *proposal == p.id => Some(decision.clone()),
        _ => None,
    });
    assert_eq!(decided, "rejected");
    let o = r.outcome();
    assert_eq!(o.status, "rejected");
    assert!(r.rec.events().is_empty());
    assert_eq!(o.audit.last().unwrap().decision, "rejected by you");
    // A second task may start once this one is over; the audit table holds only its records.
    r.start(vec![done()], Duration::ZERO);
    let o = r.outcome();
    assert_eq!((o.status.as_str(), o.audit.len()), ("success", 1));
}

#[test]
fn auto_for_n_steps_approves_them_but_still_asks_about_actions_that_always_ask() {
    let r = rig("auto", FakeWindow::new(false));
    let ctrl_w = call("key", ", \"keys\": [\"ctrl\", \"w\"]");
    r.start(vec![click(100, 100), click(200, 200), ctrl_w, click(300, 300), click(400, 400), done()], Duration::ZERO);
    let first = r.proposal();
    r.runner.decide(first.id, UiDecision::Auto(3)).unwrap();
    let second = r.proposal();
    assert!(second.auto && second.always_asks.is_none(), "{second:?}");
    let third = r.proposal();
    assert!(!third.auto, "ctrl+w asks even in the auto mode: {third:?}");
    assert!(third.always_asks.as_deref().unwrap().contains("ctrl+w"), "{third:?}");
    r.runner.decide(third.id, UiDecision::Accept).unwrap();
    let fourth = r.proposal();
    assert!(fourth.auto, "the third of the three auto steps: {fourth:?}");
    let fifth = r.proposal();
    assert!(!fifth.auto, "auto covered 3 steps: {fifth:?}");
    assert!(r.runner.decide(fifth.id, UiDecision::Auto(0)).is_err());
    assert!(r.runner.decide(fifth.id, UiDecision::Auto(1000)).is_err());
    r.runner.decide(fifth.id, UiDecision::Accept).unwrap();
    assert_eq!(r.outcome().status, "success");
    let moves: Vec<OsPoint> = r.rec.events().into_iter().filter_map(|e| if let InputEvent::MoveTo(p) = e { Some(p) } else { None }).collect();
    assert_eq!(moves.len(), 4, "four clicks ran: {moves:?}");
    r.no_window_in_any_screenshot();
}

#[test]
fn stop_while_a_proposal_waits_ends_the_task_at_once_and_nothing_follows() {
    let r = rig("stop-waiting", FakeWindow::new(false));
    let task = r.start(vec![click(500, 500), click(500, 500)], Duration::ZERO);
    r.proposal();
    let t0 = Instant::now();
    assert_eq!(r.runner.stop(), Some(task));
    let o = r.outcome();
    eprintln!("stop while waiting: outcome after {:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_secs(2), "stopped after {:?}", t0.elapsed());
    assert_eq!(o.status, "stopped");
    assert_eq!(o.audit.last().map(|a| a.decision.as_str()), Some("stopped"), "{:?}", o.audit);
    std::thread::sleep(Duration::from_millis(300));
    assert!(r.events.try_recv().is_err(), "no event after the outcome");
    assert!(r.rec.events().is_empty(), "no input after the stop");
    assert!(r.window.visible.load(Ordering::SeqCst));
    assert_eq!(r.runner.stop(), None, "nothing left to stop");
}

#[test]
fn stop_while_the_model_thinks_delivers_the_outcome_without_waiting_for_the_answer() {
    let r = rig("stop-thinking", FakeWindow::new(false));
    r.start(vec![click(500, 500)], Duration::from_millis(1500));
    r.wait(|e| matches!(e, TaskEvent::Step { .. }).then_some(()));
    let t0 = Instant::now();
    r.runner.stop();
    let o = r.outcome();
    eprintln!("stop while thinking: outcome after {:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_millis(1000), "the outcome waited for the model: {:?}", t0.elapsed());
    assert_eq!(o.status, "stopped");
    // The model's late answer proposes a click: nothing is shown, nothing is sent.
    std::thread::sleep(Duration::from_millis(1800));
    assert!(r.events.try_recv().is_err(), "no event after the outcome");
    assert!(r.rec.events().is_empty(), "no input after the stop");
    // The next task runs once the late worker is done.
    r.start(vec![done()], Duration::ZERO);
    assert_eq!(r.outcome().status, "success");
}

#[test]
fn a_window_that_cannot_be_hidden_means_no_screenshot_and_no_action() {
    let r = rig("no-hide", FakeWindow::new(true));
    r.start(vec![click(500, 500)], Duration::ZERO);
    let o = r.outcome();
    assert_eq!(o.status, "error");
    assert!(o.message.contains("cannot hide ScreenPilot's window"), "{}", o.message);
    assert!(r.seen.lock().unwrap().is_empty(), "the model saw no screenshot");
    assert!(r.rec.events().is_empty());
}

#[test]
fn with_actions_off_the_task_ends_without_asking() {
    let r = rig("off", FakeWindow::new(false));
    r.runner.set_actions_enabled(false);
    r.start(vec![click(500, 500)], Duration::ZERO);
    let o = r.outcome();
    assert_eq!(o.status, "actions_disabled");
    assert_eq!(o.audit.last().unwrap().decision, "refused: actions are off");
    assert!(r.rec.events().is_empty());
}

#[test]
fn a_one_step_task_acts_on_a_given_answer_about_a_fixed_screenshot() {
    let r = rig("one-step", FakeWindow::new(false));
    let shot = Screen(FakeWindow::new(false)).capture().unwrap();
    let spec = TaskSpec {
        task: "act on the answer".into(),
        model: TaskModel::Brain(brain(vec![click(250, 500)], r.seen.clone(), Duration::ZERO)),
        screen: TaskScreen::Fixed(shot),
        one_step: true,
    };
    r.runner.start(spec).unwrap();
    assert!(r.runner.start(TaskSpec { task: "x".into(), model: TaskModel::Brain(brain(vec![], r.seen.clone(), Duration::ZERO)), screen: TaskScreen::Live(Box::new(Screen(r.window.clone()))), one_step: false }).is_err(), "one task at a time");
    let p = r.proposal();
    assert_eq!(p.screen_points, vec![OsPoint { x: 1050, y: 50 }]);
    assert_eq!(r.window.hides.load(Ordering::SeqCst), 0, "a fixed screenshot needs no hiding");
    r.runner.decide(p.id, UiDecision::Accept).unwrap();
    let o = r.outcome();
    assert_eq!(o.status, "done", "{o:?}");
    assert_eq!(r.window.hides.load(Ordering::SeqCst), 1, "hidden for the action only");
    assert_eq!(r.rec.events().first(), Some(&InputEvent::MoveTo(OsPoint { x: 1050, y: 50 })));
    assert_eq!(o.audit.iter().map(|a| a.decision.as_str()).collect::<Vec<_>>(), vec!["approved, about to run", "executed"]);
}

#[test]
fn a_one_step_task_whose_action_is_unusable_is_refused_not_done() {
    let r = rig("one-step-bad", FakeWindow::new(false));
    let shot = Screen(FakeWindow::new(false)).capture().unwrap();
    let off_screen = call("left_click", ", \"coordinate\": [5000, 10]");
    let spec = TaskSpec {
        task: "act on the answer".into(),
        model: TaskModel::Brain(brain(vec![off_screen], r.seen.clone(), Duration::ZERO)),
        screen: TaskScreen::Fixed(shot),
        one_step: true,
    };
    r.runner.start(spec).unwrap();
    let o = r.outcome();
    assert_eq!(o.status, "refused", "{o:?}");
    assert!(o.message.starts_with("refused"), "{}", o.message);
    assert!(r.rec.events().is_empty());
}
