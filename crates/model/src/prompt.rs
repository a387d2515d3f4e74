//! Prompts in Qwen3-VL's chat format: system / user / assistant turns, images inside user turns
//! (each expanded to its number of `<|image_pad|>` tokens), videos (each temporal patch written
//! as its time, `<1.2 seconds>`, then its `<|video_pad|>` tokens between vision markers), and
//! the `# Tools` block of function calling appended to the system turn.
//!
//! A prompt is rendered as [`Segment`]s that keep the template's control tokens apart from the
//! text of the messages, so that the tokenizer can encode message text with the control tokens
//! written in it as plain text: a user typing `<|im_start|>system` gets those characters, not
//! a forged system turn ([`crate::Tokenizer::encode_chat`]). [`render`] is the same prompt as
//! one string, as transformers' chat template writes it.

use serde::{Deserialize, Serialize};

pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";
pub const VISION_START: &str = "<|vision_start|>";
pub const VISION_END: &str = "<|vision_end|>";
pub const IMAGE_PAD: &str = "<|image_pad|>";
pub const VIDEO_PAD: &str = "<|video_pad|>";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    /// The result of a tool call. Qwen's template has no turn of its own for it: it is written
    /// in a user turn as `<tool_response>\n...\n</tool_response>`, and consecutive results
    /// share one user turn.
    Tool,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "user",
        }
    }
}

/// One piece of a turn. An image part carries the number of visual tokens it becomes; a video
/// part the time of each temporal patch (seconds) and the tokens of one temporal patch.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Image { tokens: usize },
    Video { timestamps: Vec<f64>, tokens_per_frame: usize },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
}

impl Message {
    pub fn text(role: Role, text: impl Into<String>) -> Self {
        Self { role, parts: vec![Part::Text(text.into())] }
    }
}

/// The tools block Qwen's function-calling prompt appends to the system message.
pub fn tools_block(tools: &[serde_json::Value]) -> String {
    tools_segments(tools).iter().map(Segment::text).collect()
}

/// The tools block as segments: the template's words (whose `<tool_call>` tags are the
/// tokenizer's added tokens) around the caller's function descriptions.
fn tools_segments(tools: &[serde_json::Value]) -> Vec<Segment> {
    let descs: Vec<String> = tools
        .iter()
        .map(|f| match f.get("type") {
            // Already in OpenAI's form (as transformers' callers pass tools): written as given.
            Some(t) if t == "function" && f.get("function").is_some() => python_json(f),
            _ => python_json(&serde_json::json!({"type": "function", "function": f})),
        })
        .collect();
    vec![
        Segment::template(
            "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
             You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n",
        ),
        Segment::Text { text: descs.join("\n"), added: AddedTokens::NonSpecial },
        Segment::template(
            "\n</tools>\n\n\
             For each function call, return a json object with function name and arguments within \
             <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": \
             <args-json-object>}\n</tool_call>",
        ),
    ]
}

/// JSON as Python's `json.dumps(ensure_ascii=False)` writes it: ", " and ": " separators.
pub fn python_json(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Array(a) => format!("[{}]", a.iter().map(python_json).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), python_json(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => other.to_string(),
    }
}

/// Which of the tokenizer's added tokens written in a text segment become those tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddedTokens {
    /// All of them: text of the template itself.
    All,
    /// Only the non-special ones (`<tool_call>`, `<think>`): text of system and assistant
    /// turns, so that an earlier answer's tool call is encoded as the model wrote it, while
    /// no turn or image marker (`<|im_start|>`, `<|image_pad|>`) can be forged.
    NonSpecial,
    /// None: user text, which may come from anyone (a web page, a screen's contents).
    None,
}

/// A piece of a rendered prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A control token of the chat format, `count` times in a row.
    Control { token: &'static str, count: usize },
    /// Text, and which added tokens written in it are recognised.
    Text { text: String, added: AddedTokens },
}

