//! The answers' shapes for a Thinking model: its reasoning as `reasoning_content`, apart from
//! `content` and never parsed for tool calls, in one JSON object and streamed.

use super::*;
use crate::events::TokenEvent;

fn meta() -> Meta {
    Meta { id: "chatcmpl-7".into(), serial: 7, created: 0, model: "m".into() }
}

fn token(reasoning: &str, text: &str) -> Event {
    Event::Token(TokenEvent { id: 1, text: text.into(), reasoning: reasoning.into(), logits: None })
}

fn events(list: Vec<Event>) -> (Event, EventStream) {
    let mut it = list.into_iter();
    let first = it.next().unwrap();
    (first, EventStream::replaying(it.collect()))
}

async fn body(r: Response) -> String {
    String::from_utf8(axum::body::to_bytes(r.into_body(), usize::MAX).await.unwrap().to_vec()).unwrap()
}

const DECOY: &str = "<tool_call>\n{\"name\": \"click\", \"arguments\": {\"x\": 1}}\n</tool_call>";
const CALL: &str = "<tool_call>\n{\"name\": \"click\", \"arguments\": {\"x\": 2}}\n</tool_call>";

/// Reasoning that weighs a decoy call, then an answer (as the engine divides them).
fn thinking(answer: &str) -> Vec<Event> {
    vec![
        token("I could call ", ""),
        token(DECOY, ""),
        token(" but no.\n", "\n\n"),
        token("", answer),
        Event::Finished(FinishReason::Stop),
    ]
}

async fn message(list: Vec<Event>, tools: bool) -> Value {
    let (first, ev) = events(list);
    let v: Value = serde_json::from_str(&body(collect(meta(), first, ev, tools).await.unwrap()).await).unwrap();
    v["choices"][0].clone()
}

#[tokio::test]
async fn reasoning_is_returned_apart_and_its_tool_call_is_not_a_call() {
    let c = message(thinking("Done."), true).await;
    assert_eq!(c["message"]["reasoning_content"], format!("I could call {DECOY} but no.\n"));
    assert_eq!(c["message"]["content"].as_str().unwrap().trim(), "Done.");
    assert!(c["message"].get("tool_calls").is_none(), "{c}");
    assert_eq!(c["finish_reason"], "stop");
    // The answer's own call is one.
    let c = message(thinking(CALL), true).await;
    assert_eq!(c["message"]["tool_calls"].as_array().unwrap().len(), 1, "{c}");
    assert_eq!(c["message"]["tool_calls"][0]["function"]["arguments"], "{\"x\":2}");
    assert_eq!(c["finish_reason"], "tool_calls");
}

#[tokio::test]
async fn an_answer_without_reasoning_has_no_reasoning_field_and_unclosed_reasoning_no_content() {
    let c = message(vec![token("", "Hi."), Event::Finished(FinishReason::Stop)], false).await;
    assert_eq!(c["message"], json!({"role": "assistant", "content": "Hi."}));
    let c = message(vec![token("still thinking", ""), Event::Finished(FinishReason::Length)], false).await;
    assert_eq!(c["message"]["reasoning_content"], "still thinking");
    assert_eq!(c["message"]["content"], Value::Null);
    assert_eq!(c["finish_reason"], "length");
}

/// The deltas of a streamed answer, in order.
async fn deltas(list: Vec<Event>, tools: bool) -> Vec<Value> {
    let (first, ev) = events(list);
    let text = body(stream(meta(), first, ev, false, tools)).await;
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str::<Value>(d).unwrap()["choices"][0]["delta"].clone())
        .collect()
}

#[tokio::test]
async fn streamed_reasoning_comes_as_reasoning_content_deltas_before_the_content() {
    let d = deltas(thinking(CALL), true).await;
    let field = |k: &str| -> String { d.iter().filter_map(|x| x[k].as_str()).collect() };
    assert_eq!(field("reasoning_content"), format!("I could call {DECOY} but no.\n"));
    assert!(!field("content").contains("tool_call"), "{d:?}");
    let calls: Vec<&Value> = d.iter().filter(|x| x.get("tool_calls").is_some()).collect();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["tool_calls"][0]["function"]["arguments"], "{\"x\":2}");
    let last_reasoning = |d: &[Value]| d.iter().rposition(|x| x.get("reasoning_content").is_some()).unwrap();
    assert!(last_reasoning(&d) < d.iter().position(|x| x.get("tool_calls").is_some()).unwrap(), "{d:?}");
    let d = deltas(thinking("Done."), false).await;
    let first_content = d.iter().position(|x| x["content"].as_str().is_some_and(|c| !c.is_empty())).unwrap();
    assert!(last_reasoning(&d) < first_content, "{d:?}");
    assert_eq!(d.iter().filter_map(|x| x["content"].as_str()).collect::<String>(), "\n\nDone.");
    // An Instruct answer streams no reasoning at all.
    let d = deltas(vec![token("", "Hi."), Event::Finished(FinishReason::Stop)], false).await;
    assert!(d.iter().all(|x| x.get("reasoning_content").is_none()), "{d:?}");
}
