//! A Thinking model's prompts (issue 19): our renderer's ids equal transformers' rendering of the
//! Qwen3-VL Thinking chat template (`tests/fixtures/thinking/cases.json`, made by
//! `tools/make_thinking_fixture.py`), and a model folder carrying that template is recognised.

use std::path::PathBuf;

use screenpilot_model::prompt::{Message, Part, Role};
use screenpilot_model::{ChatFormat, ModelFolder, Tokenizer};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn tokenizer(format: ChatFormat) -> Tokenizer {
    let mut tok = Tokenizer::from_file(&fixtures().join("tokenizer/tokenizer.json"))
        .expect("run scripts/setup.sh to fetch the tokenizer");
    tok.set_chat_format(format);
    tok
}

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join("thinking/cases.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["cases"].as_array().unwrap().clone()
}

/// A case's messages in our form; each image becomes the tokens of the next grid (t*h*w / 4).
fn messages(case: &Value) -> Vec<Message> {
    let mut grids = case["image_grid_thw"].as_array().unwrap().iter().map(|g| {
        let g: Vec<usize> = g.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        g[0] * g[1] * g[2] / 4
    });
    let role = |r: &str| match r {
        "system" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        other => panic!("role {other}"),
    };
    let mut out = Vec::new();
    for m in case["messages"].as_array().unwrap() {
        let parts = match &m["content"] {
            Value::String(s) => vec![Part::Text(s.clone())],
            Value::Array(items) => items
                .iter()
                .map(|it| match it["type"].as_str() {
                    Some("image") => Part::Image { tokens: grids.next().expect("a grid per image") },
                    _ => Part::Text(it["text"].as_str().unwrap().to_string()),
                })
                .collect(),
            other => panic!("content {other}"),
        };
        out.push(Message { role: role(m["role"].as_str().unwrap()), parts });
    }
    out
}

#[test]
fn prompt_ids_equal_transformers_thinking_template() {
    let tok = tokenizer(ChatFormat::Thinking);
    let cases = cases();
    assert_eq!(cases.len(), 4);
    for case in &cases {
        let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let tools = case["tools"].as_array().unwrap().clone();
        let gen = case["add_generation_prompt"].as_bool().unwrap();
        let got = tok.encode_chat(&messages(case), &tools, gen).unwrap();
        assert_eq!(got, want, "case {}", case["name"]);
    }
}

#[test]
fn the_instruct_format_renders_those_conversations_differently() {
    // The fixture would pass for the wrong reason if both formats wrote the same ids.
    let tok = tokenizer(ChatFormat::Instruct);
    for case in cases() {
        let want: Vec<u32> = case["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let tools = case["tools"].as_array().unwrap().clone();
        let got = tok.encode_chat(&messages(&case), &tools, case["add_generation_prompt"].as_bool().unwrap()).unwrap();
        assert_ne!(got, want, "case {}", case["name"]);
    }
}

#[test]
fn a_folder_with_the_thinking_template_is_a_thinking_model() {
    let dir = std::env::temp_dir().join(format!("screenpilot-thinking-folder-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let tiny = fixtures().join("tiny");
    for f in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(tiny.join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("model.safetensors"), b"").unwrap();
    std::fs::copy(fixtures().join("tokenizer/tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let template = std::fs::read_to_string(fixtures().join("thinking/chat_template.jinja")).unwrap();
    std::fs::write(dir.join("chat_template.json"), serde_json::json!({ "chat_template": template }).to_string()).unwrap();
    std::fs::write(
        dir.join("generation_config.json"),
        r#"{"do_sample": true, "eos_token_id": [151645, 151643], "temperature": 1.0, "top_k": 20, "top_p": 0.95}"#,
    )
    .unwrap();
    let folder = ModelFolder::open(&dir).unwrap();
    assert_eq!(folder.chat_format, ChatFormat::Thinking);
    assert_eq!((folder.generation.do_sample, folder.generation.top_p, folder.generation.top_k), (Some(true), Some(0.95), Some(20)));
    // The tiny model's own folder has no template: Instruct.
    assert_eq!(ModelFolder::open(&tiny).unwrap().chat_format, ChatFormat::Instruct);
    std::fs::remove_dir_all(&dir).unwrap();
}
