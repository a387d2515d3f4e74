//! The model interface: the [`Brain`] trait the real Qwen3-VL engine implements, the
//! [`BrainRequest`] it receives (system prompt, tool schema, conversation with
//! screenshots), the `computer_use` tool schema, and a scripted fake brain.

use std::collections::VecDeque;
use std::sync::Arc;

use image::RgbImage;
use serde_json::{json, Value};

/// Error a brain may return; any `std::error::Error` converts into it with `?`.
pub type BrainError = Box<dyn std::error::Error + Send + Sync>;

/// Who said something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The user (task text, screenshots, feedback from the agent).
    User,
    /// The model's earlier outputs.
    Assistant,
    /// The result of the previous tool call: the new screenshot and any feedback
    /// (Qwen's chat template wraps it in `<tool_response>` inside a user turn).
    Tool,
}

/// A piece of a turn.
#[derive(Debug, Clone)]
pub enum Content {
    /// Text.
    Text(String),
    /// A screenshot, to be placed at this position in the turn.
    Image(Arc<RgbImage>),
}

/// One conversation turn.
#[derive(Debug, Clone)]
pub struct Turn {
    /// Speaker.
    pub role: Role,
    /// Text and images in order.
    pub content: Vec<Content>,
}

impl Turn {
    /// A turn holding only text.
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self { role, content: vec![Content::Text(text.into())] }
    }

    /// The images of this turn.
    pub fn images(&self) -> impl Iterator<Item = &Arc<RgbImage>> {
        self.content.iter().filter_map(|c| match c {
            Content::Image(i) => Some(i),
            Content::Text(_) => None,
        })
    }
}

/// Everything the model needs for one reply.
#[derive(Debug, Clone)]
pub struct BrainRequest {
    /// System prompt text without the tools block.
    pub system_prompt: String,
    /// Function schemas (here: [`computer_use_tool`]); the model crate formats them
    /// into the system prompt's "# Tools" block.
    pub tools: Vec<Value>,
    /// The conversation so far, oldest first; old screenshots beyond the context budget
    /// are already replaced by a text note.
    pub turns: Vec<Turn>,
}

/// A model that answers a request with raw text (which may contain `<tool_call>` blocks).
pub trait Brain {
    /// Generates the assistant's next message.
    fn respond(&mut self, request: &BrainRequest) -> Result<String, BrainError>;
}

impl<F> Brain for F
where
    F: FnMut(&BrainRequest) -> Result<String, BrainError>,
{
    fn respond(&mut self, request: &BrainRequest) -> Result<String, BrainError> {
        self(request)
    }
}

/// A fake brain replying with scripted outputs and remembering every request.
#[derive(Debug, Default)]
pub struct ScriptedBrain {
    replies: VecDeque<String>,
    /// Requests received, in order.
    pub requests: Vec<BrainRequest>,
}

impl ScriptedBrain {
    /// A brain that will give these replies, then fail.
    pub fn new<S: Into<String>>(replies: impl IntoIterator<Item = S>) -> Self {
        Self { replies: replies.into_iter().map(Into::into).collect(), requests: Vec::new() }
    }
}

impl Brain for ScriptedBrain {
    fn respond(&mut self, request: &BrainRequest) -> Result<String, BrainError> {
        self.requests.push(request.clone());
        self.replies.pop_front().ok_or_else(|| "scripted brain has no more replies".into())
    }
}

/// The screen size Qwen3-VL is told: it answers in relative coordinates on 0..=1000.
pub const QWEN_SCREEN_SIZE: (u32, u32) = (1000, 1000);

/// Every action name of the `computer_use` tool.
pub const ACTIONS: [&str; 14] = [
    "key", "type", "mouse_move", "left_click", "left_click_drag", "right_click", "middle_click",
    "double_click", "triple_click", "scroll", "hscroll", "wait", "terminate", "answer",
];

/// The default system prompt (the tools block is added by the model crate).
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a careful assistant operating the user's computer. \
Look at the latest screenshot, decide on one step at a time, and call the computer_use tool. \
When the task is done, call it with action=terminate (or action=answer to reply with text).";

/// The `computer_use` function schema: `{"name", "description", "parameters"}`.
/// The agent passes [`QWEN_SCREEN_SIZE`] so that coordinates are relative 0..=1000.
pub fn computer_use_tool(display_w: u32, display_h: u32) -> Value {
    let description = format!(
        "Control the computer with the mouse and keyboard; each call performs one action and \
you then receive a new screenshot.\n\
* The screen is {display_w}x{display_h}; coordinates are (x, y) with x to the right and y downwards.\n\
* Aim at the centre of the element you want, judging its position from the latest screenshot.\n\
* Applications can be slow: if a click seems to have no effect, wait and look again before repeating it.\n\
* Click into a text field before typing into it."
    );
    json!({
        "name": "computer_use",
        "description": description,
        "parameters": {
            "type": "object",
            "properties": {
                "action": {
                    "type": "string",
                    "enum": ACTIONS,
                    "description": "What to do:\n\
* `key`: press the given keys together, then release them (e.g. [\"ctrl\", \"c\"]).\n\
* `type`: type a string on the keyboard.\n\
* `mouse_move`: move the pointer to `coordinate`.\n\
* `left_click`, `right_click`, `middle_click`, `double_click`, `triple_click`: click at `coordinate`.\n\
* `left_click_drag`: hold the left button from the current pointer position to `coordinate`.\n\
* `scroll`: scroll the wheel vertically by `pixels` (positive is up), at `coordinate` if given.\n\
* `hscroll`: scroll horizontally by `pixels` (positive is right), at `coordinate` if given.\n\
* `wait`: do nothing for `time` seconds.\n\
* `terminate`: end the task, reporting `status`.\n\
* `answer`: end the task with `text` as the answer for the user."
                },
                "keys": {"type": "array", "items": {"type": "string"}, "description": "For action=key: the key names."},
                "text": {"type": "string", "description": "For action=type and action=answer."},
                "coordinate": {"type": "array", "items": {"type": "number"}, "description": "(x, y) on the screen. Needed for mouse_move and left_click_drag, optional for clicks and scrolls."},
                "pixels": {"type": "number", "description": "For action=scroll and action=hscroll: scroll distance; positive scrolls up (or right), negative down (or left)."},
                "time": {"type": "number", "description": "For action=wait: seconds to wait."},
                "status": {"type": "string", "enum": ["success", "failure"], "description": "For action=terminate: whether the task succeeded."}
            },
            "required": ["action"]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_schema_names_every_action_and_parameter() {
        let t = computer_use_tool(1000, 1000);
        assert_eq!(t["name"], "computer_use");
        assert!(t["description"].as_str().unwrap_or("").contains("1000x1000"));
        let props = &t["parameters"]["properties"];
        for p in ["action", "keys", "text", "coordinate", "pixels", "time", "status"] {
            assert!(props.get(p).is_some(), "{p}");
        }
        let actions: Vec<&str> = props["action"]["enum"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert_eq!(actions, ACTIONS.to_vec());
        assert_eq!(t["parameters"]["required"], json!(["action"]));
    }

    #[test]
    fn closures_are_brains() {
        let mut b = |_: &BrainRequest| -> Result<String, BrainError> { Ok("hi".into()) };
        let req = BrainRequest { system_prompt: String::new(), tools: vec![], turns: vec![] };
        assert_eq!(Brain::respond(&mut b, &req).unwrap(), "hi");
    }
}
