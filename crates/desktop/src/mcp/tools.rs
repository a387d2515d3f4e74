//! The MCP tools ScreenPilot offers: their names, descriptions and input schemas, and the
//! typed stage every call passes before anything runs ([`ToolCall::parse`]): a client's
//! arguments are checked against the schema by hand (types, ranges, no unknown fields), so a
//! bad call is one `invalid_params` protocol error and never reaches the screen or the model.

use std::collections::BTreeSet;
use std::str::FromStr;

use serde_json::{json, Map, Value};

/// Most characters of a question, a description or a task.
pub const MAX_TEXT_CHARS: usize = 4000;
/// Most characters `type` sends.
pub const MAX_TYPE_CHARS: usize = 2000;
/// Longest `wait_for_change`.
pub const MAX_WAIT_MS: u64 = 120_000;
/// Most actions `do_task` may take.
pub const MAX_TASK_STEPS: u32 = 30;

/// Every tool, in the order `tools/list` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ToolName {
    ListMonitors,
    ListWindows,
    AskScreen,
    DescribeScreen,
    Find,
    Screenshot,
    WaitForChange,
    Click,
    Type,
    Key,
    Scroll,
    DoTask,
}

impl ToolName {
    /// All tools.
    pub const ALL: [ToolName; 12] = [
        ToolName::ListMonitors,
        ToolName::ListWindows,
        ToolName::AskScreen,
        ToolName::DescribeScreen,
        ToolName::Find,
        ToolName::Screenshot,
        ToolName::WaitForChange,
        ToolName::Click,
        ToolName::Type,
        ToolName::Key,
        ToolName::Scroll,
        ToolName::DoTask,
    ];

