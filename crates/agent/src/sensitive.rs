//! Actions that always ask: even in the auto mode ([`crate::policy::Mode::Auto`]) these go
//! to the user's [`crate::policy::Confirmer`] first, because one key press can lose work,
//! end the session or delete something, and the model cannot see what it would take down.
//! A rejection ends the task ([`crate::policy::Verdict::RejectedByUser`]); an approved one
//! counts as a step of the auto mode, and the step and rate limits apply as to any action.
//!
//! **Key chords.** A `key` action matches a rule when it presses every key of the rule, in
//! any order and with any further keys (so `ctrl+shift+w` matches `ctrl+w`, and
//! `ctrl+alt+q` matches `ctrl+q`). Keys are compared as [`Key`]s: names are already
//! normalised by [`Key::from_name`] (`cmd` = `super` = `win` = `meta`, `del` = `delete`),
//! letters case-insensitively (`ctrl+W` is `ctrl+w`). The rules (first match names the reason):
//!
//! | chord | why |
//! |---|---|
//! | `ctrl+alt+delete` | session menu / reboot (Windows, some Linux desktops) |
//! | `ctrl+alt+backspace` | kills the X server and every app in it |
//! | `super+l`, `ctrl+alt+l`, `super+ctrl+q` | locks the screen |
//! | `super+q` (also `super+shift+q`: macOS log out, i3/sway exit) | quits the app / ends the session |
//! | `super+w` | closes the window (macOS) |
//! | `alt+F4` | closes the window or app |
//! | `ctrl+w` (also `ctrl+shift+w`) | closes the tab or window |
//! | `ctrl+q` | quits the app |
//! | `ctrl+d` | deletes the selection in some file managers (Windows Explorer) and ends a terminal's shell |
//! | `delete` (with any modifiers, e.g. `shift+delete`) | deletes the selected files or items (shift: permanently) |
//! | `super+backspace` (macOS `cmd+backspace`) | moves the selected files to the trash |
//!
//! Not on the list: plain `backspace` (text editing), `Return` (the usual way to confirm a
//! visible dialog; a chord with `Return` is not special either).
//!
//! **Typed text** containing a line break (`\n` or `\r`) always asks: typing it presses
//! Enter, which can send a message, submit a form or run a shell command hidden inside a
//! longer text.

use crate::keys::Key;
use crate::keys::Key::{Alt, Backspace, Control, Delete, Meta};
use crate::screen_action::ScreenAction;

/// One rule: the keys a chord must press (all of them), and why it asks.
struct Rule {
    keys: &'static [Key],
    reason: &'static str,
}

const fn rule(keys: &'static [Key], reason: &'static str) -> Rule {
    Rule { keys, reason }
}

/// The chords that always ask, most specific first.
const RULES: &[Rule] = &[
    rule(&[Control, Alt, Delete], "ctrl+alt+delete opens the session menu or restarts the computer"),
    rule(&[Control, Alt, Backspace], "ctrl+alt+backspace kills the display server and every open app"),
    rule(&[Meta, Control, Key::Char('q')], "cmd+ctrl+q locks the screen"),
    rule(&[Control, Alt, Key::Char('l')], "ctrl+alt+l locks the screen"),
    rule(&[Meta, Key::Char('l')], "super+l locks the screen"),
    rule(&[Meta, Key::Char('q')], "super/cmd+q quits the app or ends the session"),
    rule(&[Meta, Key::Char('w')], "super/cmd+w closes the window"),
    rule(&[Alt, Key::F(4)], "alt+F4 closes the window or app"),
    rule(&[Control, Key::Char('w')], "ctrl+w closes the tab or window"),
    rule(&[Control, Key::Char('q')], "ctrl+q quits the app"),
    rule(&[Control, Key::Char('d')], "ctrl+d deletes the selection in some apps and ends a terminal's shell"),
    rule(&[Delete], "delete removes the selected files or items (shift+delete permanently)"),
    rule(&[Meta, Backspace], "cmd+backspace moves the selected files to the trash"),
];

/// Why typed text with a line break asks.
pub const NEWLINE_REASON: &str = "the text contains a line break, which presses Enter (sends, submits or runs it)";

