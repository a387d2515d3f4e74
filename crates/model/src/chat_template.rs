//! Which chat format a model folder uses, and the Thinking models' variant of the prompt.
//!
//! Qwen3-VL comes as Instruct and Thinking models. Both write the turns alike
//! ([`crate::prompt::render_segments`]); a Thinking model's chat template differs in two places,
//! which [`render_segments_for`] reproduces:
//!
//! - the generation prompt opens the reasoning: `<|im_start|>assistant\n<think>\n`, so the
//!   model's output starts inside it and closes it with `</think>` before the answer;
//! - an earlier assistant turn is split at `</think>` into reasoning and answer. Turns up to the
//!   last user query keep only the answer; a turn after it (the model's own steps of a tool-
//!   calling round) is written `<think>\n{reasoning}\n</think>\n\n{answer}` when it has
//!   reasoning or is the last message, and as its answer alone otherwise.
//!
//! The flavour is read from the folder's chat template ([`ChatFormat::from_folder`]): the
//! template itself is never run, only recognised.

use std::path::Path;

use crate::error::{ModelError, Result};
use crate::prompt::{render_segments, Message, Part, Role, Segment, IMAGE_PAD, VISION_END, VISION_START};

/// The tag that opens a Thinking model's reasoning.
pub const THINK_OPEN: &str = "<think>";
/// The tag that ends it; the answer follows.
pub const THINK_CLOSE: &str = "</think>";

/// How a model's prompts are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ChatFormat {
    /// Qwen3-VL Instruct: the answer follows the generation prompt directly. The default, also
    /// for a folder without a chat template.
    #[default]
    Instruct,
    /// Qwen3-VL Thinking: the generation prompt opens `<think>`, and the output is reasoning,
    /// `</think>`, then the answer.
    Thinking,
}

impl ChatFormat {
    /// Recognises a chat template's flavour: Thinking when its generation prompt opens the
    /// reasoning (the template writes `'<|im_start|>assistant\n<think>\n'`, in the escaped form
    /// Jinja source has).
    pub fn detect(template: &str) -> Self {
        let opens_thinking = ["'<|im_start|>assistant\\n<think>\\n'", "\"<|im_start|>assistant\\n<think>\\n\""]
            .iter()
            .any(|p| template.contains(p));
        if opens_thinking {
            ChatFormat::Thinking
        } else {
            ChatFormat::Instruct
        }
    }

    /// The flavour of a model folder's chat template, from the first of `chat_template.jinja`,
    /// `chat_template.json` (its `"chat_template"`) and `tokenizer_config.json` (its
    /// `"chat_template"`) that has one. Instruct when none has.
    pub fn from_folder(dir: &Path) -> Result<Self> {
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            return Ok(Self::detect(&read(&jinja)?));
        }
        for file in ["chat_template.json", "tokenizer_config.json"] {
            let p = dir.join(file);
            if !p.is_file() {
                continue;
            }
            let v: serde_json::Value =
                serde_json::from_str(&read(&p)?).map_err(|e| ModelError::Config(format!("{file}: {e}")))?;
            if let Some(t) = template_text(v.get("chat_template")) {
                return Ok(Self::detect(&t));
            }
        }
        Ok(ChatFormat::Instruct)
    }

    /// Whether the model's output starts inside its reasoning (the generation prompt opened it).
    pub fn starts_in_reasoning(self) -> bool {
        self == ChatFormat::Thinking
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.to_path_buf(), source })
}

/// A `chat_template` value: one string, or a list of named templates (the default one counts).
fn template_text(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
            .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
        _ => None,
    }
}

/// Renders the conversation as `format`'s chat template does (see the module docs).
pub fn render_segments_for(
    format: ChatFormat,
    messages: &[Message],
    tools: &[serde_json::Value],
    add_generation_prompt: bool,
) -> Vec<Segment> {
    match format {
        ChatFormat::Instruct => render_segments(messages, tools, add_generation_prompt),
        ChatFormat::Thinking => {
            let mut out = render_segments(&thinking_messages(messages), tools, add_generation_prompt);
            if add_generation_prompt {
                out.push(Segment::Text { text: format!("{THINK_OPEN}\n"), added: crate::prompt::AddedTokens::All });
            }
            out
        }
    }
}

/// The messages with each assistant turn's text as the Thinking template writes it.
fn thinking_messages(messages: &[Message]) -> Vec<Message> {
    let last_query = last_query_index(messages);
    let last = messages.len().saturating_sub(1);
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let Some(text) = assistant_text(m) else { return m.clone() };
            let (reasoning, answer) = split_turn(&text);
            let text = if i > last_query && (i == last || !reasoning.is_empty()) {
                let answer = answer.trim_start_matches('\n');
                format!("{THINK_OPEN}\n{}\n{THINK_CLOSE}\n\n{answer}", reasoning.trim_matches('\n'))
            } else {
                answer
            };
            Message::text(Role::Assistant, text)
        })
        .collect()
}

/// An assistant message's text, when it is all text (an assistant turn with an image is written
/// unchanged: a chat API never sends one).
fn assistant_text(m: &Message) -> Option<String> {
    if m.role != Role::Assistant {
        return None;
    }
    m.parts
        .iter()
        .map(|p| match p {
            Part::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect::<Option<Vec<&str>>>()
        .map(|parts| parts.concat())
}

/// An earlier turn's (reasoning, answer), split as the template splits it: the reasoning is what
/// precedes the first `</think>` (after any `<think>`), the answer what follows the last one.
/// A turn without `</think>` is all answer.
fn split_turn(text: &str) -> (String, String) {
    if !text.contains(THINK_CLOSE) {
        return (String::new(), text.to_string());
    }
    let before = text.split(THINK_CLOSE).next().unwrap_or("").trim_end_matches('\n');
    let reasoning = before.rsplit(THINK_OPEN).next().unwrap_or("").trim_start_matches('\n');
    let answer = text.rsplit(THINK_CLOSE).next().unwrap_or("").trim_start_matches('\n');
    (reasoning.to_string(), answer.to_string())
}

/// Index of the last user message that is a query (not a tool response written as a user
/// turn); the last message's index when there is none.
fn last_query_index(messages: &[Message]) -> usize {
    messages
        .iter()
        .enumerate()
        .rev()
        .find(|(_, m)| m.role == Role::User && !is_tool_response(m))
        .map_or(messages.len().saturating_sub(1), |(i, _)| i)
}

fn is_tool_response(m: &Message) -> bool {
    let content: String = m
        .parts
        .iter()
        .map(|p| match p {
            Part::Text(t) => t.clone(),
            _ => format!("{VISION_START}{IMAGE_PAD}{VISION_END}"),
        })
        .collect();
    content.starts_with("<tool_response>") && content.ends_with("</tool_response>")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "chat_template_tests.rs"]
mod tests;
