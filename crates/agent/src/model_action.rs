//! The typed form of Qwen3-VL's `computer_use` tool calls ([`ModelAction`]) and the
//! parser that finds `<tool_call>` blocks in model output. Parsing has no side effects;
//! coordinates are still relative (0..=1000) here. See `screen_action` for the next stage.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::coords::{Point, Rel1000};
use crate::error::{AgentError, Result};
use crate::json_extract::{check_len, extract_json_values, first_json_value};
use crate::keys::{parse_key_combo, Key};
use crate::reasoning::answer_only;

/// The name of the only tool we accept.
pub const TOOL_NAME: &str = "computer_use";

/// How the model ended the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TerminateStatus {
    /// The task was done.
    Success,
    /// The task could not be done.
    Failure,
}

/// Which mouse button a click uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MouseButton {
    /// Left button.
    Left,
    /// Right button.
    Right,
    /// Middle button.
    Middle,
}

/// One `computer_use` action as the model wrote it (relative coordinates).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ModelAction {
    /// Press the keys together (in order), release in reverse order.
    Key { keys: Vec<Key> },
    /// Type a string.
    Type { text: String },
    /// Move the pointer.
    MouseMove { coordinate: Point<Rel1000> },
    /// Click `button` `count` times, at `coordinate` or where the pointer is.
    Click { button: MouseButton, count: u8, coordinate: Option<Point<Rel1000>> },
    /// Press the left button where the pointer is, move to `coordinate`, release.
    LeftClickDrag { coordinate: Point<Rel1000> },
    /// Scroll; positive `pixels` scrolls up (vertical) or right (horizontal).
    Scroll { horizontal: bool, pixels: i64, coordinate: Option<Point<Rel1000>> },
    /// Wait `seconds`.
    Wait { seconds: f64 },
    /// End the task.
    Terminate { status: TerminateStatus },
    /// End the task with an answer for the user.
    Answer { text: String },
}

impl ModelAction {
    /// Builds an action from the `arguments` object of a `computer_use` call.
    pub fn from_arguments(args: &Map<String, Value>) -> Result<ModelAction> {
        let action = args
            .get("action")
            .and_then(Value::as_str)
            .ok_or_else(|| AgentError::Malformed("arguments without an \"action\" string".into()))?;
        let click = |button, count| -> Result<ModelAction> {
            Ok(ModelAction::Click { button, count, coordinate: opt_coordinate(args)? })
        };
        match action.trim().to_ascii_lowercase().as_str() {
            "key" => Ok(ModelAction::Key { keys: keys_arg(args)? }),
            "type" => Ok(ModelAction::Type { text: str_arg(args, "text")? }),
            "mouse_move" => Ok(ModelAction::MouseMove { coordinate: coordinate(args)? }),
            "left_click" => click(MouseButton::Left, 1),
            "right_click" => click(MouseButton::Right, 1),
            "middle_click" => click(MouseButton::Middle, 1),
            "double_click" => click(MouseButton::Left, 2),
            "triple_click" => click(MouseButton::Left, 3),
            "left_click_drag" => Ok(ModelAction::LeftClickDrag { coordinate: coordinate(args)? }),
            "scroll" | "hscroll" => Ok(ModelAction::Scroll {
                horizontal: action.trim().eq_ignore_ascii_case("hscroll"),
                pixels: pixels_arg(args)?,
                coordinate: opt_coordinate(args)?,
            }),
            "wait" => Ok(ModelAction::Wait { seconds: wait_arg(args)? }),
            "terminate" => Ok(ModelAction::Terminate { status: status_arg(args)? }),
            "answer" => Ok(ModelAction::Answer { text: str_arg(args, "text")? }),
            other => Err(AgentError::UnknownAction(other.chars().take(64).collect())),
        }
    }

    /// Whether this action ends the task.
    pub fn is_final(&self) -> bool {
        matches!(self, ModelAction::Terminate { .. } | ModelAction::Answer { .. })
    }
}

fn str_arg(args: &Map<String, Value>, name: &str) -> Result<String> {
    args.get(name)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| AgentError::Malformed(format!("missing string argument {name:?}")))
}

fn keys_arg(args: &Map<String, Value>) -> Result<Vec<Key>> {
    match args.get("keys") {
        Some(Value::Array(items)) => {
            let names = items
                .iter()
                .map(|v| v.as_str().ok_or_else(|| AgentError::Malformed("keys must be strings".into())))
                .collect::<Result<Vec<&str>>>()?;
            parse_key_combo(names)
        }
        Some(Value::String(s)) => parse_key_combo([s.as_str()]),
        _ => Err(AgentError::Malformed("key action needs a \"keys\" list".into())),
    }
}

/// A number, also accepted when written as a numeric string.
pub(crate) fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
    .filter(|f| f.is_finite())
}