impl Segment {
    fn control(token: &'static str) -> Self {
        Segment::Control { token, count: 1 }
    }

    fn template(text: impl Into<String>) -> Self {
        Segment::Text { text: text.into(), added: AddedTokens::All }
    }

    /// The segment as the chat template writes it.
    pub fn text(&self) -> String {
        match self {
            Segment::Control { token, count } => token.repeat(*count),
            Segment::Text { text, .. } => text.clone(),
        }
    }
}

/// How much of the added vocabulary a role's text may use (see [`AddedTokens`]).
fn added_tokens_of(role: Role) -> AddedTokens {
    match role {
        Role::User | Role::Tool => AddedTokens::None,
        Role::System | Role::Assistant => AddedTokens::NonSpecial,
    }
}

/// Renders the conversation as segments. With `tools`, the tools block is appended to the
/// system turn (after a blank line), or becomes the system turn when there is none. With
/// `add_generation_prompt` it ends with an open assistant turn.
pub fn render_segments(messages: &[Message], tools: &[serde_json::Value], add_generation_prompt: bool) -> Vec<Segment> {
    let mut out = Vec::new();
    let has_system = messages.first().map(|m| m.role == Role::System).unwrap_or(false);
    if !tools.is_empty() && !has_system {
        out.push(Segment::control(IM_START));
        out.push(Segment::template("system\n"));
        out.extend(tools_segments(tools));
        out.push(Segment::control(IM_END));
        out.push(Segment::template("\n"));
    }
    for (i, m) in messages.iter().enumerate() {
        let tool = m.role == Role::Tool;
        let prev_tool = i > 0 && messages[i - 1].role == Role::Tool;
        let next_tool = messages.get(i + 1).is_some_and(|n| n.role == Role::Tool);
        if !(tool && prev_tool) {
            out.push(Segment::control(IM_START));
            out.push(Segment::template(if tool { "user".to_string() } else { format!("{}\n", m.role.as_str()) }));
        }
        if tool {
            out.push(Segment::template("\n<tool_response>\n"));
        }
        for p in &m.parts {
            match p {
                Part::Text(t) => out.push(Segment::Text { text: t.clone(), added: added_tokens_of(m.role) }),
                Part::Image { tokens } => {
                    out.push(Segment::control(VISION_START));
                    out.push(Segment::Control { token: IMAGE_PAD, count: *tokens });
                    out.push(Segment::control(VISION_END));
                }
                Part::Video { timestamps, tokens_per_frame } => {
                    for &t in timestamps {
                        out.push(Segment::template(crate::preprocess::timestamp_text(t)));
                        out.push(Segment::control(VISION_START));
                        out.push(Segment::Control { token: VIDEO_PAD, count: *tokens_per_frame });
                        out.push(Segment::control(VISION_END));
                    }
                }
            }
        }
        if tool {
            out.push(Segment::template("\n</tool_response>"));
            if next_tool {
                continue;
            }
        }
        if i == 0 && has_system && !tools.is_empty() {
            out.push(Segment::template("\n\n"));
            out.extend(tools_segments(tools));
        }
        out.push(Segment::control(IM_END));
        out.push(Segment::template("\n"));
    }
    if add_generation_prompt {
        out.push(Segment::control(IM_START));
        out.push(Segment::template("assistant\n"));
    }
    out
}

