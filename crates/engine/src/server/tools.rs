//! Function calling over the chat-completions API, both ways.
//!
//! Request side: OpenAI's `tools` (each `{"type": "function", "function": {"name",
//! "description"?, "parameters"?}}`) are checked and passed on as given to
//! [`crate::request::Request::tools`], which the model's prompt writes into the system turn's
//! tools block; `tool_choice` `"none"` keeps them out of the prompt (no call is wanted), `"auto"`
//! or null renders them, `"required"` and a named function are refused (the model cannot be
//! forced). An earlier assistant turn's `tool_calls` become the text Qwen's chat template
//! writes for them ([`tool_calls_text`]).
//!
//! Response side: the answer's `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`
//! blocks become OpenAI tool calls ([`split_tool_calls`]); a block that does not parse stays
//! text, and an answer without calls is its content unchanged. For streaming, [`ToolStream`]
//! passes content on as it comes but holds back everything from the first `<tool_call>` on (and
//! whitespace that may turn out to end the content), so that the content streamed equals the
//! `content` a non-streaming answer has.

pub(crate) use crate::backend::tool_text::{split as split_tool_calls, ToolCall};
use crate::backend::tool_text;
use screenpilot_model::prompt::python_json;
use serde_json::Value;

const OPEN: &str = "<tool_call>";

/// Checks OpenAI's `tools` array: every entry a function with a name.
pub(crate) fn parse_tools(tools: Option<&Value>) -> Result<Vec<Value>, String> {
    let list = match tools {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(other) => return Err(format!("`tools` must be a list of functions (given: {other})")),
    };
    for (i, t) in list.iter().enumerate() {
        check_tool(t).map_err(|e| format!("`tools[{i}]`: {e}"))?;
    }
    Ok(list.clone())
}

fn check_tool(t: &Value) -> Result<(), String> {
    let Value::Object(fields) = t else {
        return Err("must be an object {\"type\": \"function\", \"function\": {...}}".into());
    };
    for key in fields.keys() {
        if key != "type" && key != "function" {
            return Err(format!("unknown field `{key}` (a tool has `type` and `function`)"));
        }
    }
    if fields.get("type").and_then(Value::as_str) != Some("function") {
        return Err(format!(
            "`type` must be \"function\", the only kind of tool supported (given: {})",
            fields.get("type").unwrap_or(&Value::Null)
        ));
    }
    let Some(Value::Object(f)) = fields.get("function") else { return Err("`function` must be an object".into()) };
    match f.get("name") {
        Some(Value::String(n)) if !n.is_empty() => {}
        _ => return Err("`function.name` must be a non-empty string".into()),
    }
    for (key, v) in f {
        match key.as_str() {
            "name" => {}
            "description" if v.is_string() || v.is_null() => {}
            "description" => return Err("`function.description` must be a string".into()),
            "parameters" if v.is_object() || v.is_null() => {}
            "parameters" => return Err("`function.parameters` must be a JSON Schema object".into()),
            // Structured outputs' guarantee is not implemented; asking for it is refused.
            "strict" if v.is_null() || v == &Value::Bool(false) => {}
            "strict" => return Err("`function.strict` is not supported by this server".into()),
            other => return Err(format!("unknown field `function.{other}`")),
        }
    }
    Ok(())
}

/// Whether the tools are written into the prompt, from `tool_choice`.
pub(crate) fn tools_rendered(tool_choice: Option<&Value>) -> Result<bool, String> {
    match tool_choice {
        None | Some(Value::Null) => Ok(true),
        Some(Value::String(s)) if s == "auto" => Ok(true),
        Some(Value::String(s)) if s == "none" => Ok(false),
        Some(v) => Err(format!(
            "`tool_choice` {v} is not supported by this server: the model cannot be forced to call a tool (use \"auto\" or \"none\")"
        )),
    }
}

