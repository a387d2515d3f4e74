//! Qwen / xdotool-style key names (`ctrl`, `Return`, `Page_Down`, `F5`, `a`, ...)
//! parsed case-insensitively into our own [`Key`] type. Unknown names are an error.
//! The mapping to a concrete input backend lives with that backend.

use serde::{Serialize, Serializer};

use crate::error::{AgentError, Result};

/// A keyboard key the agent can press.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Key {
    /// Control.
    Control,
    /// Alt / Option.
    Alt,
    /// Shift.
    Shift,
    /// Super / Windows / Command / Meta.
    Meta,
    /// Return / Enter.
    Return,
    /// Tab.
    Tab,
    /// Escape.
    Escape,
    /// Arrow up.
    Up,
    /// Arrow down.
    Down,
    /// Arrow left.
    Left,
    /// Arrow right.
    Right,
    /// Function key F1..=F24.
    F(u8),
    /// Backspace.
    Backspace,
    /// Delete (forward).
    Delete,
    /// Home.
    Home,
    /// End.
    End,
    /// Page up.
    PageUp,
    /// Page down.
    PageDown,
    /// Space bar.
    Space,
    /// Insert.
    Insert,
    /// Caps lock.
    CapsLock,
    /// Print screen.
    PrintScreen,
    /// A key that types this character.
    Char(char),
}

/// Named keys; the lookup key is lower case with `_`, `-` and spaces removed.
const NAMES: &[(&str, Key)] = &[
    ("ctrl", Key::Control), ("control", Key::Control), ("lctrl", Key::Control), ("rctrl", Key::Control),
    ("controll", Key::Control), ("controlr", Key::Control),
    ("alt", Key::Alt), ("option", Key::Alt), ("opt", Key::Alt), ("altl", Key::Alt), ("altr", Key::Alt),
    ("shift", Key::Shift), ("shiftl", Key::Shift), ("shiftr", Key::Shift),
    ("cmd", Key::Meta), ("command", Key::Meta), ("super", Key::Meta), ("superl", Key::Meta),
    ("meta", Key::Meta), ("win", Key::Meta), ("windows", Key::Meta),
    ("return", Key::Return), ("enter", Key::Return), ("kpenter", Key::Return),
    ("tab", Key::Tab), ("escape", Key::Escape), ("esc", Key::Escape),
    ("up", Key::Up), ("arrowup", Key::Up), ("uparrow", Key::Up),
    ("down", Key::Down), ("arrowdown", Key::Down), ("downarrow", Key::Down),
    ("left", Key::Left), ("arrowleft", Key::Left), ("leftarrow", Key::Left),
    ("right", Key::Right), ("arrowright", Key::Right), ("rightarrow", Key::Right),
    ("backspace", Key::Backspace), ("delete", Key::Delete), ("del", Key::Delete),
    ("home", Key::Home), ("end", Key::End),
    ("pageup", Key::PageUp), ("pgup", Key::PageUp), ("prior", Key::PageUp),
    ("pagedown", Key::PageDown), ("pgdn", Key::PageDown), ("next", Key::PageDown),
    ("space", Key::Space), ("insert", Key::Insert), ("ins", Key::Insert),
    ("capslock", Key::CapsLock), ("print", Key::PrintScreen), ("printscreen", Key::PrintScreen),
    ("minus", Key::Char('-')), ("plus", Key::Char('+')), ("equal", Key::Char('=')),
    ("comma", Key::Char(',')), ("period", Key::Char('.')), ("slash", Key::Char('/')),
    ("backslash", Key::Char('\\')), ("semicolon", Key::Char(';')), ("apostrophe", Key::Char('\'')),
];

impl Key {
    /// Parses one key name, case-insensitively. A single character is that character's key.
    pub fn from_name(name: &str) -> Result<Key> {
        let trimmed = name.trim();
        let mut chars = trimmed.chars();
        if let (Some(c), None) = (chars.next(), chars.next()) {
            return Ok(Key::Char(c));
        }
        let norm: String = trimmed
            .chars()
            .filter(|c| !matches!(c, '_' | '-' | ' '))
            .flat_map(char::to_lowercase)
            .collect();
        if let Some((_, key)) = NAMES.iter().find(|(n, _)| *n == norm) {
            return Ok(*key);
        }
        if let Some(n) = norm.strip_prefix('f').and_then(|d| d.parse::<u8>().ok()) {
            if (1..=24).contains(&n) {
                return Ok(Key::F(n));
            }
        }
        Err(AgentError::UnknownKey(name.chars().take(64).collect()))
    }

    /// A canonical name (used in the audit log).
    pub fn name(&self) -> String {
        match self {
            Key::F(n) => format!("F{n}"),
            Key::Char(c) => c.to_string(),
            other => NAMES
                .iter()
                .find(|(_, k)| k == other)
                .map(|(n, _)| (*n).to_string())
                .unwrap_or_default(),
        }
    }
}

impl Serialize for Key {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

/// Parses the `keys` list of a `key` action. An entry like `"ctrl+c"` is split at `+`.
pub fn parse_key_combo<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Vec<Key>> {
    let mut keys = Vec::new();
    for name in names {
        let parts: Vec<&str> = if name.trim().len() > 1 && name.contains('+') {
            name.split('+').filter(|p| !p.trim().is_empty()).collect()
        } else {
            vec![name]
        };
        for part in parts {
            keys.push(Key::from_name(part)?);
        }
    }
    if keys.is_empty() {
        return Err(AgentError::Malformed("key action without keys".into()));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qwen_key_names_map_case_insensitively() {
        let cases = [
            ("ctrl", Key::Control), ("CTRL", Key::Control), ("Alt", Key::Alt), ("shift", Key::Shift),
            ("cmd", Key::Meta), ("super", Key::Meta), ("Meta", Key::Meta), ("win", Key::Meta),
            ("Return", Key::Return), ("enter", Key::Return), ("Tab", Key::Tab), ("Escape", Key::Escape),
            ("esc", Key::Escape), ("Up", Key::Up), ("Down", Key::Down), ("Left", Key::Left),
            ("Right", Key::Right), ("F1", Key::F(1)), ("f12", Key::F(12)), ("BackSpace", Key::Backspace),
            ("Delete", Key::Delete), ("Home", Key::Home), ("End", Key::End), ("Page_Up", Key::PageUp),
            ("Page_Down", Key::PageDown), ("space", Key::Space), ("a", Key::Char('a')), ("é", Key::Char('é')),
        ];
        for (name, key) in cases {
            assert_eq!(Key::from_name(name).unwrap(), key, "{name}");
        }
    }

    #[test]
    fn unknown_key_names_are_a_clear_error() {
        for bad in ["hyperdrive", "F0", "F99", "", "ctrlx"] {
            assert!(matches!(Key::from_name(bad), Err(AgentError::UnknownKey(_))), "{bad}");
        }
    }

    #[test]
    fn plus_separated_combo_is_split_but_lone_plus_is_a_key() {
        assert_eq!(parse_key_combo(["ctrl+c"]).unwrap(), vec![Key::Control, Key::Char('c')]);
        assert_eq!(parse_key_combo(["+"]).unwrap(), vec![Key::Char('+')]);
    }
}