/// Renders the conversation as one string (see [`render_segments`]). Encoding this string
/// turns control tokens written in the messages into real ones: give the tokenizer the
/// segments ([`crate::Tokenizer::encode_chat`]) unless every message is trusted.
pub fn render(messages: &[Message], tools: &[serde_json::Value], add_generation_prompt: bool) -> String {
    render_segments(messages, tools, add_generation_prompt).iter().map(Segment::text).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_turn_with_two_images_then_text() {
        let m = Message { role: Role::User, parts: vec![Part::Image { tokens: 2 }, Part::Image { tokens: 1 }, Part::Text("Hi".into())] };
        let s = render(&[m], &[], true);
        assert_eq!(
            s,
            "<|im_start|>user\n<|vision_start|><|image_pad|><|image_pad|><|vision_end|>\
             <|vision_start|><|image_pad|><|vision_end|>Hi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn a_video_writes_each_temporal_patch_after_its_time() {
        let m = Message {
            role: Role::User,
            parts: vec![Part::Video { timestamps: vec![0.25, 1.75], tokens_per_frame: 2 }, Part::Text("Hi".into())],
        };
        assert_eq!(
            render(&[m], &[], false),
            "<|im_start|>user\n<0.2 seconds><|vision_start|><|video_pad|><|video_pad|><|vision_end|>\
             <1.8 seconds><|vision_start|><|video_pad|><|video_pad|><|vision_end|>Hi<|im_end|>\n"
        );
    }

    #[test]
    fn tools_are_appended_to_the_system_turn() {
        let tool = serde_json::json!({"name": "f", "parameters": {"type": "object"}});
        let s = render(&[Message::text(Role::System, "Be brief."), Message::text(Role::User, "x")], &[tool], false);
        assert!(s.starts_with("<|im_start|>system\nBe brief.\n\n# Tools\n"), "{s}");
        assert!(s.contains("<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {\"type\": \"object\"}}}\n</tools>"), "{s}");
        assert!(!s.ends_with("assistant\n"));
    }

    #[test]
    fn tools_in_openai_form_are_not_wrapped_twice() {
        let bare = serde_json::json!({"name": "f", "parameters": {"type": "object"}});
        let openai = serde_json::json!({"type": "function", "function": bare.clone()});
        assert_eq!(tools_block(&[bare]), tools_block(&[openai]));
    }

    #[test]
    fn tools_without_system_make_a_system_turn() {
        let s = render(&[Message::text(Role::User, "x")], &[serde_json::json!({"name": "f"})], true);
        assert!(s.starts_with("<|im_start|>system\n# Tools"), "{s}");
    }

    #[test]
    fn tool_results_are_user_turns_with_tool_response_tags_as_qwens_template_writes_them() {
        // Qwen3-VL's chat template: a run of tool messages is one user turn, each result
        // wrapped as "\n<tool_response>\n...\n</tool_response>".
        let msgs = [
            Message::text(Role::User, "task"),
            Message::text(Role::Assistant, "<tool_call>\n{}\n</tool_call>"),
            Message { role: Role::Tool, parts: vec![Part::Text("done".into()), Part::Image { tokens: 2 }] },
            Message::text(Role::Tool, "second"),
            Message::text(Role::User, "next"),
        ];
        let s = render(&msgs, &[], true);
        assert_eq!(
            s,
            "<|im_start|>user\ntask<|im_end|>\n<|im_start|>assistant\n<tool_call>\n{}\n</tool_call><|im_end|>\n\
             <|im_start|>user\n<tool_response>\ndone<|vision_start|><|image_pad|><|image_pad|><|vision_end|>\n</tool_response>\
             \n<tool_response>\nsecond\n</tool_response><|im_end|>\n<|im_start|>user\nnext<|im_end|>\n<|im_start|>assistant\n"
        );
        // A tool result's text is untrusted (it may quote the screen): no added token in it counts.
        let segs = render_segments(&[Message::text(Role::Tool, "<|im_start|>")], &[], false);
        assert!(segs.contains(&Segment::Text { text: "<|im_start|>".into(), added: AddedTokens::None }));
    }

    #[test]
    fn python_json_matches_json_dumps_separators_and_keeps_unicode() {
        let v = serde_json::json!({"a": [1, 2.5, "é"], "b": null});
        assert_eq!(python_json(&v), "{\"a\": [1, 2.5, \"é\"], \"b\": null}");
    }
}
