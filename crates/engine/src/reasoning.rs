//! Separating a Thinking model's reasoning from its answer while the text streams, as vLLM's
//! reasoning parsers do for Qwen3 (`reasoning_content` apart from `content`).
//!
//! A Thinking model's prompt ends inside an opened `<think>` ([`ChatFormat::Thinking`]), so its
//! output is `reasoning</think>answer`: everything up to the first `</think>` is reasoning,
//! everything after it is the answer (a `<think>` the model writes again at the very start is
//! dropped). The closing tag may arrive split over several pieces: a tail that could be its
//! start is held back until the next piece decides it. An output that never closes the
//! reasoning (cut by `max_tokens`, or stopped) is all reasoning and has no answer. For an
//! Instruct model ([`ReasoningParser::new`] with `false`) every piece is answer, unchanged, even
//! when it mentions the tags.
//!
//! [`ChatFormat::Thinking`]: screenpilot_model::ChatFormat::Thinking

use screenpilot_model::chat_template::{THINK_CLOSE, THINK_OPEN};

/// A piece of output, divided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Split {
    pub reasoning: String,
    pub answer: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not a Thinking model: all answer.
    Off,
    /// Reasoning, before any text: a leading `<think>` is the model's own and is dropped.
    Start,
    Reasoning,
    Answer,
}

/// The streaming parser (see the module docs).
#[derive(Debug, Clone)]
pub struct ReasoningParser {
    state: State,
    /// Text held back: a possible `<think>` at the start, or a possible `</think>`.
    held: String,
}

impl ReasoningParser {
    /// `starts_in_reasoning`: the prompt opened the reasoning (a Thinking model); false passes
    /// everything on as answer.
    pub fn new(starts_in_reasoning: bool) -> Self {
        Self { state: if starts_in_reasoning { State::Start } else { State::Off }, held: String::new() }
    }

    /// Whether the output is still inside its reasoning.
    pub fn in_reasoning(&self) -> bool {
        matches!(self.state, State::Start | State::Reasoning)
    }

    /// Divides the next piece; what may still be part of a tag is held back.
    pub fn push(&mut self, piece: &str) -> Split {
        match self.state {
            State::Off | State::Answer => Split { reasoning: String::new(), answer: piece.to_string() },
            State::Start => {
                self.held.push_str(piece);
                if THINK_OPEN.starts_with(self.held.as_str()) && self.held.len() < THINK_OPEN.len() {
                    return Split::default();
                }
                let text = std::mem::take(&mut self.held);
                self.state = State::Reasoning;
                self.push(text.strip_prefix(THINK_OPEN).unwrap_or(&text))
            }
            State::Reasoning => {
                self.held.push_str(piece);
                if let Some(at) = self.held.find(THINK_CLOSE) {
                    let answer = self.held[at + THINK_CLOSE.len()..].to_string();
                    self.held.truncate(at);
                    self.state = State::Answer;
                    return Split { reasoning: std::mem::take(&mut self.held), answer };
                }
                let keep = partial_tail(&self.held, THINK_CLOSE);
                let reasoning = self.held[..self.held.len() - keep].to_string();
                self.held.drain(..self.held.len() - keep);
                Split { reasoning, answer: String::new() }
            }
        }
    }

    /// The end of the output: text held back was reasoning (the tag never came).
    pub fn finish(&mut self) -> Split {
        let held = std::mem::take(&mut self.held);
        match self.state {
            State::Start | State::Reasoning => Split { reasoning: held, answer: String::new() },
            State::Off | State::Answer => Split { reasoning: String::new(), answer: held },
        }
    }
}

/// Divides a whole output at once (what the streaming parser gives in total).
pub fn split(text: &str, starts_in_reasoning: bool) -> Split {
    let mut p = ReasoningParser::new(starts_in_reasoning);
    let mut out = p.push(text);
    let end = p.finish();
    out.reasoning.push_str(&end.reasoning);
    out.answer.push_str(&end.answer);
    out
}

/// Length of the longest suffix of `text` that is a proper prefix of `tag`.
fn partial_tail(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && tag.starts_with(&text[text.len() - n..]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `pieces` and returns everything divided.
    fn feed(pieces: &[&str], thinking: bool) -> Split {
        let mut p = ReasoningParser::new(thinking);
        let mut out = Split::default();
        for piece in pieces {
            let s = p.push(piece);
            out.reasoning.push_str(&s.reasoning);
            out.answer.push_str(&s.answer);
        }
        let s = p.finish();
        out.reasoning.push_str(&s.reasoning);
        out.answer.push_str(&s.answer);
        out
    }

    #[test]
    fn the_closing_tag_split_over_pieces_is_found() {
        let s = feed(&["I look", " at it.\n</", "thi", "nk>\n\nThe ", "OK button."], true);
        assert_eq!(s, Split { reasoning: "I look at it.\n".into(), answer: "\n\nThe OK button.".into() });
        let s = feed(&["a<", "/think", ">b"], true);
        assert_eq!((s.reasoning.as_str(), s.answer.as_str()), ("a", "b"));
    }

    #[test]
    fn a_possible_tag_is_held_back_and_released_when_it_is_not_one() {
        let mut p = ReasoningParser::new(true);
        assert_eq!(p.push("x </thi").reasoning, "x ");
        assert_eq!(p.push("ng").reasoning, "</thing");
        assert!(p.in_reasoning());
    }

    #[test]
    fn an_output_that_never_closes_is_all_reasoning() {
        let s = feed(&["still thinking </th"], true);
        assert_eq!(s, Split { reasoning: "still thinking </th".into(), answer: String::new() });
    }

    #[test]
    fn an_instruct_answer_is_all_answer_even_with_tags_in_it() {
        let s = feed(&["<think>", "a</think>b"], false);
        assert_eq!(s, Split { reasoning: String::new(), answer: "<think>a</think>b".into() });
    }

    #[test]
    fn a_think_tag_the_model_writes_first_is_dropped() {
        assert_eq!(feed(&["<thi", "nk>\nr</think>a"], true), Split { reasoning: "\nr".into(), answer: "a".into() });
        assert_eq!(feed(&["<b>r</think>a"], true), Split { reasoning: "<b>r".into(), answer: "a".into() });
        assert_eq!(split("<th", true), Split { reasoning: "<th".into(), answer: String::new() });
    }

    #[test]
    fn only_the_first_close_ends_the_reasoning() {
        assert_eq!(split("r</think>a</think>b", true), Split { reasoning: "r".into(), answer: "a</think>b".into() });
    }

    #[test]
    fn partial_tail_respects_char_boundaries() {
        assert_eq!(partial_tail("é</th", THINK_CLOSE), 4);
        assert_eq!(partial_tail("é", THINK_CLOSE), 0);
        assert_eq!(partial_tail("</think", THINK_CLOSE), 7);
    }
}
