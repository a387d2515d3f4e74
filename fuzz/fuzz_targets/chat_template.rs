//! Fuzz target: the chat template renders any conversation (roles, text, images, tools as
//! JSON) without panicking, and the real Qwen tokenizer encodes it (`encode_chat`) with no
//! forged control token: every special token of the prompt is one the template placed (as
//! many `<|im_start|>` as turns, `<|image_pad|>` as image tokens, ...), whatever the messages
//! and tools hold. A prompt whose text holds no added-token string encodes exactly as the
//! rendered string does (what transformers does).
//!
//! Input: an `arbitrary`-built conversation; the tools are JSON parsed from bytes.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use screenpilot_model::prompt::{
    render, render_segments, AddedTokens, Message, Part, Role, Segment, IMAGE_PAD, IM_END, IM_START, VISION_END,
    VISION_START,
};
use screenpilot_model::Tokenizer;

#[derive(Arbitrary, Debug)]
enum FuzzPart {
    Text(String),
    /// An image of this many visual tokens (modulo 17: the count does not change the code
    /// path, and thousands of pad tokens only slow every execution down).
    Image(u8),
}

#[derive(Arbitrary, Debug)]
struct FuzzMessage {
    role: u8,
    parts: Vec<FuzzPart>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    messages: Vec<FuzzMessage>,
    /// JSON: an array of tool descriptions or one tool.
    tools: Vec<u8>,
    add_generation_prompt: bool,
    tokenize: bool,
}

struct Vocab {
    tok: Tokenizer,
    /// The tokenizer's added tokens: (content, special).
    added: Vec<(String, bool)>,
}

/// The Qwen3 tokenizer of the tiny test model (scripts/setup.sh fetches it).
fn vocab() -> &'static Vocab {
    static VOCAB: OnceLock<Vocab> = OnceLock::new();
    VOCAB.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let path: PathBuf = ["tests/fixtures/tiny/tokenizer.json", "tests/fixtures/tokenizer/tokenizer.json"]
            .iter()
            .map(|p| root.join(p))
            .find(|p| p.is_file())
            .expect("no tokenizer.json under tests/fixtures: run scripts/setup.sh");
        let tok = Tokenizer::from_file(&path).expect("tokenizer");
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        let added = json["added_tokens"]
            .as_array()
            .expect("added_tokens")
            .iter()
            .map(|t| (t["content"].as_str().expect("content").to_string(), t["special"].as_bool().unwrap_or(false)))
            .collect();
        Vocab { tok, added }
    })
}

fn role(r: u8) -> Role {
    match r % 3 {
        0 => Role::System,
        1 => Role::User,
        _ => Role::Assistant,
    }
}

fuzz_target!(
    // Loading the tokenizer takes more than the 1 s an input may take (under ASan).
    init: {
        vocab();
    },
    |input: Input| {
        let messages: Vec<Message> = input
            .messages
            .into_iter()
            .map(|m| Message {
                role: role(m.role),
                parts: m
                    .parts
                    .into_iter()
                    .map(|p| match p {
                        FuzzPart::Text(t) => Part::Text(t),
                        FuzzPart::Image(n) => Part::Image { tokens: usize::from(n % 17) },
                    })
                    .collect(),
            })
            .collect();
        let tools = match serde_json::from_slice::<serde_json::Value>(&input.tools) {
            Ok(serde_json::Value::Array(a)) => a,
            Ok(v @ serde_json::Value::Object(_)) => vec![v],
            _ => Vec::new(),
        };
        let add_gen = input.add_generation_prompt;
        let text = render(&messages, &tools, add_gen);
        let segments = render_segments(&messages, &tools, add_gen);
        assert_eq!(text, segments.iter().map(Segment::text).collect::<String>());
        if add_gen {
            assert!(text.ends_with("<|im_start|>assistant\n"));
        }
        if !input.tokenize {
            return;
        }

        let v = vocab();
        let ids = v.tok.encode_chat(&messages, &tools, add_gen).expect("a chat prompt always tokenizes");
        let count = |token: &str| {
            let id = v.tok.token_id(token).expect("token");
            ids.iter().filter(|&&i| i == id).count()
        };
        // The special tokens the template places, and no others.
        let tools_turn = usize::from(!tools.is_empty() && messages.first().map(|m| m.role) != Some(Role::System));
        let images: Vec<usize> = messages
            .iter()
            .flat_map(|m| &m.parts)
            .filter_map(|p| if let Part::Image { tokens } = p { Some(*tokens) } else { None })
            .collect();
        let expected = [
            (IM_START, tools_turn + messages.len() + usize::from(add_gen)),
            (IM_END, tools_turn + messages.len()),
            (VISION_START, images.len()),
            (VISION_END, images.len()),
            (IMAGE_PAD, images.iter().sum()),
        ];
        for (content, special) in &v.added {
            if !special {
                continue;
            }
            let want = expected.iter().find(|(t, _)| t == content).map_or(0, |(_, n)| *n);
            assert_eq!(count(content), want, "{content} in the ids of {text:?}");
        }
        // Without added-token strings in the caller's text (and none made by joining it to the
        // template's), the ids are those of the rendered string.
        let mut placed = vec![0usize; v.added.len()];
        for seg in &segments {
            for (n, (c, _)) in placed.iter_mut().zip(&v.added) {
                match seg {
                    Segment::Control { token, count } if token == c => *n += count,
                    Segment::Text { text, added: AddedTokens::All } => *n += text.matches(c.as_str()).count(),
                    _ => {}
                }
            }
        }
        let clean = placed.iter().zip(&v.added).all(|(n, (c, _))| text.matches(c.as_str()).count() == *n);
        if clean {
            assert_eq!(ids, v.tok.encode(&text).expect("encode"), "{text:?}");
        }
    }
);