/// Letters compare case-insensitively.
fn normalise(key: Key) -> Key {
    match key {
        Key::Char(c) => Key::Char(c.to_lowercase().next().unwrap_or(c)),
        other => other,
    }
}

/// Why `keys` (pressed together) always ask, if they do.
pub fn chord_asks(keys: &[Key]) -> Option<&'static str> {
    let pressed: Vec<Key> = keys.iter().copied().map(normalise).collect();
    RULES.iter().find(|r| r.keys.iter().all(|k| pressed.contains(k))).map(|r| r.reason)
}

/// Why `action` needs the user's confirmation even in the auto mode, or `None` when the
/// auto mode may run it on its own. The reason is a short sentence for the user.
pub fn always_asks(action: &ScreenAction) -> Option<&'static str> {
    match action {
        ScreenAction::Key { keys } => chord_asks(keys),
        ScreenAction::Type { text } if text.contains(['\n', '\r']) => Some(NEWLINE_REASON),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::parse_key_combo;

    fn keys(combo: &str) -> ScreenAction {
        ScreenAction::Key { keys: parse_key_combo(combo.split(' ')).unwrap() }
    }

    #[test]
    fn closing_locking_session_and_delete_chords_ask_in_any_order_and_case() {
        let asking = [
            "alt+F4", "F4 alt", "ALT+f4", "ctrl+w", "ctrl+W", "w ctrl", "ctrl+shift+w", "Shift+Control+W", "ctrl+q",
            "ctrl+shift+q", "cmd+q", "super+q", "win+q", "super+shift+q", "cmd+w", "meta+W", "super+l", "win+L",
            "ctrl+alt+l", "alt+ctrl+L", "cmd+ctrl+q", "ctrl+alt+delete", "ctrl+alt+del", "del+alt+ctrl",
            "ctrl+alt+backspace", "Delete", "shift+delete", "shift+Del", "cmd+backspace", "ctrl+d", "ctrl+D",
        ];
        for combo in asking {
            assert!(always_asks(&keys(combo)).is_some(), "{combo} should ask");
        }
        assert_eq!(always_asks(&keys("shift+alt+F4")), Some("alt+F4 closes the window or app"));
        assert_eq!(always_asks(&keys("super+ctrl+q")), Some("cmd+ctrl+q locks the screen"));
        assert_eq!(always_asks(&keys("alt+ctrl+del")), Some("ctrl+alt+delete opens the session menu or restarts the computer"));
    }

    #[test]
    fn everyday_keys_do_not_ask() {
        for combo in [
            "ctrl+c", "ctrl+v", "ctrl+s", "ctrl+t", "ctrl+a", "alt+tab", "Return", "ctrl+Return", "BackSpace",
            "ctrl+BackSpace", "alt+F2", "F4", "w", "q", "l", "d", "super", "ctrl+alt+t", "shift+w", "alt+q",
            "ctrl+e", "Tab", "Escape",
        ] {
            assert_eq!(always_asks(&keys(combo)), None, "{combo} should not ask");
        }
    }

    #[test]
    fn typed_line_breaks_ask_and_plain_text_does_not() {
        let ty = |t: &str| ScreenAction::Type { text: t.into() };
        assert_eq!(always_asks(&ty("rm -rf ~\n")), Some(NEWLINE_REASON));
        assert_eq!(always_asks(&ty("line one\r")), Some(NEWLINE_REASON));
        assert_eq!(always_asks(&ty("a\r\nb")), Some(NEWLINE_REASON));
        assert_eq!(always_asks(&ty("hello world\t!")), None);
        assert_eq!(always_asks(&ty("")), None);
    }

    #[test]
    fn pointer_actions_never_ask_here() {
        use crate::coords::OsPoint;
        use crate::model_action::MouseButton;
        let click = ScreenAction::Click { button: MouseButton::Left, count: 2, at: Some(OsPoint { x: 1, y: 1 }) };
        assert_eq!(always_asks(&click), None);
        assert_eq!(always_asks(&ScreenAction::Wait { duration: std::time::Duration::ZERO }), None);
    }
}
