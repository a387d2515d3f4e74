//! End-to-end tests against a real X server (Xvfb in CI, `DISPLAY` must be set: these
//! tests fail, not skip, without it). A board of coloured buttons (tests/support/board.rs)
//! records clicks; the agent captures with xcap, acts with enigo, reads the pointer back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use image::RgbImage;
use screenpilot_agent::calibrate::calibrate;
use screenpilot_agent::enigo_backend::EnigoActuator;
use screenpilot_agent::policy::FixedConfirmer;
use screenpilot_agent::xcap_backend::XcapCapture;
use screenpilot_agent::*;
use support::board::{Board, ButtonSpec, BUTTONS};

static X: Mutex<()> = Mutex::new(());

/// Serialises the X tests (one pointer) and insists on a display.
fn x_display() -> MutexGuard<'static, ()> {
    let guard = X.lock().unwrap_or_else(|e| e.into_inner());
    let display = std::env::var("DISPLAY").unwrap_or_default();
    assert!(!display.is_empty(), "DISPLAY is not set: these tests need an X server (CI starts Xvfb)");
    guard
}

fn button(name: &str) -> ButtonSpec {
    *BUTTONS.iter().find(|b| b.name == name).unwrap()
}

/// Where the model would say `colour` is: the centre of that colour's pixels, in 0..=1000.
fn find_colour(shot: &Screenshot, rgb: u32) -> Point<Rel1000> {
    let want = [(rgb >> 16) as u8, (rgb >> 8) as u8, rgb as u8];
    let img: &RgbImage = &shot.image;
    let (mut n, mut sx, mut sy) = (0u64, 0u64, 0u64);
    for (x, y, p) in img.enumerate_pixels() {
        if p.0 == want {
            n += 1;
            sx += u64::from(x);
            sy += u64::from(y);
        }
    }
    assert!(n > 0, "colour {rgb:06x} not on screen");
    let (cx, cy) = (sx as f64 / n as f64 + 0.5, sy as f64 / n as f64 + 0.5);
    Point::new(cx * 1000.0 / f64::from(img.width()), cy * 1000.0 / f64::from(img.height()))
}

fn click_call(p: Point<Rel1000>) -> String {
    format!(
        "<tool_call>\n{{\"name\": \"computer_use\", \"arguments\": {{\"action\": \"left_click\", \"coordinate\": [{:.0}, {:.0}]}}}}\n</tool_call>",
        p.x, p.y
    )
}

fn settle() -> AgentConfig {
    AgentConfig {
        settle: SettleConfig { poll: Duration::from_millis(50), threshold: 0.01, timeout: Duration::from_millis(500) },
        ..AgentConfig::default()
    }
}

fn xdotool_pointer() -> (i32, i32) {
    let out = std::process::Command::new("xdotool").arg("getmouselocation").output().expect("xdotool must be installed");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |k: &str| -> i32 {
        text.split_whitespace().find_map(|w| w.strip_prefix(k)).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{text}"))
    };
    (field("x:"), field("y:"))
}

#[test]
fn xcap_captures_the_xvfb_screen_with_the_board_on_it() {
    let _x = x_display();
    let board = Board::spawn().unwrap();
    let shot = XcapCapture::default().capture().unwrap();
    let (conn, n) = x11rb::connect(None).unwrap();
    let root = &x11rb::connection::Connection::setup(&conn).roots[n];
    assert_eq!(shot.image.dimensions(), (u32::from(root.width_in_pixels), u32::from(root.height_in_pixels)));
    let red = button("red");
    let (cx, cy) = red.center();
    assert_eq!(shot.image.get_pixel(cx as u32, cy as u32).0, [255, 0, 0]);
    drop(board);
}

