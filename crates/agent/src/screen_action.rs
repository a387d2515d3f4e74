//! The bounds-checked stage between parsing and execution: a [`ModelAction`] (relative
//! coordinates) becomes a [`ScreenAction`] (OS input coordinates on the screenshot's
//! monitor) or a [`Finish`]. Anything off the target monitor is refused here, before
//! any input event exists. Also owns the scroll convention ([`PIXELS_PER_WHEEL_STEP`]).

use std::time::Duration;

use serde::Serialize;

use crate::coords::{CaptureGeometry, OsPoint, Point, Rel1000};
use crate::error::{AgentError, Result};
use crate::keys::Key;
use crate::model_action::{ModelAction, MouseButton, TerminateStatus};

/// Scroll distance of one mouse-wheel notch, in the pixels Qwen3-VL speaks of.
/// `pixels` are divided by this and rounded, with at least one notch for any non-zero
/// amount. Sign: Qwen's positive `pixels` scroll up (content moves down) for `scroll`
/// and right for `hscroll`; [`ScreenAction::Scroll`] keeps that sign.
pub const PIXELS_PER_WHEEL_STEP: i64 = 100;
/// Most wheel notches one action may send.
pub const MAX_WHEEL_STEPS: i32 = 50;
/// Longest `wait` we honour; longer waits are shortened to this.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// Scroll direction axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScrollAxis {
    /// Up/down.
    Vertical,
    /// Left/right.
    Horizontal,
}

/// An action ready to execute: every coordinate is on the target monitor, in OS units.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ScreenAction {
    /// Press the keys in order, release them in reverse order.
    Key { keys: Vec<Key> },
    /// Type Unicode text.
    Type { text: String },
    /// Move the pointer.
    MoveTo { to: OsPoint },
    /// Click `count` times, after moving to `at` if given.
    Click { button: MouseButton, count: u8, at: Option<OsPoint> },
    /// Left-button drag from the current pointer position to `to`.
    Drag { to: OsPoint },
    /// Wheel notches; positive is up (vertical) or right (horizontal).
    Scroll { axis: ScrollAxis, notches: i32, at: Option<OsPoint> },
    /// Do nothing for a while.
    Wait { duration: Duration },
}

/// How the model ended the task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Finish {
    /// `terminate` with this status.
    Terminate(TerminateStatus),
    /// `answer` with this text.
    Answer(String),
}

/// Result of resolving a model action.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Resolved {
    /// Something to execute.
    Act(ScreenAction),
    /// The task ends.
    Finish(Finish),
}

impl ScreenAction {
    /// All screen coordinates the action touches.
    pub fn points(&self) -> Vec<OsPoint> {
        match self {
            ScreenAction::MoveTo { to } | ScreenAction::Drag { to } => vec![*to],
            ScreenAction::Click { at, .. } | ScreenAction::Scroll { at, .. } => at.iter().copied().collect(),
            _ => Vec::new(),
        }
    }

    /// Whether executing it sends input to the OS (everything but `Wait`).
    pub fn has_side_effects(&self) -> bool {
        !matches!(self, ScreenAction::Wait { .. })
    }
}

/// Wheel notches for a Qwen `pixels` amount (sign preserved, see [`PIXELS_PER_WHEEL_STEP`]).
pub fn wheel_notches(pixels: i64) -> i32 {
    if pixels == 0 {
        return 0;
    }
    let steps = ((pixels.abs() + PIXELS_PER_WHEEL_STEP / 2) / PIXELS_PER_WHEEL_STEP).max(1);
    let steps = i32::try_from(steps).unwrap_or(MAX_WHEEL_STEPS).min(MAX_WHEEL_STEPS);
    if pixels < 0 {
        -steps
    } else {
        steps
    }
}

fn map(geometry: &CaptureGeometry, p: Point<Rel1000>) -> Result<OsPoint> {
    let os = geometry.rel_to_os(p)?;
    if !geometry.monitor.contains_os(os) {
        let phys = geometry.monitor.os_to_physical(os);
        return Err(AgentError::OutsideMonitor {
            x: phys.x,
            y: phys.y,
            width: geometry.monitor.width,
            height: geometry.monitor.height,
        });
    }
    Ok(os)
}

