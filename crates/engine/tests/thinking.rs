//! A Thinking model end to end (issue 19): the tiny model in a folder with the Qwen3-VL Thinking
//! chat template and generation settings loads as a Thinking model, its prompt ids are
//! transformers' (`tests/fixtures/thinking/cases.json`), its sampling defaults are the folder's,
//! and its output (which never closes `</think>`: the tiny model writes noise) is all reasoning,
//! never answer text, through the engine, the local backend and the server.

mod common;

use std::path::{Path, PathBuf};

use common::fixtures;
use screenpilot_engine::backend::{Backend, LocalBackend};
use screenpilot_engine::load::{open, RuntimeConfig, SamplingChoice};
use screenpilot_engine::{
    ChatMessage, ContentPart, Engine, EngineConfig, EngineHandle, Event, GenerationOptions, ImageSource, Request, Role,
};
use screenpilot_model::ChatFormat;
use serde_json::Value;

/// A temporary model folder: the tiny model (weights linked, not copied), the tokenizer, the
/// Thinking template as chat_template.json and a Thinking generation_config.json.
struct ThinkingFolder(PathBuf);

impl ThinkingFolder {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("screenpilot-thinking-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let tiny = fixtures().join("tiny");
        for f in ["config.json", "preprocessor_config.json"] {
            std::fs::copy(tiny.join(f), dir.join(f)).unwrap();
        }
        link(&tiny.join("model.safetensors").canonicalize().unwrap(), &dir.join("model.safetensors"));
        std::fs::copy(fixtures().join("tokenizer/tokenizer.json"), dir.join("tokenizer.json")).unwrap();
        let template = std::fs::read_to_string(fixtures().join("thinking/chat_template.jinja")).unwrap();
        let json = serde_json::json!({ "chat_template": template }).to_string();
        std::fs::write(dir.join("chat_template.json"), json).unwrap();
        std::fs::write(
            dir.join("generation_config.json"),
            r#"{"do_sample": true, "eos_token_id": [151645, 151643], "pad_token_id": 151643,
                "temperature": 0.6, "top_k": 20, "top_p": 0.95, "repetition_penalty": 1.0}"#,
        )
        .unwrap();
        Self(dir)
    }
}

impl Drop for ThinkingFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(unix)]
fn link(from: &Path, to: &Path) {
    std::os::unix::fs::symlink(from, to).unwrap();
}

#[cfg(not(unix))]
fn link(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap();
}

fn fixture_case(name: &str) -> Value {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(fixtures().join("thinking/cases.json")).unwrap()).unwrap();
    v["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone()
}

/// The fixture's single-turn question about `a_120x90.png`, greedy.
fn question(max_tokens: usize) -> Request {
    let image = ImageSource::Path(fixtures().join("images/a_120x90.png"));
    let parts = vec![ContentPart::Image(image), ContentPart::Text("What is on this screen?".into())];
    let options = GenerationOptions { max_tokens, ..GenerationOptions::default() };
    Request { messages: vec![ChatMessage { role: Role::User, parts }], options, tools: Vec::new() }
}

#[test]
fn the_folder_loads_as_a_thinking_model_with_its_own_sampling_defaults() {
    let folder = ThinkingFolder::new("load");
    let l = open(&folder.0, &RuntimeConfig::default()).unwrap();
    assert_eq!(l.tok.chat_format(), ChatFormat::Thinking);
    let o = l.defaults.options(&SamplingChoice { max_tokens: 9, ..SamplingChoice::default() });
    assert_eq!((o.temperature, o.top_p, o.top_k), (0.6, 0.95, 20), "the folder's settings are the defaults");
    assert!(l.tok.is_end(151643) && l.tok.is_end(151645));
}

#[test]
fn prompt_ids_are_transformers_and_unclosed_reasoning_is_never_answer() {
    let folder = ThinkingFolder::new("engine");
    let cfg = EngineConfig { trace_logits: 1, ..EngineConfig::default() };
    let mut engine = Engine::load(&folder.0, screenpilot_model::DType::F32, &screenpilot_model::Device::Cpu, cfg).unwrap();
    let req = engine.validate(question(12)).unwrap();
    let mut events = Vec::new();
    let done = engine.run(&req, &mut |e| events.push(e.clone())).unwrap();
    let want: Vec<u32> =
        fixture_case("single_turn_image")["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let prompt = events.iter().find_map(|e| match e {
        Event::Token(t) => t.logits.as_ref().and_then(|l| l.prompt.as_ref()).map(|p| p.token_ids.clone()),
        _ => None,
    });
    assert_eq!(prompt.unwrap(), want);
    let (mut answer, mut reasoning) = (String::new(), String::new());
    for e in &events {
        if let Event::Token(t) = e {
            answer.push_str(&t.text);
            reasoning.push_str(&t.reasoning);
        }
    }
    assert!(!done.text.contains("</think>"), "the tiny model closed its reasoning: pick another prompt");
    assert!(!done.text.is_empty());
    assert_eq!((answer.as_str(), reasoning.as_str()), ("", done.text.as_str()));
}

#[test]
fn the_local_backend_gives_no_answer_text_for_unclosed_reasoning() {
    let folder = ThinkingFolder::new("backend");
    let engine = Engine::load(&folder.0, screenpilot_model::DType::F32, &screenpilot_model::Device::Cpu, EngineConfig::default())
        .unwrap();
    let backend = LocalBackend::new(EngineHandle::spawn(engine).unwrap());
    let mut pieces = Vec::new();
    let reply = backend.chat(question(6), &mut |t| pieces.push(t.to_string())).unwrap();
    assert_eq!(reply.text, "");
    assert!(pieces.is_empty(), "{pieces:?}");
    assert!(!reply.reasoning.is_empty());
}