/// The text Qwen's chat template writes after an assistant turn's content for its
/// `tool_calls`: each call as a `<tool_call>` block, after a newline unless it is the first
/// thing in the turn. `arguments` may be OpenAI's JSON string (written as given, and it must be
/// valid JSON) or an object (written as Python's `json.dumps` does).
pub(crate) fn tool_calls_text(calls: &Value, content_nonempty: bool) -> Result<String, String> {
    let list = match calls {
        Value::Null => return Ok(String::new()),
        Value::Array(list) => list,
        _ => return Err("`tool_calls` must be a list".into()),
    };
    let mut out = String::new();
    for (j, call) in list.iter().enumerate() {
        let (name, args) = call_parts(call).map_err(|e| format!("`tool_calls[{j}]`: {e}"))?;
        if j > 0 || content_nonempty {
            out.push('\n');
        }
        out.push_str(&tool_text::to_text(&name, &Value::String(args)));
    }
    Ok(out)
}

fn call_parts(call: &Value) -> Result<(String, String), String> {
    let Value::Object(c) = call else { return Err("must be an object with `function: {name, arguments}`".into()) };
    for (key, v) in c {
        match key.as_str() {
            "id" | "function" => {}
            "type" if v.is_null() || v == "function" => {}
            "type" => return Err(format!("`type` must be \"function\" (given: {v})")),
            other => return Err(format!("unknown field `{other}`")),
        }
    }
    let Some(Value::Object(f)) = c.get("function") else { return Err("`function` must be an object".into()) };
    let name = match f.get("name") {
        Some(Value::String(n)) if !n.is_empty() => n.clone(),
        _ => return Err("`function.name` must be a non-empty string".into()),
    };
    let args = match f.get("arguments") {
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(_) => s.clone(),
            Err(e) => return Err(format!("`function.arguments` is not valid JSON ({e}): {s:?}")),
        },
        Some(v @ Value::Object(_)) => python_json(v),
        _ => return Err("`function.arguments` must be a JSON string or an object".into()),
    };
    Ok((name, args))
}

/// The content of a streamed answer with tools, released as it becomes certain: text before
/// the first `<tool_call>` (or anything that may become one), without the whitespace that may
/// end the content. [`ToolStream::finish`] gives the rest of the content
/// and the calls, as [`split_tool_calls`] finds them in the whole answer.
#[derive(Debug, Default)]
pub(crate) struct ToolStream {
    text: String,
    /// Bytes of the content released so far (a prefix of the final content).
    sent: usize,
    /// Where the text stops being certain content: no `<tool_call>` begins before it.
    safe_end: usize,
    /// Set once a `<tool_call>` appeared: nothing more is released before the end.
    held: bool,
}

impl ToolStream {
    /// Adds a piece of the answer; returns content ready to send (possibly empty).
    pub(crate) fn push(&mut self, piece: &str) -> String {
        self.text.push_str(piece);
        if self.held {
            return String::new();
        }
        // Only the text from the last `safe_end` on can hold a new `<tool_call>`.
        self.safe_end = match self.text[self.safe_end..].find(OPEN) {
            Some(p) => {
                self.held = true;
                self.safe_end + p
            }
            None => self.text.len() - partial_open_suffix(&self.text),
        };
        let ready = self.text[..self.safe_end].trim_end();
        let out = ready.get(self.sent..).unwrap_or("").to_string();
        self.sent = self.sent.max(ready.len());
        out
    }

    /// The content not sent yet and the calls.
    pub(crate) fn finish(self) -> (String, Vec<ToolCall>) {
        let (content, calls) = split_tool_calls(&self.text);
        // `sent` is a prefix of `content` (it precedes the first block and ends in non-space).
        let rest = content.get(self.sent..).unwrap_or("").to_string();
        (rest, calls)
    }
}

