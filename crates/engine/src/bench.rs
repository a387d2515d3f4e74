//! For benchmarks: a first question about an image, then a second, different question about the
//! same image in a new conversation. The second one's timings show the vision-cache hit, the
//! prompt tokens reused from the prefix cache, and the smaller time to first token.

use serde::Serialize;

use crate::engine::Engine;
use crate::error::Result;
use crate::events::RequestTimings;
use crate::request::{ChatMessage, ContentPart, GenerationOptions, ImageSource, Request, Role};

/// The two questions to ask about one image.
#[derive(Debug, Clone)]
pub struct SecondQuestionCase {
    pub image: ImageSource,
    pub system: Option<String>,
    pub first: String,
    pub second: String,
    pub max_tokens: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SecondQuestionReport {
    pub first: RequestTimings,
    pub second: RequestTimings,
}

impl SecondQuestionReport {
    /// How many times faster the second question reached its first token.
    pub fn ttft_speedup(&self) -> f64 {
        if self.second.ttft_ms > 0.0 {
            self.first.ttft_ms / self.second.ttft_ms
        } else {
            f64::INFINITY
        }
    }
}

fn ask(case: &SecondQuestionCase, question: &str) -> Request {
    let mut messages = Vec::new();
    if let Some(s) = &case.system {
        messages.push(ChatMessage::text(Role::System, s.clone()));
    }
    messages.push(ChatMessage {
        role: Role::User,
        parts: vec![ContentPart::Image(case.image.clone()), ContentPart::Text(question.to_string())],
    });
    Request { messages, options: GenerationOptions { max_tokens: case.max_tokens, ..Default::default() } }
}

/// Asks both questions, in order, on `engine` (whose caches decide how cheap the second is).
pub fn second_question(engine: &mut Engine, case: &SecondQuestionCase) -> Result<SecondQuestionReport> {
    let first = engine.validate(ask(case, &case.first))?;
    let first = engine.run(&first, &mut |_| {})?.timings;
    let second = engine.validate(ask(case, &case.second))?;
    let second = engine.run(&second, &mut |_| {})?.timings;
    Ok(SecondQuestionReport { first, second })
}
