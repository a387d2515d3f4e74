//! Unit tests of `chat_template`: recognising the flavour, and the Thinking rules for earlier
//! turns (the ids against transformers are in `tests/thinking_template.rs`).

use super::*;
use crate::prompt::render;

fn thinking(messages: &[Message], gen: bool) -> String {
    render_segments_for(ChatFormat::Thinking, messages, &[], gen).iter().map(Segment::text).collect()
}

#[test]
fn a_template_whose_generation_prompt_opens_think_is_thinking() {
    assert_eq!(ChatFormat::detect("{{- '<|im_start|>assistant\\n<think>\\n' }}"), ChatFormat::Thinking);
    assert_eq!(ChatFormat::detect("{{- '<|im_start|>assistant\\n' }}"), ChatFormat::Instruct);
    // Instruct templates mention reasoning_content too (they drop it); that alone is no sign.
    assert_eq!(ChatFormat::detect("{%- if message.reasoning_content %}{% endif %}"), ChatFormat::Instruct);
}

#[test]
fn the_folder_template_is_found_in_each_of_its_three_homes() {
    let dir = std::env::temp_dir().join(format!("sp-chat-format-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let thinking = "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}{%- endif %}";
    assert_eq!(ChatFormat::from_folder(&dir).unwrap(), ChatFormat::Instruct, "no template");
    let cfg = serde_json::json!({"chat_template": thinking}).to_string();
    std::fs::write(dir.join("tokenizer_config.json"), &cfg).unwrap();
    assert_eq!(ChatFormat::from_folder(&dir).unwrap(), ChatFormat::Thinking, "tokenizer_config.json");
    // chat_template.json comes before tokenizer_config.json, chat_template.jinja before both.
    std::fs::write(dir.join("chat_template.json"), r#"{"chat_template": "{{- '<|im_start|>assistant\\n' }}"}"#).unwrap();
    assert_eq!(ChatFormat::from_folder(&dir).unwrap(), ChatFormat::Instruct, "chat_template.json");
    std::fs::write(dir.join("chat_template.jinja"), thinking).unwrap();
    assert_eq!(ChatFormat::from_folder(&dir).unwrap(), ChatFormat::Thinking, "chat_template.jinja");
    std::fs::remove_file(dir.join("chat_template.jinja")).unwrap();
    std::fs::write(dir.join("chat_template.json"), "{not json").unwrap();
    assert!(matches!(ChatFormat::from_folder(&dir), Err(ModelError::Config(m)) if m.contains("chat_template.json")));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_generation_prompt_opens_the_reasoning() {
    let s = thinking(&[Message::text(Role::User, "Hi")], true);
    assert_eq!(s, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n");
    assert!(render(&[Message::text(Role::User, "Hi")], &[], true).ends_with("assistant\n"), "Instruct unchanged");
}

#[test]
fn an_answer_before_the_last_query_loses_its_reasoning() {
    let msgs = [
        Message::text(Role::User, "a"),
        Message::text(Role::Assistant, "<think>\nplan\n</think>\n\nanswer"),
        Message::text(Role::User, "b"),
    ];
    let s = thinking(&msgs, true);
    assert!(s.contains("<|im_start|>assistant\nanswer<|im_end|>"), "{s}");
    assert!(!s.contains("plan"), "{s}");
}

#[test]
fn steps_after_the_last_query_keep_reasoning_and_the_last_turn_always_has_a_block() {
    let msgs = [
        Message::text(Role::User, "a"),
        Message::text(Role::Assistant, "\nwhy\n\n</think>\n\n\ncall"),
        Message::text(Role::Tool, "ok"),
        Message::text(Role::Assistant, "no reasoning"),
        Message::text(Role::Tool, "ok"),
        Message::text(Role::Assistant, "done"),
    ];
    let s = thinking(&msgs, false);
    assert!(s.contains("assistant\n<think>\nwhy\n</think>\n\ncall<|im_end|>"), "{s}");
    assert!(s.contains("assistant\nno reasoning<|im_end|>"), "{s}");
    assert!(s.ends_with("assistant\n<think>\n\n</think>\n\ndone<|im_end|>\n"), "{s}");
}

#[test]
fn a_user_turn_of_tool_responses_is_not_the_last_query() {
    let msgs = [
        Message::text(Role::User, "task"),
        Message::text(Role::Assistant, "r</think>call"),
        Message::text(Role::User, "<tool_response>\nx\n</tool_response>"),
    ];
    assert_eq!(last_query_index(&msgs), 0);
    assert!(thinking(&msgs, true).contains("assistant\n<think>\nr\n</think>\n\ncall"));
}

#[test]
fn split_turn_takes_the_first_close_for_reasoning_and_the_last_for_the_answer() {
    assert_eq!(split_turn("<think>\na\n</think>b</think>\nc"), ("a".into(), "c".into()));
    assert_eq!(split_turn("x<think>y"), (String::new(), "x<think>y".into()));
}

#[test]
fn user_text_cannot_open_a_reasoning_block() {
    let segs = render_segments_for(ChatFormat::Thinking, &[Message::text(Role::User, "<think>x</think>")], &[], true);
    assert!(segs.contains(&Segment::Text { text: "<think>x</think>".into(), added: crate::prompt::AddedTokens::None }));
}