    /// The name clients call it by.
    pub fn as_str(self) -> &'static str {
        match self {
            ToolName::ListMonitors => "list_monitors",
            ToolName::ListWindows => "list_windows",
            ToolName::AskScreen => "ask_screen",
            ToolName::DescribeScreen => "describe_screen",
            ToolName::Find => "find",
            ToolName::Screenshot => "screenshot",
            ToolName::WaitForChange => "wait_for_change",
            ToolName::Click => "click",
            ToolName::Type => "type",
            ToolName::Key => "key",
            ToolName::Scroll => "scroll",
            ToolName::DoTask => "do_task",
        }
    }

    /// Whether it sends input to the screen (off unless the user allowed actions, and
    /// confirmed by the user each time).
    pub fn acts(self) -> bool {
        matches!(self, ToolName::Click | ToolName::Type | ToolName::Key | ToolName::Scroll | ToolName::DoTask)
    }

    /// What a host's model reads about it.
    pub fn description(self) -> &'static str {
        match self {
            ToolName::ListMonitors => "List the user's monitors: index, name, position and size in screen coordinates, scale factor.",
            ToolName::ListWindows => "List the visible windows with a title: id (for the `window` argument of other tools), title, application.",
            ToolName::AskScreen => "Ask a question about the user's screen. A local vision model (Qwen3-VL on this computer) looks at a fresh capture and answers in text; the screenshot itself is not returned. Defaults to the primary monitor; pass `monitor`, `window` or `region` to look elsewhere.",
            ToolName::DescribeScreen => "A structured summary of what is on the screen (application, windows, dialogs, notable text), written by the local vision model from a fresh capture.",
            ToolName::Find => "Find GUI elements matching a description. Returns each match's label, its bounding box and a click point, in screen coordinates (the ones `click` takes).",
            ToolName::Screenshot => "The screen capture itself as a PNG image. Refused unless the user allowed sharing screenshots with MCP clients.",
            ToolName::WaitForChange => "Wait until the screen (or a monitor, window or region) changes, or the timeout passes. Returns whether it changed.",
            ToolName::Click => "Click at screen coordinates (as `find` returns them). Needs the user's permission: actions must be allowed for MCP clients, and the user confirms each one.",
            ToolName::Type => "Type text into the focused window. Needs the user's permission and confirmation.",
            ToolName::Key => "Press a key or a key combination such as \"enter\" or \"ctrl+s\". Needs the user's permission and confirmation.",
            ToolName::Scroll => "Scroll up, down, left or right by a number of wheel notches, optionally at screen coordinates. Needs the user's permission and confirmation.",
            ToolName::DoTask => "Carry out a GUI task on a monitor with the local model (screenshot, action, repeat), within a step limit. The user confirms the task before it starts; it can be stopped at any time.",
        }
    }

    /// The JSON schema of its arguments.
    pub fn input_schema(self) -> Value {
        let target = || {
            json!({
                "monitor": {"type": "integer", "minimum": 0, "description": "Monitor index from list_monitors (default: the primary monitor)."},
                "window": {"type": "integer", "minimum": 0, "description": "Window id from list_windows."},
                "region": {
                    "type": "object",
                    "description": "A rectangle in screen coordinates, inside one monitor.",
                    "properties": {
                        "x": {"type": "integer"}, "y": {"type": "integer"},
                        "width": {"type": "integer", "minimum": 8}, "height": {"type": "integer", "minimum": 8}
                    },
                    "required": ["x", "y", "width", "height"],
                    "additionalProperties": false
                }
            })
        };
        let with_target = |mut extra: Map<String, Value>, required: &[&str]| {
            if let Value::Object(t) = target() {
                extra.extend(t);
            }
            object(extra, required)
        };
        let props = |v: Value| match v {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        match self {
            ToolName::ListMonitors | ToolName::ListWindows => object(Map::new(), &[]),
            ToolName::AskScreen => with_target(
                props(json!({"question": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS}})),
                &["question"],
            ),
            ToolName::DescribeScreen | ToolName::Screenshot => with_target(Map::new(), &[]),
            ToolName::Find => with_target(
                props(json!({"description": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS, "description": "What to find, e.g. \"the Save button\"."}})),
                &["description"],
            ),
            ToolName::WaitForChange => with_target(
                props(json!({
                    "timeout_ms": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_MS},
                    "threshold": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "description": "Share of pixels that must change (default 0.001)."}
                })),
                &["timeout_ms"],
            ),
            ToolName::Click => object(
                props(json!({
                    "x": {"type": "integer"}, "y": {"type": "integer"},
                    "button": {"type": "string", "enum": ["left", "right", "middle"]},
                    "count": {"type": "integer", "minimum": 1, "maximum": 3}
                })),
                &["x", "y"],
            ),
            ToolName::Type => object(props(json!({"text": {"type": "string", "minLength": 1, "maxLength": MAX_TYPE_CHARS}})), &["text"]),
            ToolName::Key => object(
                props(json!({"keys": {"type": "string", "minLength": 1, "maxLength": 100, "description": "A key or keys joined by '+', e.g. \"ctrl+shift+t\"."}})),
                &["keys"],
            ),
            ToolName::Scroll => object(
                props(json!({
                    "direction": {"type": "string", "enum": ["up", "down", "left", "right"]},
                    "amount": {"type": "integer", "minimum": 1, "maximum": 50, "description": "Wheel notches (default 3)."},
                    "x": {"type": "integer"}, "y": {"type": "integer"}
                })),
                &["direction"],
            ),
            ToolName::DoTask => object(
                props(json!({
                    "task": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_CHARS},
                    "monitor": {"type": "integer", "minimum": 0},
                    "max_steps": {"type": "integer", "minimum": 1, "maximum": MAX_TASK_STEPS}
                })),
                &["task"],
            ),
        }
    }
}

fn object(properties: Map<String, Value>, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required, "additionalProperties": false})
}

impl FromStr for ToolName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        ToolName::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| format!("unknown tool {:?}", s.chars().take(64).collect::<String>()))
    }
}

/// Parses a comma-separated tool list (`--tools`, the settings): every name must exist.
pub fn parse_tool_list(s: &str) -> Result<BTreeSet<ToolName>, String> {
    s.split(',').map(str::trim).filter(|t| !t.is_empty()).map(ToolName::from_str).collect()
}

/// What part of the screen a call is about, in screen (OS) coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The primary monitor.
    Primary,
    /// A monitor by its index in `list_monitors`.
    Monitor(usize),
    /// A window by its id in `list_windows`.
    Window(u32),
    /// A rectangle inside one monitor.
    Region { x: i32, y: i32, width: u32, height: u32 },
}

/// A mouse button of `click`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Button {
    Left,
    Right,
    Middle,
}

/// Where `scroll` goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
    Left,
    Right,
}