/// Length of the longest end of `s` that is a proper beginning of `<tool_call>`.
fn partial_open_suffix(s: &str) -> usize {
    (1..OPEN.len()).rev().find(|&k| s.ends_with(&OPEN[..k])).unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(name: &str, arguments: &str) -> ToolCall {
        ToolCall { name: name.into(), arguments: serde_json::from_str(arguments).unwrap() }
    }

    #[test]
    fn calls_are_taken_out_of_the_answer_and_the_rest_is_content() {
        let text = "I will click OK.\n<tool_call>\n{\"name\": \"computer_use\", \"arguments\": {\"action\": \"left_click\", \"coordinate\": [500, 300]}}\n</tool_call>\n<tool_call>\n{\"name\": \"wait\", \"arguments\": {}}\n</tool_call>";
        let (content, calls) = split_tool_calls(text);
        assert_eq!(content, "I will click OK.");
        assert_eq!(
            calls,
            vec![call("computer_use", r#"{"action":"left_click","coordinate":[500,300]}"#), call("wait", "{}")]
        );
        let v = calls[0].openai("call_7_0".into(), None);
        assert_eq!(v["function"]["arguments"], r#"{"action":"left_click","coordinate":[500,300]}"#);
        assert_eq!((v["id"].as_str(), v["type"].as_str(), v.get("index")), (Some("call_7_0"), Some("function"), None));
        assert_eq!(calls[1].openai("x".into(), Some(1))["index"], 1);
        // Only calls: empty content.
        let only = "<tool_call>\n{\"name\": \"f\", \"arguments\": {\"a\": \"é\"}}\n</tool_call>";
        assert_eq!(split_tool_calls(only), (String::new(), vec![call("f", r#"{"a":"é"}"#)]));
        // No calls: the text unchanged. Calls: trailing whitespace goes, leading stays.
        assert_eq!(split_tool_calls("  Just text.\n"), ("  Just text.\n".to_string(), vec![]));
        let spaced = " a\n<tool_call>{\"name\": \"f\"}</tool_call>\n b \n<tool_call>{\"name\": \"f\"}</tool_call>\n";
        assert_eq!(split_tool_calls(spaced).0, " a\n\n b");
    }

    #[test]
    fn blocks_that_do_not_parse_stay_content() {
        for bad in [
            "a <tool_call>{not json}</tool_call> b",
            "<tool_call>{\"name\": 3, \"arguments\": {}}</tool_call>",
            "<tool_call>{\"name\": \"f\", \"arguments\": [1]}</tool_call>",
            "<tool_call>{\"name\": \"f\", \"arguments\": \"not an object\"}</tool_call>",
            "<tool_call>[\"f\"]</tool_call>",
            "x <tool_call>\n{\"name\": \"f\", \"arguments\": {}}",
            "</tool_call> <tool_call>",
        ] {
            assert_eq!(split_tool_calls(bad), (bad.to_string(), vec![]), "{bad}");
        }
        // A stray opening tag before a good block stays text; the good block is a call.
        let mixed =
            "<tool_call> oops <tool_call>{\"name\": \"g\", \"arguments\": \"{\\\"k\\\": 1}\"}</tool_call> after";
        assert_eq!(split_tool_calls(mixed), ("<tool_call> oops  after".to_string(), vec![call("g", r#"{"k":1}"#)]));
        let no_args = "<tool_call>{\"name\": \"f\"}</tool_call>";
        assert_eq!(split_tool_calls(no_args).1, vec![call("f", "{}")]);
    }

    #[test]
    fn a_stream_holds_back_calls_and_sends_exactly_the_content() {
        let text =
            "  Sure, I'll click.\n\n<tool_call>\n{\"name\": \"click\", \"arguments\": {\"x\": 1}}\n</tool_call>\n";
        // Every way of cutting the answer into two or three pieces gives the same result.
        let cuts: Vec<usize> = (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
        for &a in &cuts {
            for &b in cuts.iter().filter(|&&b| b >= a) {
                let mut s = ToolStream::default();
                let mut sent = String::new();
                for piece in [&text[..a], &text[a..b], &text[b..]] {
                    sent.push_str(&s.push(piece));
                    assert!(!sent.contains('<') && !sent.ends_with('\n'), "{a} {b}: {sent:?}");
                }
                let (rest, calls) = s.finish();
                sent.push_str(&rest);
                let want = ("  Sure, I'll click.", vec![call("click", r#"{"x":1}"#)]);
                assert_eq!((sent.as_str(), calls), want, "{a} {b}");
            }
        }
        // Text that only looks like the start of a tag is sent once it is not one.
        let mut s = ToolStream::default();
        assert_eq!(s.push("a <tool"), "a");
        assert_eq!(s.push("box> b"), " <toolbox> b");
        // Without calls the whole text is sent, whitespace included.
        let mut s = ToolStream::default();
        assert_eq!(s.push(" Hi \n"), " Hi");
        assert_eq!(s.finish(), (" \n".to_string(), vec![]));
        // A block that does not parse is content, sent at the end.
        let mut s = ToolStream::default();
        assert_eq!(s.push("x <tool_call>{bad}</tool_call> y"), "x");
        assert_eq!(s.finish(), (" <tool_call>{bad}</tool_call> y".to_string(), vec![]));
    }

    #[test]
    fn tools_are_checked_and_kept_as_given() {
        let good = json!([{"type": "function", "function": {"name": "click", "description": "Click.",
                           "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}}, "strict": false}},
                          {"type": "function", "function": {"name": "wait"}}]);
        assert_eq!(parse_tools(Some(&good)).unwrap(), good.as_array().unwrap().clone());
        assert_eq!(parse_tools(Some(&Value::Null)).unwrap(), Vec::<Value>::new());
        for (bad, needle) in [
            (json!({"type": "function"}), "must be a list"),
            (json!([{"name": "f"}]), "tools[0]`: unknown field `name`"),
            (json!(["f"]), "must be an object"),
            (json!([{"type": "retrieval", "function": {"name": "f"}}]), "`type` must be \"function\""),
            (json!([{"type": "function"}]), "`function` must be an object"),
            (json!([{"type": "function", "function": {"name": ""}}]), "`function.name`"),
            (json!([{"type": "function", "function": {"name": "f", "parameters": "x"}}]), "`function.parameters`"),
            (json!([{"type": "function", "function": {"name": "f", "description": 1}}]), "`function.description`"),
            (json!([{"type": "function", "function": {"name": "f", "strict": true}}]), "`function.strict`"),
            (json!([{"type": "function", "function": {"name": "f", "returns": {}}}]), "`function.returns`"),
        ] {
            let err = parse_tools(Some(&bad)).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err} should mention {needle}");
        }
    }

    #[test]
    fn tool_choice_none_hides_the_tools_and_forcing_a_call_is_refused() {
        assert!(tools_rendered(None).unwrap());
        assert!(tools_rendered(Some(&json!("auto"))).unwrap());
        assert!(!tools_rendered(Some(&json!("none"))).unwrap());
        for forced in [json!("required"), json!({"type": "function", "function": {"name": "f"}}), json!(3)] {
            let err = tools_rendered(Some(&forced)).unwrap_err();
            assert!(err.contains("`tool_choice`") && err.contains("not supported"), "{err}");
        }
    }

    #[test]
    fn earlier_calls_are_written_as_the_chat_template_writes_them() {
        let calls = json!([
            {"id": "call_1", "type": "function", "function": {"name": "click", "arguments": "{\"x\":1,\"y\": 2}"}},
            {"function": {"name": "type", "arguments": {"text": "hi", "n": [1, 2]}}}
        ]);
        let block = |n: &str, a: &str| format!("<tool_call>\n{{\"name\": \"{n}\", \"arguments\": {a}}}\n</tool_call>");
        let both =
            format!("{}\n{}", block("click", "{\"x\":1,\"y\": 2}"), block("type", "{\"text\": \"hi\", \"n\": [1, 2]}"));
        assert_eq!(tool_calls_text(&calls, false).unwrap(), both);
        assert_eq!(tool_calls_text(&calls, true).unwrap(), format!("\n{both}"));
        assert_eq!(tool_calls_text(&Value::Null, true).unwrap(), "");
        for (bad, needle) in [
            (json!([{"function": {"name": "f", "arguments": "{oops"}}]), "not valid JSON"),
            (json!([{"function": {"name": "f", "arguments": 3}}]), "JSON string or an object"),
            (json!([{"function": {"name": "f"}}]), "JSON string or an object"),
            (json!([{"function": {"arguments": "{}"}}]), "`function.name`"),
            (json!([{"type": "code", "function": {"name": "f", "arguments": "{}"}}]), "`type`"),
            (json!([{"function": {"name": "f", "arguments": "{}"}, "extra": 1}]), "`extra`"),
            (json!({"function": {}}), "must be a list"),
        ] {
            let err = tool_calls_text(&bad, false).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err} should mention {needle}");
        }
    }
}