#[test]
fn model_click_on_a_button_found_in_the_screenshot_lands_on_that_button() {
    let _x = x_display();
    let board = Board::spawn().unwrap();
    let mut capture = XcapCapture::default();
    let target = button("green");
    let rel = find_colour(&capture.capture().unwrap(), target.rgb);
    let mut brain = ScriptedBrain::new([click_call(rel), r#"<tool_call>{"name": "computer_use", "arguments": {"action": "terminate", "status": "success"}}</tool_call>"#.to_string()]);
    let mut act = EnigoActuator::new().unwrap();
    let mut confirmer = FixedConfirmer(Decision::Approve);
    let mut agent = Agent {
        brain: &mut brain, capture: &mut capture, actuator: &mut act, confirmer: &mut confirmer, audit: None, recorder: None,
        policy: Policy { actions_enabled: true, mode: Mode::ConfirmEach }, config: settle(), stop: StopFlag::new(),
    };
    assert_eq!(agent.run("press the green button").unwrap(), Outcome::Terminated(model_action::TerminateStatus::Success));
    let clicks = board.wait_for_clicks(1, Duration::from_secs(2));
    assert_eq!(clicks.len(), 1, "{clicks:?}");
    assert_eq!(clicks[0].button_name, "green");
    assert_eq!(clicks[0].mouse_button, 1);
    let (cx, cy) = target.center();
    assert!((i32::from(clicks[0].root_x) - cx).abs() <= 2 && (i32::from(clicks[0].root_y) - cy).abs() <= 2, "{clicks:?}");
}

#[test]
fn rejected_action_neither_moves_the_pointer_nor_clicks() {
    let _x = x_display();
    let board = Board::spawn().unwrap();
    let mut act = EnigoActuator::new().unwrap();
    act.perform(&InputEvent::MoveTo(OsPoint { x: 37, y: 41 })).unwrap();
    assert_eq!(xdotool_pointer(), (37, 41));
    let mut capture = XcapCapture::default();
    let rel = find_colour(&capture.capture().unwrap(), button("red").rgb);
    let mut brain = ScriptedBrain::new([click_call(rel)]);
    let mut confirmer = FixedConfirmer(Decision::Reject);
    let mut agent = Agent {
        brain: &mut brain, capture: &mut capture, actuator: &mut act, confirmer: &mut confirmer, audit: None, recorder: None,
        policy: Policy { actions_enabled: true, mode: Mode::ConfirmEach }, config: settle(), stop: StopFlag::new(),
    };
    assert_eq!(agent.run("press red").unwrap(), Outcome::RejectedByUser);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(xdotool_pointer(), (37, 41));
    assert!(board.clicks().is_empty(), "{:?}", board.clicks());
}

#[test]
fn stop_flag_ends_a_running_task_and_no_click_follows() {
    let _x = x_display();
    let board = Board::spawn().unwrap();
    let mut capture = XcapCapture::default();
    let rel = find_colour(&capture.capture().unwrap(), button("blue").rgb);
    let mut brain = ScriptedBrain::new(vec![click_call(rel); 50]);
    let mut act = EnigoActuator::new().unwrap();
    let mut confirmer = FixedConfirmer(Decision::Reject);
    let stop = StopFlag::new();
    let remote = stop.clone();
    let raiser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        remote.raise();
        Instant::now()
    });
    let mut agent = Agent {
        brain: &mut brain, capture: &mut capture, actuator: &mut act, confirmer: &mut confirmer, audit: None, recorder: None,
        policy: Policy { actions_enabled: true, mode: Mode::Auto(AutoLimits::new(50, Duration::from_millis(200))) },
        config: settle(), stop,
    };
    let outcome = agent.run("keep pressing blue").unwrap();
    let ended = Instant::now();
    let raised = raiser.join().unwrap();
    assert_eq!(outcome, Outcome::Stopped);
    // A screen capture may be in flight when the flag rises; the loop itself reacts within 100 ms.
    assert!(ended.duration_since(raised) < Duration::from_millis(400), "{:?}", ended.duration_since(raised));
    let before = board.wait_for_clicks(1, Duration::from_millis(200)).len();
    assert!((1..50).contains(&before), "{before} clicks");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(board.clicks().len(), before, "a click arrived after the stop");
    assert!(board.clicks().iter().all(|c| c.button_name == "blue"));
}

#[test]
fn calibration_on_xvfb_reports_no_error() {
    let _x = x_display();
    let mut act = EnigoActuator::new().unwrap();
    let mut reader = EnigoActuator::new().unwrap();
    let geometries: Vec<CaptureGeometry> = xcap_backend::XcapCapture::monitors()
        .unwrap()
        .into_iter()
        .map(|m| {
            let (w, h) = (m.width / 2, m.height / 2); // a downscaled screenshot
            CaptureGeometry::full_monitor(m, w, h).unwrap()
        })
        .collect();
    assert!(!geometries.is_empty());
    let reports = calibrate(&mut act, &mut reader, &geometries, &StopFlag::new()).unwrap();
    for r in &reports {
        assert_eq!(r.samples.len(), 5);
        assert!(r.max_error_px <= 0.5, "{r:?}");
    }
}

#[test]
fn qwen_positive_scroll_pixels_are_wheel_up_notches_on_x() {
    let _x = x_display();
    let board = Board::spawn().unwrap();
    let shot = XcapCapture::default().capture().unwrap();
    let rel = find_colour(&shot, button("yellow").rgb);
    let mut act = EnigoActuator::new().unwrap();
    let stop = StopFlag::new();
    for (pixels, x_button) in [(300, 4u8), (-100, 5u8)] {
        let model = ModelAction::Scroll { horizontal: false, pixels, coordinate: Some(rel) };
        let screen_action::Resolved::Act(action) = resolve(&model, &shot.geometry).unwrap() else { panic!("not an action") };
        executor::execute(&mut act, &action, &stop).unwrap();
        let expected = (pixels.unsigned_abs() / 100) as usize;
        board.wait_for_clicks(expected, Duration::from_secs(1));
        std::thread::sleep(Duration::from_millis(200));
        let presses: Vec<u8> = board.clicks().iter().map(|c| c.mouse_button).collect();
        board.clicks.lock().unwrap().clear();
        assert_eq!(presses.len(), expected, "{presses:?}");
        assert!(presses.iter().all(|b| *b == x_button), "pixels {pixels}: X buttons {presses:?}");
    }
}