/// A call whose arguments passed every check.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolCall {
    ListMonitors,
    ListWindows,
    AskScreen { question: String, target: Target },
    DescribeScreen { target: Target },
    Find { description: String, target: Target },
    Screenshot { target: Target },
    WaitForChange { timeout_ms: u64, threshold: f64, target: Target },
    Click { x: i32, y: i32, button: Button, count: u8 },
    Type { text: String },
    Key { keys: String },
    Scroll { direction: Direction, amount: i32, at: Option<(i32, i32)> },
    DoTask { task: String, monitor: Option<usize>, max_steps: u32 },
}

/// Reads one call's arguments (None: no arguments) against the tool's schema.
struct Args<'a> {
    map: &'a Map<String, Value>,
}

impl Args<'_> {
    fn check_keys(&self, allowed: &[&str]) -> Result<(), String> {
        match self.map.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(format!("unknown argument {:?}", k.chars().take(64).collect::<String>())),
            None => Ok(()),
        }
    }

    fn text(&self, key: &str, max: usize) -> Result<Option<String>, String> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => {
                let n = s.chars().count();
                if s.trim().is_empty() || n > max {
                    return Err(format!("{key} must have 1..={max} characters"));
                }
                Ok(Some(s.clone()))
            }
            Some(_) => Err(format!("{key} must be a string")),
        }
    }

    fn req_text(&self, key: &str, max: usize) -> Result<String, String> {
        self.text(key, max)?.ok_or_else(|| format!("missing argument {key}"))
    }

    fn int(&self, key: &str, min: i64, max: i64) -> Result<Option<i64>, String> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => {
                let n = v.as_i64().ok_or_else(|| format!("{key} must be an integer"))?;
                if !(min..=max).contains(&n) {
                    return Err(format!("{key} must be in {min}..={max}"));
                }
                Ok(Some(n))
            }
        }
    }

    fn req_int(&self, key: &str, min: i64, max: i64) -> Result<i64, String> {
        self.int(key, min, max)?.ok_or_else(|| format!("missing argument {key}"))
    }

    fn choice<T: Copy>(&self, key: &str, options: &[(&str, T)]) -> Result<Option<T>, String> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => options
                .iter()
                .find(|(name, _)| *name == s)
                .map(|(_, v)| Some(*v))
                .ok_or_else(|| format!("{key} must be one of {}", options.iter().map(|o| o.0).collect::<Vec<_>>().join(", "))),
            Some(_) => Err(format!("{key} must be a string")),
        }
    }

    fn target(&self) -> Result<Target, String> {
        const COORD: i64 = 1 << 20;
        let monitor = self.int("monitor", 0, 64)?;
        let window = self.int("window", 0, i64::from(u32::MAX))?;
        let region = match self.map.get("region") {
            None | Some(Value::Null) => None,
            Some(Value::Object(r)) => {
                let a = Args { map: r };
                a.check_keys(&["x", "y", "width", "height"]).map_err(|e| format!("region: {e}"))?;
                Some(Target::Region {
                    x: a.req_int("x", -COORD, COORD).map_err(|e| format!("region: {e}"))? as i32,
                    y: a.req_int("y", -COORD, COORD).map_err(|e| format!("region: {e}"))? as i32,
                    width: a.req_int("width", 8, COORD).map_err(|e| format!("region: {e}"))? as u32,
                    height: a.req_int("height", 8, COORD).map_err(|e| format!("region: {e}"))? as u32,
                })
            }
            Some(_) => return Err("region must be an object {x, y, width, height}".into()),
        };
        match (monitor, window, region) {
            (None, None, None) => Ok(Target::Primary),
            (Some(m), None, None) => Ok(Target::Monitor(m as usize)),
            (None, Some(w), None) => Ok(Target::Window(w as u32)),
            (None, None, Some(r)) => Ok(r),
            _ => Err("give at most one of monitor, window and region".into()),
        }
    }
}

const TARGET_KEYS: [&str; 3] = ["monitor", "window", "region"];

fn keys_with_target<'a>(own: &[&'a str]) -> Vec<&'a str> {
    own.iter().copied().chain(TARGET_KEYS).collect()
}