/// `n` numbers in 0..=1000.
pub(crate) fn rel_numbers(v: &Value, n: usize, what: &str) -> Result<Vec<f64>> {
    let items = v
        .as_array()
        .filter(|a| a.len() == n)
        .ok_or_else(|| AgentError::Malformed(format!("{what} must be a list of {n} numbers")))?;
    let nums = items
        .iter()
        .map(|x| number(x).ok_or_else(|| AgentError::Malformed(format!("{what} must hold numbers"))))
        .collect::<Result<Vec<f64>>>()?;
    if nums.iter().any(|x| !(0.0..=1000.0).contains(x)) {
        return Err(AgentError::RelativeOutOfRange(nums));
    }
    Ok(nums)
}

fn coordinate(args: &Map<String, Value>) -> Result<Point<Rel1000>> {
    let v = args.get("coordinate").ok_or_else(|| AgentError::Malformed("missing \"coordinate\"".into()))?;
    let n = rel_numbers(v, 2, "coordinate")?;
    Ok(Point::new(n[0], n[1]))
}

fn opt_coordinate(args: &Map<String, Value>) -> Result<Option<Point<Rel1000>>> {
    match args.get("coordinate") {
        None | Some(Value::Null) => Ok(None),
        Some(_) => coordinate(args).map(Some),
    }
}

fn pixels_arg(args: &Map<String, Value>) -> Result<i64> {
    let p = args
        .get("pixels")
        .and_then(number)
        .ok_or_else(|| AgentError::Malformed("scroll needs a numeric \"pixels\"".into()))?;
    if p.abs() > 1e6 {
        return Err(AgentError::Malformed(format!("scroll of {p} pixels is implausible")));
    }
    Ok(p.round() as i64)
}

fn wait_arg(args: &Map<String, Value>) -> Result<f64> {
    let t = args.get("time").and_then(number).unwrap_or(1.0);
    if t < 0.0 {
        return Err(AgentError::Malformed(format!("negative wait time {t}")));
    }
    Ok(t)
}

fn status_arg(args: &Map<String, Value>) -> Result<TerminateStatus> {
    match args.get("status").and_then(Value::as_str).map(|s| s.trim().to_ascii_lowercase()) {
        Some(s) if s == "success" => Ok(TerminateStatus::Success),
        Some(s) if s == "failure" => Ok(TerminateStatus::Failure),
        _ => Err(AgentError::Malformed("terminate needs status \"success\" or \"failure\"".into())),
    }
}

/// Parses one tool-call JSON object `{"name": "computer_use", "arguments": {...}}`.
pub fn action_from_call(call: &Value) -> Result<ModelAction> {
    let obj = call.as_object().ok_or_else(|| AgentError::Malformed("tool call is not an object".into()))?;
    let name = obj.get("name").and_then(Value::as_str).unwrap_or(TOOL_NAME);
    if name != TOOL_NAME {
        return Err(AgentError::UnknownTool(name.chars().take(64).collect()));
    }
    match obj.get("arguments") {
        Some(Value::Object(args)) => ModelAction::from_arguments(args),
        // Some models send the arguments as a JSON string.
        Some(Value::String(s)) => match first_json_value(s) {
            Some(Value::Object(args)) => ModelAction::from_arguments(&args),
            _ => Err(AgentError::Malformed("arguments string holds no JSON object".into())),
        },
        _ => Err(AgentError::Malformed("tool call without an \"arguments\" object".into())),
    }
}

/// All `computer_use` actions in a model response's answer, in order (a Thinking model's
/// reasoning is skipped: [`answer_only`]). `<tool_call>` blocks are preferred (a missing
/// closing tag at the end is tolerated); without any, bare JSON objects with
/// `"name": "computer_use"` are accepted. No tool call at all is `Ok(vec![])`.
pub fn parse_tool_calls(text: &str) -> Result<Vec<ModelAction>> {
    check_len(text)?;
    let text = answer_only(text);
    const OPEN: &str = "<tool_call>";
    const CLOSE: &str = "</tool_call>";
    let mut actions = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(OPEN) {
        let after = &rest[i + OPEN.len()..];
        let (body, next) = match after.find(CLOSE) {
            Some(j) => (&after[..j], &after[j + CLOSE.len()..]),
            None => (after, ""),
        };
        let call = first_json_value(body).ok_or(AgentError::NotFound { expected: "JSON in <tool_call>" })?;
        actions.push(action_from_call(&call)?);
        rest = next;
    }
    if actions.is_empty() {
        for v in extract_json_values(text) {
            if v.get("name").and_then(Value::as_str) == Some(TOOL_NAME) {
                actions.push(action_from_call(&v)?);
            }
        }
    }
    Ok(actions)
}

#[cfg(test)]
#[path = "model_action_tests.rs"]
mod tests;
