//! Lenient extraction of JSON values from free model text: code fences, prose around
//! the JSON, several values in a row, and trailing commas are tolerated. Never panics;
//! work is bounded by [`MAX_INPUT_BYTES`] and [`MAX_CANDIDATES`].

use serde_json::Value;

use crate::error::{AgentError, Result};

/// Longest model output we try to parse.
pub const MAX_INPUT_BYTES: usize = 256 * 1024;
/// At most this many opening brackets are tried as the start of a JSON value.
pub const MAX_CANDIDATES: usize = 512;

/// Refuses inputs over [`MAX_INPUT_BYTES`].
pub fn check_len(text: &str) -> Result<()> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(AgentError::Malformed(format!(
            "model output is {} bytes, more than the {MAX_INPUT_BYTES} we parse",
            text.len()
        )));
    }
    Ok(())
}

/// All top-level JSON objects/arrays found in `text`, in order, non-overlapping.
pub fn extract_json_values(text: &str) -> Vec<Value> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut tries = 0;
    while pos < bytes.len() && tries < MAX_CANDIDATES {
        let Some(start) = bytes[pos..].iter().position(|&b| b == b'{' || b == b'[').map(|i| i + pos) else {
            break;
        };
        tries += 1;
        match scan_balanced(bytes, start).and_then(|end| text.get(start..end).map(|s| (end, s))) {
            Some((end, slice)) => match serde_json::from_str::<Value>(&remove_trailing_commas(slice)) {
                Ok(v) => {
                    out.push(v);
                    pos = end;
                }
                Err(_) => pos = start + 1,
            },
            None => pos = start + 1,
        }
    }
    out
}

/// The first JSON value in `text`, if any.
pub fn first_json_value(text: &str) -> Option<Value> {
    extract_json_values(text).into_iter().next()
}

/// Index one past the bracket that closes the one at `start`, skipping string contents.
fn scan_balanced(bytes: &[u8], start: usize) -> Option<usize> {
    let mut stack: Vec<u8> = Vec::new();
    let mut in_string = false;
    let mut escaped = false;
    for (i, &b) in bytes.iter().enumerate().skip(start) {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' => stack.push(b'}'),
            b'[' => stack.push(b']'),
            b'}' | b']' => {
                if stack.pop() != Some(b) {
                    return None;
                }
                if stack.is_empty() {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// Drops commas (outside strings) that are followed only by whitespace and a closing bracket.
fn remove_trailing_commas(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    let chars = json.char_indices();
    for (i, c) in chars {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if c == ',' {
            let rest = json.get(i + 1..).unwrap_or("").trim_start();
            if rest.starts_with('}') || rest.starts_with(']') {
                continue;
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_json_inside_a_fence_with_prose_around_it() {
        let t = "Sure!\n```json\n[{\"a\": 1}]\n```\nDone.";
        assert_eq!(extract_json_values(t), vec![serde_json::json!([{"a": 1}])]);
    }

    #[test]
    fn tolerates_trailing_commas_but_not_inside_strings() {
        let t = r#"{"a": [1, 2,], "b": "x,]",}"#;
        assert_eq!(extract_json_values(t), vec![serde_json::json!({"a": [1, 2], "b": "x,]"})]);
    }

    #[test]
    fn skips_broken_outer_value_and_finds_inner_one() {
        let t = r#"[oops {"k": "v"} ]"#;
        assert_eq!(extract_json_values(t), vec![serde_json::json!({"k": "v"})]);
    }

    #[test]
    fn returns_several_values_in_order() {
        let t = r#"{"a":1} and then {"b":2}"#;
        assert_eq!(extract_json_values(t).len(), 2);
    }

    #[test]
    fn unbalanced_input_yields_nothing() {
        assert!(extract_json_values("{\"a\": [1, 2").is_empty());
    }
}
