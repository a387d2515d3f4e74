//! Tests of action execution: event order, stopping, and releasing held input.

use std::time::{Duration, Instant};

use super::*;
use crate::actuator::RecordingActuator;
use crate::coords::OsPoint;
use crate::error::AgentError;
use crate::keys::Key;

/// Raises the stop flag after `after` events.
struct StopAfter {
    inner: RecordingActuator,
    stop: StopFlag,
    after: usize,
    seen: usize,
}

impl Actuator for StopAfter {
    fn perform(&mut self, event: &InputEvent) -> crate::error::Result<()> {
        self.seen += 1;
        if self.seen == self.after {
            self.stop.raise();
        }
        self.inner.perform(event)
    }
}

#[test]
fn key_combo_presses_in_order_and_releases_in_reverse() {
    let mut rec = RecordingActuator::default();
    let action = ScreenAction::Key { keys: vec![Key::Control, Key::Shift, Key::Char('t')] };
    execute(&mut rec, &action, &StopFlag::new()).unwrap();
    let ev = rec.events();
    assert_eq!(ev[0], InputEvent::Key(Key::Control, Press::Down));
    assert_eq!(ev[2], InputEvent::Key(Key::Char('t'), Press::Down));
    assert_eq!(ev[3], InputEvent::Key(Key::Char('t'), Press::Up));
    assert_eq!(ev[5], InputEvent::Key(Key::Control, Press::Up));
}

#[test]
fn stop_between_events_releases_held_keys_and_sends_nothing_else() {
    let stop = StopFlag::new();
    let rec = RecordingActuator::default();
    let mut act = StopAfter { inner: rec.clone(), stop: stop.clone(), after: 1, seen: 0 };
    let action = ScreenAction::Key { keys: vec![Key::Control, Key::Char('w')] };
    let err = execute(&mut act, &action, &stop).unwrap_err();
    assert!(matches!(err, AgentError::Stopped));
    assert_eq!(rec.events(), vec![InputEvent::Key(Key::Control, Press::Down), InputEvent::Key(Key::Control, Press::Up)]);
}

#[test]
fn stopped_drag_releases_the_button() {
    let stop = StopFlag::new();
    let rec = RecordingActuator::default();
    let mut act = StopAfter { inner: rec.clone(), stop: stop.clone(), after: 1, seen: 0 };
    let _ = execute(&mut act, &ScreenAction::Drag { to: OsPoint { x: 5, y: 5 } }, &stop);
    let ev = rec.events();
    assert_eq!(ev.last(), Some(&InputEvent::Button(MouseButton::Left, Press::Up)));
    assert!(!ev.contains(&InputEvent::MoveTo(OsPoint { x: 5, y: 5 })));
}

#[test]
fn long_wait_ends_within_100ms_of_stop() {
    let stop = StopFlag::new();
    let remote = stop.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        remote.raise();
        Instant::now()
    });
    let mut rec = RecordingActuator::default();
    let res = execute(&mut rec, &ScreenAction::Wait { duration: Duration::from_secs(20) }, &stop);
    let ended = Instant::now();
    let raised = t.join().unwrap();
    assert!(matches!(res, Err(AgentError::Stopped)));
    assert!(ended.duration_since(raised) < Duration::from_millis(100), "{:?}", ended.duration_since(raised));
}

#[test]
fn unicode_text_is_typed_one_character_per_event() {
    let mut rec = RecordingActuator::default();
    execute(&mut rec, &ScreenAction::Type { text: "añ😀".into() }, &StopFlag::new()).unwrap();
    let typed: Vec<InputEvent> = ["a", "ñ", "😀"].iter().map(|s| InputEvent::Text((*s).into())).collect();
    assert_eq!(rec.events(), typed);
}

#[test]
fn double_click_moves_first_then_clicks_twice() {
    let mut rec = RecordingActuator::default();
    let p = OsPoint { x: -20, y: 30 };
    execute(&mut rec, &ScreenAction::Click { button: MouseButton::Left, count: 2, at: Some(p) }, &StopFlag::new()).unwrap();
    let click = InputEvent::Button(MouseButton::Left, Press::Click);
    assert_eq!(rec.events(), vec![InputEvent::MoveTo(p), click.clone(), click]);
}
