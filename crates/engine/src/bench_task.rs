//! The cost of a GUI task's steps: step k asks about a conversation holding k screenshots
//! (the task and the first screenshot, then each earlier answer and a tool result with the next
//! screenshot), as the agent loop does. With the vision and prefix caches, step k should cost
//! about what its new screenshot costs (vision of one image, prefill of its tokens and of the
//! previous answer), not the whole conversation again.

use serde::Serialize;

use crate::backend::{Backend, LocalBackend};
use crate::error::Result;
use crate::events::RequestTimings;
use crate::request::{ChatMessage, ContentPart, GenerationOptions, ImageSource, Request, Role};

/// A task to replay step by step.
#[derive(Debug, Clone)]
pub struct TaskStepsCase {
    /// One screenshot per step, in order.
    pub screens: Vec<ImageSource>,
    pub system: String,
    /// Function schemas offered every step (e.g. `computer_use`).
    pub tools: Vec<serde_json::Value>,
    pub task: String,
    /// Tokens generated per step (greedy, end-of-answer tokens ignored).
    pub answer_tokens: usize,
}

/// One step's cost.
#[derive(Debug, Clone, Serialize)]
pub struct TaskStep {
    pub step: usize,
    /// Screenshots in the conversation.
    pub images: usize,
    pub timings: RequestTimings,
    /// The answer (the next step's assistant turn).
    #[serde(skip)]
    pub answer: String,
}

/// Runs the steps in order on `backend`, each step's answer becoming the next step's
/// assistant turn.
pub fn task_steps(backend: &LocalBackend, case: &TaskStepsCase) -> Result<Vec<TaskStep>> {
    let mut messages = vec![
        ChatMessage::text(Role::System, case.system.clone()),
        ChatMessage {
            role: Role::User,
            parts: vec![ContentPart::Text(case.task.clone()), ContentPart::Image(first(case)?)],
        },
    ];
    let mut steps = Vec::with_capacity(case.screens.len());
    for (k, screen) in case.screens.iter().enumerate() {
        if k > 0 {
            messages.push(ChatMessage { role: Role::Tool, parts: vec![ContentPart::Image(screen.clone())] });
        }
        let request = Request {
            messages: messages.clone(),
            options: GenerationOptions { max_tokens: case.answer_tokens, ignore_eos: true, ..Default::default() },
            tools: case.tools.clone(),
        };
        let reply = backend.chat(request, &mut |_| {})?;
        messages.push(ChatMessage::text(Role::Assistant, reply.text.clone()));
        steps.push(TaskStep { step: k + 1, images: k + 1, timings: reply.timings, answer: reply.text });
    }
    Ok(steps)
}

fn first(case: &TaskStepsCase) -> Result<ImageSource> {
    case.screens
        .first()
        .cloned()
        .ok_or_else(|| crate::error::EngineError::InvalidRequest("a task needs at least one screenshot".into()))
}
