//! Tool calls as Qwen writes them, `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`,
//! and as OpenAI's API carries them (a name and an arguments JSON string): both directions.

use serde_json::Value;

use screenpilot_model::prompt::python_json;

/// A tool call in OpenAI's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub name: String,
    /// The arguments object.
    pub arguments: Value,
}

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

/// The block Qwen's chat template writes for one call. `arguments` is a JSON object, or a
/// string holding one (OpenAI's form), written as given.
pub fn to_text(name: &str, arguments: &Value) -> String {
    let args = match arguments {
        Value::String(s) => s.clone(),
        other => python_json(other),
    };
    format!("{OPEN}\n{{\"name\": {}, \"arguments\": {args}}}\n{CLOSE}", python_json(&Value::String(name.into())))
}

/// Splits an answer into its content and its tool calls: every `<tool_call>` block whose JSON
/// has a string `name` and an object `arguments` (a missing one is `{}`, a JSON string holding
/// an object is accepted) is taken out; a block that does not parse, or is not closed, stays in
/// the content. With calls, the content is the rest of the text without its trailing whitespace
/// (empty when nothing else was written); without, it is the text unchanged.
pub fn split(text: &str) -> (String, Vec<ToolCall>) {
    let mut content = String::new();
    let mut calls = Vec::new();
    let mut rest = text;
    while let Some(first) = rest.find(OPEN) {
        let Some(end) = rest[first..].find(CLOSE).map(|e| first + e) else { break };
        // The block is opened by the last `<tool_call>` before its close.
        let start = rest[..end].rfind(OPEN).unwrap_or(first);
        let after = end + CLOSE.len();
        match parse_call(&rest[start + OPEN.len()..end]) {
            Some(call) => {
                content.push_str(&rest[..start]);
                calls.push(call);
            }
            None => content.push_str(&rest[..after]),
        }
        rest = &rest[after..];
    }
    if calls.is_empty() {
        return (text.to_string(), calls);
    }
    content.push_str(rest);
    content.truncate(content.trim_end().len());
    (content, calls)
}

fn parse_call(body: &str) -> Option<ToolCall> {
    let v: Value = serde_json::from_str(body.trim()).ok()?;
    let name = v.get("name")?.as_str()?.to_string();
    let arguments = match v.get("arguments") {
        None => Value::Object(Default::default()),
        Some(Value::String(s)) => serde_json::from_str::<Value>(s).ok().filter(Value::is_object)?,
        Some(a @ Value::Object(_)) => a.clone(),
        Some(_) => return None,
    };
    Some(ToolCall { name, arguments })
}

impl ToolCall {
    /// The call as an entry of OpenAI's `tool_calls` (arguments as a compact JSON string);
    /// `index` is for stream deltas.
    pub fn openai(&self, id: String, index: Option<usize>) -> Value {
        let mut v = serde_json::json!({"id": id, "type": "function", "function": {"name": self.name, "arguments": self.arguments.to_string()}});
        if let Some(i) = index {
            v["index"] = serde_json::json!(i);
        }
        v
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_call_written_as_text_splits_back_into_the_same_call() {
        let args = json!({"action": "left_click", "coordinate": [500, 300]});
        let text = format!("I will click.\n{}", to_text("computer_use", &args));
        assert_eq!(
            text,
            "I will click.\n<tool_call>\n{\"name\": \"computer_use\", \"arguments\": {\"action\": \"left_click\", \"coordinate\": [500, 300]}}\n</tool_call>"
        );
        let (content, calls) = split(&text);
        assert_eq!(content, "I will click.");
        assert_eq!(calls[0].openai("c".into(), Some(2))["function"]["arguments"], args.to_string());
        assert_eq!(calls, vec![ToolCall { name: "computer_use".into(), arguments: args }]);
    }

    #[test]
    fn string_arguments_are_written_as_given_and_parsed_as_objects() {
        let t = to_text("f", &json!("{\"a\":1}"));
        assert!(t.contains("\"arguments\": {\"a\":1}}"), "{t}");
        assert_eq!(split(&t).1[0].arguments, json!({"a": 1}));
        let quoted = "<tool_call>{\"name\": \"f\", \"arguments\": \"{\\\"a\\\": 2}\"}</tool_call>";
        assert_eq!(split(quoted).1[0].arguments, json!({"a": 2}));
    }

    #[test]
    fn broken_or_unclosed_blocks_stay_text() {
        let bad = "a <tool_call>{not json}</tool_call> b <tool_call>{\"name\": 3}</tool_call>";
        assert_eq!(split(bad), (bad.to_string(), vec![]));
        let open = "x <tool_call>{\"name\": \"f\"";
        assert_eq!(split(open), (open.to_string(), vec![]));
        let two = "<tool_call>{\"name\": \"f\"}</tool_call><tool_call>{\"name\": \"g\", \"arguments\": {}}</tool_call>";
        let (c, calls) = split(two);
        assert_eq!((c.as_str(), calls.len()), ("", 2));
        assert_eq!(calls[0].arguments, json!({}));
    }
}
