//! The real input backend: [`EnigoActuator`] sends [`InputEvent`]s through enigo
//! (X11 via x11rb on Linux) and reads the pointer back. Maps our [`Key`]s to enigo keys
//! and our scroll sign (positive = up/right) to enigo's (positive = down/right).

use enigo::{Axis, Button, Coordinate, Direction, Enigo, Keyboard, Mouse, Settings};

use crate::actuator::{Actuator, InputEvent, NoInput, PointerReader, Press};
use crate::coords::OsPoint;
use crate::error::{AgentError, Result};
use crate::keys::Key;
use crate::model_action::MouseButton;
use crate::screen_action::ScrollAxis;

/// Input through enigo.
pub struct EnigoActuator {
    enigo: Enigo,
}

impl std::fmt::Debug for EnigoActuator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnigoActuator")
    }
}

/// Enigo, or, when no input backend can be opened (no display), [`NoInput`] carrying why: every
/// event then fails with that reason, and a program that may act later still starts.
pub fn input_or_reason() -> Box<dyn Actuator + Send> {
    match EnigoActuator::new() {
        Ok(a) => Box::new(a),
        Err(e) => Box::new(NoInput(e.to_string())),
    }
}

impl EnigoActuator {
    /// Connects to the display (on Linux: `$DISPLAY`).
    pub fn new() -> Result<Self> {
        let enigo = Enigo::new(&Settings::default()).map_err(|e| AgentError::Input(e.to_string()))?;
        Ok(Self { enigo })
    }
}

fn direction(p: Press) -> Direction {
    match p {
        Press::Down => Direction::Press,
        Press::Up => Direction::Release,
        Press::Click => Direction::Click,
    }
}

fn button(b: MouseButton) -> Button {
    match b {
        MouseButton::Left => Button::Left,
        MouseButton::Right => Button::Right,
        MouseButton::Middle => Button::Middle,
    }
}

/// The enigo key for one of our keys.
pub fn enigo_key(key: Key) -> Result<enigo::Key> {
    use enigo::Key as E;
    Ok(match key {
        Key::Control => E::Control,
        Key::Alt => E::Alt,
        Key::Shift => E::Shift,
        Key::Meta => E::Meta,
        Key::Return => E::Return,
        Key::Tab => E::Tab,
        Key::Escape => E::Escape,
        Key::Up => E::UpArrow,
        Key::Down => E::DownArrow,
        Key::Left => E::LeftArrow,
        Key::Right => E::RightArrow,
        Key::F(n) => function_key(n)?,
        Key::Backspace => E::Backspace,
        Key::Delete => E::Delete,
        Key::Home => E::Home,
        Key::End => E::End,
        Key::PageUp => E::PageUp,
        Key::PageDown => E::PageDown,
        Key::Space => E::Space,
        Key::CapsLock => E::CapsLock,
        #[cfg(not(target_os = "macos"))]
        Key::Insert => E::Insert,
        #[cfg(not(target_os = "macos"))]
        Key::PrintScreen => E::PrintScr,
        Key::Char(c) => E::Unicode(c),
        #[allow(unreachable_patterns)]
        other => return Err(AgentError::UnknownKey(other.name())),
    })
}

fn function_key(n: u8) -> Result<enigo::Key> {
    use enigo::Key as E;
    const KEYS: [enigo::Key; 24] = [
        E::F1, E::F2, E::F3, E::F4, E::F5, E::F6, E::F7, E::F8, E::F9, E::F10, E::F11, E::F12,
        E::F13, E::F14, E::F15, E::F16, E::F17, E::F18, E::F19, E::F20, E::F21, E::F22, E::F23, E::F24,
    ];
    usize::from(n)
        .checked_sub(1)
        .and_then(|i| KEYS.get(i).copied())
        .ok_or_else(|| AgentError::UnknownKey(format!("F{n}")))
}

impl Actuator for EnigoActuator {
    fn perform(&mut self, event: &InputEvent) -> Result<()> {
        let r = match event {
            InputEvent::MoveTo(p) => self.enigo.move_mouse(p.x, p.y, Coordinate::Abs),
            InputEvent::Button(b, p) => self.enigo.button(button(*b), direction(*p)),
            InputEvent::Key(k, p) => self.enigo.key(enigo_key(*k)?, direction(*p)),
            InputEvent::Text(t) => self.enigo.text(t),
            // enigo: positive vertical = down; ours: positive = up. Horizontal agrees (right).
            InputEvent::Scroll(ScrollAxis::Vertical, n) => self.enigo.scroll(n.saturating_neg(), Axis::Vertical),
            InputEvent::Scroll(ScrollAxis::Horizontal, n) => self.enigo.scroll(*n, Axis::Horizontal),
        };
        r.map_err(|e| AgentError::Input(e.to_string()))
    }
}

impl PointerReader for EnigoActuator {
    fn pointer_position(&mut self) -> Result<OsPoint> {
        let (x, y) = self.enigo.location().map_err(|e| AgentError::Pointer(e.to_string()))?;
        Ok(OsPoint { x, y })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_key_has_an_enigo_key() {
        let names = ["ctrl", "alt", "shift", "super", "Return", "Tab", "esc", "Up", "Down", "Left", "Right",
            "F1", "F12", "BackSpace", "Delete", "Home", "End", "Page_Up", "Page_Down", "space", "a", "ß"];
        for n in names {
            let key = Key::from_name(n).unwrap();
            assert!(enigo_key(key).is_ok(), "{n}");
        }
        assert_eq!(enigo_key(Key::F(5)).unwrap(), enigo::Key::F5);
        assert_eq!(enigo_key(Key::Char('x')).unwrap(), enigo::Key::Unicode('x'));
        assert!(enigo_key(Key::F(30)).is_err());
    }
}