fn map_opt(geometry: &CaptureGeometry, p: Option<Point<Rel1000>>) -> Result<Option<OsPoint>> {
    p.map(|p| map(geometry, p)).transpose()
}

/// Maps a parsed action onto the monitor the screenshot (`geometry`) came from.
pub fn resolve(action: &ModelAction, geometry: &CaptureGeometry) -> Result<Resolved> {
    let act = match action {
        ModelAction::Key { keys } => ScreenAction::Key { keys: keys.clone() },
        ModelAction::Type { text } => ScreenAction::Type { text: text.clone() },
        ModelAction::MouseMove { coordinate } => ScreenAction::MoveTo { to: map(geometry, *coordinate)? },
        ModelAction::Click { button, count, coordinate } => {
            ScreenAction::Click { button: *button, count: *count, at: map_opt(geometry, *coordinate)? }
        }
        ModelAction::LeftClickDrag { coordinate } => ScreenAction::Drag { to: map(geometry, *coordinate)? },
        ModelAction::Scroll { horizontal, pixels, coordinate } => ScreenAction::Scroll {
            axis: if *horizontal { ScrollAxis::Horizontal } else { ScrollAxis::Vertical },
            notches: wheel_notches(*pixels),
            at: map_opt(geometry, *coordinate)?,
        },
        ModelAction::Wait { seconds } => {
            let d = Duration::try_from_secs_f64(*seconds).unwrap_or(MAX_WAIT).min(MAX_WAIT);
            ScreenAction::Wait { duration: d }
        }
        ModelAction::Terminate { status } => return Ok(Resolved::Finish(Finish::Terminate(*status))),
        ModelAction::Answer { text } => return Ok(Resolved::Finish(Finish::Answer(text.clone()))),
    };
    Ok(Resolved::Act(act))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coords::{InputSpace, MonitorGeometry};

    fn geometry() -> CaptureGeometry {
        let m = MonitorGeometry {
            name: "left".into(),
            origin: OsPoint { x: -1000, y: 0 },
            width: 1000,
            height: 500,
            scale_factor: 1.0,
            input_space: InputSpace::Physical,
        };
        CaptureGeometry::full_monitor(m, 500, 250).unwrap()
    }

    #[test]
    fn click_is_mapped_onto_the_screenshot_monitor() {
        let a = ModelAction::Click { button: MouseButton::Left, count: 2, coordinate: Some(Point::new(500.0, 500.0)) };
        let r = resolve(&a, &geometry()).unwrap();
        assert_eq!(r, Resolved::Act(ScreenAction::Click { button: MouseButton::Left, count: 2, at: Some(OsPoint { x: -500, y: 250 }) }));
    }

    #[test]
    fn out_of_range_coordinate_is_refused_before_execution() {
        let a = ModelAction::MouseMove { coordinate: Point::new(1200.0, 10.0) };
        assert!(resolve(&a, &geometry()).is_err());
    }

    #[test]
    fn scroll_pixels_become_wheel_notches_with_qwen_sign() {
        assert_eq!(wheel_notches(0), 0);
        assert_eq!(wheel_notches(10), 1);
        assert_eq!(wheel_notches(-10), -1);
        assert_eq!(wheel_notches(300), 3);
        assert_eq!(wheel_notches(-349), -3);
        assert_eq!(wheel_notches(1_000_000), MAX_WHEEL_STEPS);
    }

    #[test]
    fn terminate_and_answer_finish_and_long_waits_are_capped() {
        let t = ModelAction::Terminate { status: TerminateStatus::Failure };
        assert_eq!(resolve(&t, &geometry()).unwrap(), Resolved::Finish(Finish::Terminate(TerminateStatus::Failure)));
        let w = ModelAction::Wait { seconds: 1e9 };
        assert_eq!(resolve(&w, &geometry()).unwrap(), Resolved::Act(ScreenAction::Wait { duration: MAX_WAIT }));
    }
}