impl ToolCall {
    /// Checks `arguments` for `tool`; the error says what is wrong, for an `invalid_params` error.
    pub fn parse(tool: ToolName, arguments: Option<&Map<String, Value>>) -> Result<ToolCall, String> {
        let empty = Map::new();
        let a = Args { map: arguments.unwrap_or(&empty) };
        const COORD: i64 = 1 << 20;
        let call = match tool {
            ToolName::ListMonitors => {
                a.check_keys(&[])?;
                ToolCall::ListMonitors
            }
            ToolName::ListWindows => {
                a.check_keys(&[])?;
                ToolCall::ListWindows
            }
            ToolName::AskScreen => {
                a.check_keys(&keys_with_target(&["question"]))?;
                ToolCall::AskScreen { question: a.req_text("question", MAX_TEXT_CHARS)?, target: a.target()? }
            }
            ToolName::DescribeScreen => {
                a.check_keys(&TARGET_KEYS)?;
                ToolCall::DescribeScreen { target: a.target()? }
            }
            ToolName::Find => {
                a.check_keys(&keys_with_target(&["description"]))?;
                ToolCall::Find { description: a.req_text("description", MAX_TEXT_CHARS)?, target: a.target()? }
            }
            ToolName::Screenshot => {
                a.check_keys(&TARGET_KEYS)?;
                ToolCall::Screenshot { target: a.target()? }
            }
            ToolName::WaitForChange => {
                a.check_keys(&keys_with_target(&["timeout_ms", "threshold"]))?;
                let threshold = match a.map.get("threshold") {
                    None | Some(Value::Null) => 0.001,
                    Some(v) => v.as_f64().filter(|t| *t > 0.0 && *t <= 1.0).ok_or("threshold must be a number in (0, 1]")?,
                };
                ToolCall::WaitForChange {
                    timeout_ms: a.req_int("timeout_ms", 0, MAX_WAIT_MS as i64)? as u64,
                    threshold,
                    target: a.target()?,
                }
            }
            ToolName::Click => {
                a.check_keys(&["x", "y", "button", "count"])?;
                let buttons = [("left", Button::Left), ("right", Button::Right), ("middle", Button::Middle)];
                ToolCall::Click {
                    x: a.req_int("x", -COORD, COORD)? as i32,
                    y: a.req_int("y", -COORD, COORD)? as i32,
                    button: a.choice("button", &buttons)?.unwrap_or(Button::Left),
                    count: a.int("count", 1, 3)?.unwrap_or(1) as u8,
                }
            }
            ToolName::Type => {
                a.check_keys(&["text"])?;
                ToolCall::Type { text: a.req_text("text", MAX_TYPE_CHARS)? }
            }
            ToolName::Key => {
                a.check_keys(&["keys"])?;
                ToolCall::Key { keys: a.req_text("keys", 100)? }
            }
            ToolName::Scroll => {
                a.check_keys(&["direction", "amount", "x", "y"])?;
                let dirs = [("up", Direction::Up), ("down", Direction::Down), ("left", Direction::Left), ("right", Direction::Right)];
                let direction = a.choice("direction", &dirs)?.ok_or("missing argument direction")?;
                let at = match (a.int("x", -COORD, COORD)?, a.int("y", -COORD, COORD)?) {
                    (Some(x), Some(y)) => Some((x as i32, y as i32)),
                    (None, None) => None,
                    _ => return Err("give both x and y, or neither".into()),
                };
                ToolCall::Scroll { direction, amount: a.int("amount", 1, 50)?.unwrap_or(3) as i32, at }
            }
            ToolName::DoTask => {
                a.check_keys(&["task", "monitor", "max_steps"])?;
                ToolCall::DoTask {
                    task: a.req_text("task", MAX_TEXT_CHARS)?,
                    monitor: a.int("monitor", 0, 64)?.map(|m| m as usize),
                    max_steps: a.int("max_steps", 1, i64::from(MAX_TASK_STEPS))?.unwrap_or(10) as u32,
                }
            }
        };
        Ok(call)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(tool: ToolName, v: Value) -> Result<ToolCall, String> {
        ToolCall::parse(tool, v.as_object())
    }

    #[test]
    fn every_tool_has_a_unique_name_an_object_schema_and_round_trips() {
        let names: BTreeSet<&str> = ToolName::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(names.len(), ToolName::ALL.len());
        for t in ToolName::ALL {
            assert_eq!(t.as_str().parse::<ToolName>().unwrap(), t);
            let s = t.input_schema();
            assert_eq!(s["type"], "object", "{t:?}");
            assert_eq!(s["additionalProperties"], false, "{t:?}");
            // Every required argument is a declared property.
            for r in s["required"].as_array().unwrap() {
                assert!(s["properties"].get(r.as_str().unwrap()).is_some(), "{t:?} {r}");
            }
        }
        assert!("rm_rf".parse::<ToolName>().is_err());
    }

    #[test]
    fn arguments_are_checked_before_anything_runs() {
        let ok = parse(ToolName::AskScreen, json!({"question": "what is open?", "window": 7})).unwrap();
        assert_eq!(ok, ToolCall::AskScreen { question: "what is open?".into(), target: Target::Window(7) });
        assert!(parse(ToolName::AskScreen, json!({"question": 5})).unwrap_err().contains("string"));
        assert!(parse(ToolName::AskScreen, json!({})).unwrap_err().contains("missing"));
        assert!(parse(ToolName::AskScreen, json!({"question": "  "})).is_err());
        assert!(parse(ToolName::AskScreen, json!({"question": "q", "colour": 1})).unwrap_err().contains("unknown argument"));
        assert!(parse(ToolName::AskScreen, json!({"question": "q", "monitor": 0, "window": 1})).unwrap_err().contains("at most one"));
        assert!(parse(ToolName::Find, json!({"description": "x".repeat(MAX_TEXT_CHARS + 1)})).is_err());
        let r = parse(ToolName::Screenshot, json!({"region": {"x": -10, "y": 5, "width": 100, "height": 50}})).unwrap();
        assert_eq!(r, ToolCall::Screenshot { target: Target::Region { x: -10, y: 5, width: 100, height: 50 } });
        assert!(parse(ToolName::Screenshot, json!({"region": {"x": 0, "y": 0, "width": 4, "height": 50}})).is_err());
        assert!(parse(ToolName::Screenshot, json!({"region": {"x": 0, "y": 0, "width": 1e12, "height": 50}})).is_err());
        assert!(parse(ToolName::Screenshot, json!({"region": [0, 0, 10, 10]})).is_err());
        assert!(parse(ToolName::ListMonitors, json!({"x": 1})).is_err());
        assert_eq!(parse(ToolName::ListWindows, Value::Null).unwrap(), ToolCall::ListWindows);
    }

    #[test]
    fn actions_get_defaults_and_ranges() {
        assert_eq!(
            parse(ToolName::Click, json!({"x": -100, "y": 20})).unwrap(),
            ToolCall::Click { x: -100, y: 20, button: Button::Left, count: 1 }
        );
        assert!(parse(ToolName::Click, json!({"x": 1, "y": 2, "count": 4})).is_err());
        assert!(parse(ToolName::Click, json!({"x": 1.5, "y": 2})).is_err());
        assert!(parse(ToolName::Click, json!({"x": 1, "y": 2, "button": "fourth"})).is_err());
        assert_eq!(
            parse(ToolName::Scroll, json!({"direction": "down"})).unwrap(),
            ToolCall::Scroll { direction: Direction::Down, amount: 3, at: None }
        );
        assert!(parse(ToolName::Scroll, json!({"direction": "down", "x": 3})).is_err());
        assert!(parse(ToolName::WaitForChange, json!({"timeout_ms": MAX_WAIT_MS + 1})).is_err());
        assert!(parse(ToolName::WaitForChange, json!({"timeout_ms": 10, "threshold": 0})).is_err());
        assert_eq!(
            parse(ToolName::DoTask, json!({"task": "open the menu"})).unwrap(),
            ToolCall::DoTask { task: "open the menu".into(), monitor: None, max_steps: 10 }
        );
        assert!(parse(ToolName::Type, json!({"text": "x".repeat(MAX_TYPE_CHARS + 1)})).is_err());
    }

    #[test]
    fn tool_lists_name_real_tools_only() {
        let set = parse_tool_list("ask_screen, find,,list_monitors").unwrap();
        assert_eq!(set.into_iter().collect::<Vec<_>>(), vec![ToolName::ListMonitors, ToolName::AskScreen, ToolName::Find]);
        assert!(parse_tool_list("ask_screen,format_disk").unwrap_err().contains("format_disk"));
    }
}
