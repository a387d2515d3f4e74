//! Turns a bounds-checked [`ScreenAction`] into primitive [`InputEvent`]s and performs
//! them, checking the [`StopFlag`] before every event and during every pause. Keys and
//! buttons held down are released again if the run is stopped or fails midway.

use std::time::Duration;

use crate::actuator::{Actuator, InputEvent, Press, StopFlag};
use crate::error::Result;
use crate::model_action::MouseButton;
use crate::screen_action::ScreenAction;

/// Pause between the events of one action (lets the OS and apps catch up).
pub const EVENT_GAP: Duration = Duration::from_millis(30);

/// One step of an action's plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Send this event.
    Event(InputEvent),
    /// Pause (sliced, stoppable).
    Pause(Duration),
}

/// The primitive steps of an action, without performing them.
pub fn plan(action: &ScreenAction) -> Vec<Step> {
    use Step::{Event, Pause};
    let mut steps = Vec::new();
    match action {
        ScreenAction::Key { keys } => {
            steps.extend(keys.iter().map(|k| Event(InputEvent::Key(*k, Press::Down))));
            steps.extend(keys.iter().rev().map(|k| Event(InputEvent::Key(*k, Press::Up))));
        }
        // One event per character, so a stop request interrupts long texts.
        ScreenAction::Type { text } => steps.extend(text.chars().map(|c| Event(InputEvent::Text(c.to_string())))),
        ScreenAction::MoveTo { to } => steps.push(Event(InputEvent::MoveTo(*to))),
        ScreenAction::Click { button, count, at } => {
            if let Some(p) = at {
                steps.extend([Event(InputEvent::MoveTo(*p)), Pause(EVENT_GAP)]);
            }
            for i in 0..*count {
                if i > 0 {
                    steps.push(Pause(Duration::from_millis(40)));
                }
                steps.push(Event(InputEvent::Button(*button, Press::Click)));
            }
        }
        ScreenAction::Drag { to } => steps.extend([
            Event(InputEvent::Button(MouseButton::Left, Press::Down)),
            Pause(EVENT_GAP),
            Event(InputEvent::MoveTo(*to)),
            Pause(EVENT_GAP),
            Event(InputEvent::Button(MouseButton::Left, Press::Up)),
        ]),
        ScreenAction::Scroll { axis, notches, at } => {
            if let Some(p) = at {
                steps.extend([Event(InputEvent::MoveTo(*p)), Pause(EVENT_GAP)]);
            }
            steps.push(Event(InputEvent::Scroll(*axis, *notches)));
        }
        ScreenAction::Wait { duration } => steps.push(Pause(*duration)),
    }
    steps
}

/// Performs `action`, checking `stop` before every event. On stop or error, anything
/// still held down is released (best effort) and the error is returned.
pub fn execute(actuator: &mut dyn Actuator, action: &ScreenAction, stop: &StopFlag) -> Result<()> {
    let mut held: Vec<InputEvent> = Vec::new();
    let result = run_steps(actuator, &plan(action), stop, &mut held);
    if result.is_err() {
        for release in held.iter().rev() {
            let _ = actuator.perform(release);
        }
    }
    result
}

fn run_steps(actuator: &mut dyn Actuator, steps: &[Step], stop: &StopFlag, held: &mut Vec<InputEvent>) -> Result<()> {
    for step in steps {
        stop.check()?;
        match step {
            Step::Pause(d) => stop.sleep(*d)?,
            Step::Event(e) => {
                actuator.perform(e)?;
                track_held(e, held);
            }
        }
    }
    Ok(())
}

/// Keeps `held` = the releases owed for keys/buttons currently pressed down.
fn track_held(e: &InputEvent, held: &mut Vec<InputEvent>) {
    let (release, press) = match e {
        InputEvent::Key(k, p) => (InputEvent::Key(*k, Press::Up), *p),
        InputEvent::Button(b, p) => (InputEvent::Button(*b, Press::Up), *p),
        _ => return,
    };
    match press {
        Press::Down => held.push(release),
        Press::Up => {
            if let Some(i) = held.iter().rposition(|h| *h == release) {
                held.remove(i);
            }
        }
        Press::Click => {}
    }
}

#[cfg(test)]
#[path = "executor_tests.rs"]
mod tests;
