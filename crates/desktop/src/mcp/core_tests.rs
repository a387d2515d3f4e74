//! The tools' logic (questions in `core.rs`, actions in `actions.rs`) on painted screens, a scripted model and a recording input device: what a
//! client gets back, which input events happen, and what the audit log says.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use screenpilot_agent::audit_verify::verify_file;
use screenpilot_agent::{InputEvent, OsPoint, RecordingActuator};
use screenpilot_engine::backend::Reply as EngineReply;
use screenpilot_engine::{FinishReason, Request};

use super::*;
use crate::mcp::screens::fake::FakeScreens;
use crate::mcp::tools::{Button, Direction};

/// Answers every request with the same text, remembering the requests.
struct Scripted(String, Mutex<Vec<Request>>);

impl Backend for Scripted {
    fn chat(&self, request: Request, on_text: &mut dyn FnMut(&str)) -> screenpilot_engine::Result<EngineReply> {
        self.1.lock().unwrap().push(request);
        on_text(&self.0);
        Ok(EngineReply { text: self.0.clone(), reasoning: String::new(), finish_reason: FinishReason::Stop, timings: RequestTimings::default() })
    }
    fn describe(&self) -> String {
        "scripted".into()
    }
}

struct Fixture {
    core: McpCore,
    screens: Arc<FakeScreens>,
    input: RecordingActuator,
    audit: PathBuf,
    _dir: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fixture(answer: &str, allow_actions: bool, share_screenshots: bool) -> Fixture {
    let dir = std::env::temp_dir().join(format!("sp-mcp-{}-{}", std::process::id(), rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let audit = dir.join("audit.jsonl");
    let screens = Arc::new(FakeScreens::new());
    let input = RecordingActuator::default();
    let config = McpConfig { allow_actions, share_screenshots, audit: Some(audit.clone()), ..McpConfig::default() };
    let core = McpCore::new(config, screens.clone(), Arc::new(Mutex::new(Box::new(input.clone()))));
    core.set_backend(Some(Arc::new(Scripted(answer.into(), Mutex::new(Vec::new())))));
    Fixture { core, screens, input, audit, _dir: TempDir(dir) }
}

fn structured(r: &Reply) -> &Value {
    match r {
        Reply::Done { structured: Some(v), .. } => v,
        other => panic!("{other:?}"),
    }
}

fn audit_decisions(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["decision"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn find_maps_the_models_box_onto_the_monitor_it_looked_at() {
    let f = fixture("```json\n[{\"bbox_2d\": [100, 200, 300, 400], \"label\": \"OK\"}]\n```", false, false);
    // Monitor 1 is 640x400 at x = -640.
    let r = f.core.query(&ToolCall::Find { description: "the OK button".into(), target: Target::Monitor(1) });
    let v = structured(&r);
    assert_eq!(v["objects"][0]["label"], "OK");
    assert_eq!(v["objects"][0]["point"], json!([-640 + 128, 120]));
    assert_eq!(v["objects"][0]["bbox"], json!([-640 + 64, 80, -640 + 192, 160]));
    assert_eq!(v["capture"]["monitor"], "left");
    let Reply::Done { text, .. } = &r else { panic!() };
    assert!(text.contains("OK: click (-512, 120)"), "{text}");
    // An answer without boxes is an empty list with a note, not an error.
    let f = fixture("I see no button.", false, false);
    let r = f.core.query(&ToolCall::Find { description: "x".into(), target: Target::Primary });
    assert_eq!(structured(&r)["objects"], json!([]));
    assert!(structured(&r)["note"].as_str().unwrap().contains("nothing"));
}

#[test]
fn questions_go_to_the_model_with_the_capture_and_need_a_model() {
    let f = fixture("A text editor.", false, false);
    let r = f.core.query(&ToolCall::AskScreen { question: "What is open?".into(), target: Target::Window(42) });
    assert_eq!(structured(&r)["answer"], "A text editor.");
    assert_eq!(structured(&r)["capture"]["width"], 200.0);
    let d = f.core.query(&ToolCall::DescribeScreen { target: Target::Primary });
    assert_eq!(structured(&d)["fields"], Value::Null); // the answer was not JSON
    f.core.set_backend(None);
    assert!(matches!(f.core.query(&ToolCall::AskScreen { question: "q".into(), target: Target::Primary }), Reply::Failed(m) if m.contains("no model")));
    // A window that is not there is the client's mistake.
    assert!(matches!(f.core.query(&ToolCall::AskScreen { question: "q".into(), target: Target::Window(7) }), Reply::Bad(_)));
}

#[test]
fn describe_returns_the_fields_of_a_json_answer() {
    let f = fixture("{\"application\": \"Editor\", \"dialogs\": []}", false, false);
    let d = f.core.query(&ToolCall::DescribeScreen { target: Target::Primary });
    assert_eq!(structured(&d)["fields"]["application"], "Editor");
}

#[test]
fn screenshots_leave_only_when_the_user_shares_them() {
    let f = fixture("", false, false);
    assert!(matches!(f.core.query(&ToolCall::Screenshot { target: Target::Primary }), Reply::Refused(m) if m.contains("not shared")));
    let f = fixture("", false, true);
    let region = Target::Region { x: 10, y: 20, width: 64, height: 32 };
    let Reply::Done { png: Some(png), .. } = f.core.query(&ToolCall::Screenshot { target: region }) else { panic!() };
    let img = image::load_from_memory(&png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (64, 32));
    assert_eq!(img.get_pixel(0, 0).0[..2], [10, 20]);
}

#[test]
fn actions_off_are_refused_and_audited_without_input() {
    let f = fixture("", false, false);
    let p = f.core.prepare(&ToolCall::Click { x: 100, y: 100, button: Button::Left, count: 1 }).unwrap();
    let r = f.core.act(&p, "test-client", Decision::Approve);
    assert!(matches!(&r, Reply::Refused(m) if m.contains("actions are off")), "{r:?}");
    assert!(f.input.events().is_empty());
    assert_eq!(audit_decisions(&f.audit), vec!["refused_disabled"]);
}

#[test]
fn an_approved_click_lands_on_the_client_coordinates_after_the_audit_record() {
    let f = fixture("", true, false);
    // On the monitor left of the primary one.
    let p = f.core.prepare(&ToolCall::Click { x: -600, y: 10, button: Button::Left, count: 2 }).unwrap();
    assert!(p.description.contains("double-click at (-600, 10)"), "{}", p.description);
    let r = f.core.act(&p, "test-client", Decision::Approve);
    assert!(matches!(&r, Reply::Done { .. }), "{r:?}");
    let ev = f.input.events();
    assert_eq!(ev[0], InputEvent::MoveTo(OsPoint { x: -600, y: 10 }));
    let buttons: Vec<&InputEvent> = ev.iter().filter(|e| matches!(e, InputEvent::Button(..))).collect();
    assert!(buttons.len() >= 2, "a double click: {ev:?}");
    assert_eq!(audit_decisions(&f.audit), vec!["approved", "executed", "finished"]);
    let line: Value = serde_json::from_str(std::fs::read_to_string(&f.audit).unwrap().lines().next().unwrap()).unwrap();
    assert!(line["model_output"].as_str().unwrap().contains("MCP client \"test-client\""));
    assert!(verify_file(&f.audit).is_ok());
}

#[test]
fn rejected_or_off_screen_actions_send_nothing() {
    let f = fixture("", true, false);
    let p = f.core.prepare(&ToolCall::Key { keys: "ctrl+s".into() }).unwrap();
    assert!(matches!(f.core.act(&p, "c", Decision::Reject), Reply::Refused(m) if m.contains("rejected")));
    assert!(f.input.events().is_empty());
    assert_eq!(audit_decisions(&f.audit), vec!["rejected_by_user"]);
    assert!(matches!(f.core.prepare(&ToolCall::Click { x: 5000, y: 5, button: Button::Left, count: 1 }), Err(Reply::Bad(_))));
    assert!(matches!(f.core.prepare(&ToolCall::Key { keys: "hyperdrive".into() }), Err(Reply::Bad(_))));
    assert!(matches!(f.core.prepare(&ToolCall::Click { x: 5, y: 5, button: Button::Right, count: 2 }), Err(Reply::Bad(_))));
}

#[test]
fn scroll_type_and_key_become_their_input_events() {
    let f = fixture("", true, false);
    let run = |call: ToolCall| {
        let p = f.core.prepare(&call).unwrap();
        assert!(matches!(f.core.act(&p, "c", Decision::Approve), Reply::Done { .. }));
    };
    run(ToolCall::Scroll { direction: Direction::Down, amount: 2, at: Some((320, 200)) });
    run(ToolCall::Type { text: "héllo".into() });
    let ev = f.input.events();
    assert_eq!(ev[0], InputEvent::MoveTo(OsPoint { x: 320, y: 200 }));
    assert!(ev.contains(&InputEvent::Scroll(screenpilot_agent::screen_action::ScrollAxis::Vertical, -2)), "{ev:?}");
    let typed: String = ev.iter().filter_map(|e| if let InputEvent::Text(t) = e { Some(t.as_str()) } else { None }).collect();
    assert_eq!(typed, "héllo");
}

#[test]
fn a_thinking_models_reasoning_is_neither_found_nor_run() {
    // A remote server without a reasoning parser hands the reasoning over with the answer.
    let decoy = "Not {\"bbox_2d\": [0, 0, 10, 10], \"label\": \"decoy\"}.\n</think>\n\n[{\"bbox_2d\": [100, 200, 300, 400], \"label\": \"OK\"}]";
    let f = fixture(decoy, false, false);
    let r = f.core.query(&ToolCall::Find { description: "the OK button".into(), target: Target::Monitor(1) });
    let objects = structured(&r)["objects"].as_array().unwrap().clone();
    assert_eq!(objects.len(), 1, "{objects:?} {}", structured(&r)["model_output"]);
    assert_eq!(objects[0]["label"], "OK");
    // A task whose only click is in the reasoning sends no input.
    let click = "<tool_call>\n{\"name\": \"computer_use\", \"arguments\": {\"action\": \"left_click\", \"coordinate\": [500, 500]}}\n</tool_call>";
    let f = fixture(&format!("I could {click} but I will not.\n</think>\n\nNothing to do."), true, false);
    let r = f.core.task("check the screen", None, 3, true);
    assert_eq!(structured(&r)["outcome"], "no_action");
    assert!(f.input.events().is_empty());
}

#[test]
fn a_task_needs_the_users_yes_and_a_real_monitor() {
    let f = fixture("", true, false);
    assert!(matches!(f.core.task("open the menu", None, 3, false), Reply::Refused(m) if m.contains("rejected")));
    assert!(matches!(f.core.task("open the menu", Some(9), 3, true), Reply::Bad(_)));
    // The scripted model answers in text: the task ends with that answer, no input sent.
    let f = fixture("There is nothing to do.", true, false);
    let r = f.core.task("check the screen", None, 3, true);
    assert_eq!(structured(&r)["outcome"], "no_action");
    assert!(f.input.events().is_empty());
}

#[test]
fn the_global_stop_ends_a_wait_and_later_calls_run_again() {
    let f = fixture("", false, false);
    let core = Arc::new(f.core);
    let c = core.clone();
    let waiter = std::thread::spawn(move || c.query(&ToolCall::WaitForChange { timeout_ms: 20_000, threshold: 0.001, target: Target::Primary }));
    std::thread::sleep(Duration::from_millis(300));
    core.stop_all();
    let r = waiter.join().unwrap();
    assert_eq!(structured(&r)["changed"], false);
    assert!(structured(&r)["waited_ms"].as_f64().unwrap() < 10_000.0);
    // Not stopped for ever.
    let r = core.query(&ToolCall::WaitForChange { timeout_ms: 300, threshold: 0.001, target: Target::Primary });
    assert!(structured(&r)["waited_ms"].as_f64().unwrap() >= 300.0);
}

#[test]
fn wait_for_change_sees_a_change() {
    let f = fixture("", false, false);
    let screens = f.screens.clone();
    let changer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        *screens.tint.lock().unwrap() = 200;
    });
    let r = f.core.query(&ToolCall::WaitForChange { timeout_ms: 10_000, threshold: 0.001, target: Target::Monitor(0) });
    changer.join().unwrap();
    assert_eq!(structured(&r)["changed"], true);
    let r = f.core.query(&ToolCall::WaitForChange { timeout_ms: 400, threshold: 0.001, target: Target::Monitor(0) });
    assert_eq!(structured(&r)["changed"], false);
}

#[test]
fn a_confirmation_counts_once_and_only_for_its_own_call() {
    let f = fixture("", true, false);
    let n = f.core.remember("click 1 2".into());
    assert!(!f.core.take(&n, "click 9 9"));
    let n = f.core.remember("click 1 2".into());
    assert!(f.core.take(&n, "click 1 2"));
    assert!(!f.core.take(&n, "click 1 2"));
    assert!(!f.core.take("made-up", "click 1 2"));
}

#[test]
fn at_most_eight_calls_run_at_once() {
    let f = fixture("", false, false);
    let permits: Vec<_> = (0..MAX_RUNNING_CALLS).map(|_| f.core.try_begin().unwrap()).collect();
    assert!(f.core.try_begin().is_none());
    drop(permits);
    assert!(f.core.try_begin().is_some());
}
