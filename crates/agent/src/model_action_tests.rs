//! Tests of the `computer_use` tool-call parser, including property tests over arbitrary input.

use proptest::prelude::*;

use super::*;
use crate::grounding::parse_grounding;

fn one(text: &str) -> ModelAction {
    let mut v = parse_tool_calls(text).unwrap();
    assert_eq!(v.len(), 1, "{text}");
    v.remove(0)
}

fn call(args: &str) -> String {
    format!("<tool_call>\n{{\"name\": \"computer_use\", \"arguments\": {args}}}\n</tool_call>")
}

#[test]
fn parses_every_computer_use_action() {
    let p = |x, y| Some(Point::new(x, y));
    let cases: Vec<(&str, ModelAction)> = vec![
        (r#"{"action": "key", "keys": ["ctrl", "Return"]}"#, ModelAction::Key { keys: vec![Key::Control, Key::Return] }),
        (r#"{"action": "type", "text": "héllo 世界"}"#, ModelAction::Type { text: "héllo 世界".into() }),
        (r#"{"action": "mouse_move", "coordinate": [1, 2]}"#, ModelAction::MouseMove { coordinate: Point::new(1.0, 2.0) }),
        (r#"{"action": "left_click", "coordinate": [3, 4]}"#, ModelAction::Click { button: MouseButton::Left, count: 1, coordinate: p(3.0, 4.0) }),
        (r#"{"action": "right_click", "coordinate": [5, 6]}"#, ModelAction::Click { button: MouseButton::Right, count: 1, coordinate: p(5.0, 6.0) }),
        (r#"{"action": "middle_click", "coordinate": [7, 8]}"#, ModelAction::Click { button: MouseButton::Middle, count: 1, coordinate: p(7.0, 8.0) }),
        (r#"{"action": "double_click", "coordinate": [9, 10]}"#, ModelAction::Click { button: MouseButton::Left, count: 2, coordinate: p(9.0, 10.0) }),
        (r#"{"action": "triple_click", "coordinate": [11, 12]}"#, ModelAction::Click { button: MouseButton::Left, count: 3, coordinate: p(11.0, 12.0) }),
        (r#"{"action": "left_click_drag", "coordinate": [13, 14]}"#, ModelAction::LeftClickDrag { coordinate: Point::new(13.0, 14.0) }),
        (r#"{"action": "scroll", "pixels": -300}"#, ModelAction::Scroll { horizontal: false, pixels: -300, coordinate: None }),
        (r#"{"action": "hscroll", "pixels": 100, "coordinate": [500, 500]}"#, ModelAction::Scroll { horizontal: true, pixels: 100, coordinate: p(500.0, 500.0) }),
        (r#"{"action": "wait", "time": 2.5}"#, ModelAction::Wait { seconds: 2.5 }),
        (r#"{"action": "terminate", "status": "success"}"#, ModelAction::Terminate { status: TerminateStatus::Success }),
        (r#"{"action": "terminate", "status": "failure"}"#, ModelAction::Terminate { status: TerminateStatus::Failure }),
        (r#"{"action": "answer", "text": "42"}"#, ModelAction::Answer { text: "42".into() }),
    ];
    for (args, want) in cases {
        assert_eq!(one(&call(args)), want, "{args}");
    }
}

#[test]
fn several_tool_calls_with_thinking_text_and_trailing_commas() {
    let t = format!(
        "Thought: click OK first.\n{}\nthen\n{}",
        call(r#"{"action": "left_click", "coordinate": [100, 200],}"#),
        call(r#"{"action": "type", "text": "done"}"#)
    );
    let v = parse_tool_calls(&t).unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[1], ModelAction::Type { text: "done".into() });
}

#[test]
fn missing_closing_tag_and_string_arguments_are_tolerated() {
    let t = "<tool_call>\n{\"name\": \"computer_use\", \"arguments\": \"{\\\"action\\\": \\\"wait\\\", \\\"time\\\": 1}\"}";
    assert_eq!(one(t), ModelAction::Wait { seconds: 1.0 });
}

#[test]
fn bare_json_call_without_tags_is_accepted() {
    let t = r#"```json
{"name": "computer_use", "arguments": {"action": "key", "keys": ["esc"]}}
```"#;
    assert_eq!(one(t), ModelAction::Key { keys: vec![Key::Escape] });
}

#[test]
fn no_tool_call_is_an_empty_list() {
    assert_eq!(parse_tool_calls("The answer is 42.").unwrap(), vec![]);
}

#[test]
fn bad_calls_are_clear_errors() {
    let bad = [
        (call(r#"{"action": "fly"}"#), "unknown computer_use action"),
        (call(r#"{"action": "left_click", "coordinate": [1]}"#), "coordinate must be"),
        (call(r#"{"action": "left_click", "coordinate": [1, 2000]}"#), "outside the relative range"),
        (call(r#"{"action": "key", "keys": ["ctrl", "hyper"]}"#), "unknown key name"),
        (call(r#"{"action": "terminate", "status": "maybe"}"#), "success"),
        (call(r#"{"action": "scroll"}"#), "pixels"),
        ("<tool_call>{\"name\": \"browser\", \"arguments\": {}}</tool_call>".to_string(), "unknown tool"),
        ("<tool_call> not json </tool_call>".to_string(), "no JSON"),
    ];
    for (text, msg) in bad {
        let err = parse_tool_calls(&text).unwrap_err().to_string();
        assert!(err.contains(msg), "{text} -> {err}");
    }
}

fn json_fragment() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "<tool_call>", "</tool_call>", "{", "}", "[", "]", ",", "\"", "\\", ":", "```json", "\"name\"",
        "\"computer_use\"", "\"arguments\"", "\"action\"", "\"left_click\"", "\"coordinate\"", "1e999",
        "-5", "1000", "\"bbox_2d\"", "\"point_2d\"", "\"label\"", "null", "é", "\u{0}", " ",
    ])
    .prop_map(str::to_owned)
}

proptest! {
    #[test]
    fn parsers_never_panic_on_arbitrary_strings(s in any::<String>()) {
        let _ = parse_tool_calls(&s);
        let _ = parse_grounding(&s);
    }

    #[test]
    fn parsers_never_panic_on_json_like_soup(parts in prop::collection::vec(json_fragment(), 0..60)) {
        let s = parts.concat();
        let _ = parse_tool_calls(&s);
        let _ = parse_grounding(&s);
    }

    #[test]
    fn any_in_range_click_round_trips(x in 0u32..=1000, y in 0u32..=1000, noise in "[^<{\\[]{0,40}") {
        let t = format!("{noise}{}", call(&format!(r#"{{"action": "left_click", "coordinate": [{x}, {y}]}}"#)));
        let want = ModelAction::Click { button: MouseButton::Left, count: 1, coordinate: Some(Point::new(f64::from(x), f64::from(y))) };
        prop_assert_eq!(parse_tool_calls(&t).unwrap(), vec![want]);
    }
}
