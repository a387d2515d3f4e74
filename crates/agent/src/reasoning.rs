//! Only a model's answer is acted on: a Thinking model's reasoning (`…</think>` before the
//! answer, the opening `<think>` usually in the prompt) may mention clicks, boxes and tool calls
//! it then decides against. The engine already hands over the answer alone; this is the
//! parsers' own guard for text from anywhere else (a remote server without a reasoning parser,
//! a recording, an app message that shows the reasoning folded above the answer).

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// The answer part of a model's output: what follows the first `</think>`; nothing when the
/// output opens `<think>` and never closes it (cut while reasoning); the whole text otherwise.
pub fn answer_only(text: &str) -> &str {
    match text.find(CLOSE) {
        Some(i) => &text[i + CLOSE.len()..],
        None if text.trim_start().starts_with(OPEN) => "",
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_what_follows_the_reasoning() {
        assert_eq!(answer_only("plan: click 1,1\n</think>\n\nclick 2,2"), "\n\nclick 2,2");
        assert_eq!(answer_only("<think>a</think>b</think>c"), "b</think>c");
    }

    #[test]
    fn unclosed_reasoning_is_no_answer_and_plain_text_is_all_answer() {
        assert_eq!(answer_only("\n<think>\nclick at 10,10"), "");
        assert_eq!(answer_only("The OK button."), "The OK button.");
        assert_eq!(answer_only("I <think> so"), "I <think> so");
    }
}
