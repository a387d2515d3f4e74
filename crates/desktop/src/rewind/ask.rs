//! Questions about the rewind, answered through the session like any question (streamed, a
//! new question cancels the running one, follow-ups see the conversation):
//!
//! - [`ask_recent`]: the last N seconds as a video. The clip becomes the conversation's subject,
//!   so a follow-up sends the same `Arc<Clip>` and the engine reuses its preprocessing, its
//!   vision features and the prompt's KV cache.
//! - [`ask_changed`]: "what changed since I last asked" as two images, the screen at the last
//!   rewind question and the screen now. Two images rather than a clip of the frames between:
//!   the last question may be longer ago than the buffer holds (those frames are gone), two
//!   images cost the same whether it was a minute or an hour, and the model compares the two
//!   states directly instead of summarising every step in between (that is what
//!   [`ask_recent`] is for).

use crate::assistant::AskOutcome;
use crate::error::Result;
use crate::session::{check_question, Session};

use super::Rewind;

/// Asks `question` about the last `seconds` of the screen.
pub fn ask_recent(session: &Session, rewind: &Rewind, seconds: f64, question: &str, on_token: &mut dyn FnMut(&str)) -> Result<AskOutcome> {
    let question = check_question(question)?;
    let view = rewind.clip(seconds)?;
    session.set_clip(view.clip, view.newest);
    session.ask(question, on_token)
}

/// Asks `question` about what changed since the last rewind question (or since the oldest
/// frame held, before any).
pub fn ask_changed(session: &Session, rewind: &Rewind, question: &str, on_token: &mut dyn FnMut(&str)) -> Result<AskOutcome> {
    let question = check_question(question)?;
    let change = rewind.change()?;
    session.set_change(change.before, change.after);
    session.ask(&change_question(question), on_token)
}

/// The question as the model sees it: which image is which.
pub fn change_question(question: &str) -> String {
    format!("The first image is my screen when I last asked, the second is my screen now. {question}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use image::{Rgb, RgbImage};
    use screenpilot_agent::coords::OsPoint;
    use screenpilot_agent::{CaptureGeometry, FakeCapture, InputSpace, MonitorGeometry};
    use screenpilot_engine::Clip;
    use screenpilot_model::Flow;

    use super::*;
    use crate::assistant::{AskRequest, Assistant, ModelInfo, ScriptedAssistant};
    use crate::rewind::blackout::FixedWindows;
    use crate::rewind::RewindConfig;

    /// What one request carried: the clip, the first pixel of each image, the question.
    type Request = (Option<Arc<Clip>>, Vec<u8>, String);

    /// Remembers every request.
    #[derive(Default)]
    struct Seen(Mutex<Vec<Request>>);
    impl Assistant for Seen {
        fn info(&self) -> ModelInfo {
            ScriptedAssistant { text: String::new() }.info()
        }
        fn ask(&self, req: &AskRequest<'_>, on_token: &mut dyn FnMut(&str) -> Flow) -> crate::Result<AskOutcome> {
            let pixels = req.images.iter().map(|i| i.get_pixel(0, 0).0[0]).collect();
            self.0.lock().unwrap().push((req.clip.cloned(), pixels, req.question.to_string()));
            ScriptedAssistant { text: "ok".into() }.ask(req, on_token)
        }
    }

    fn recording(values: &[u8]) -> Rewind {
        let m = MonitorGeometry { name: "m".into(), origin: OsPoint { x: 0, y: 0 }, width: 16, height: 8, scale_factor: 1.0, input_space: InputSpace::Physical };
        let mut cap = FakeCapture::new(CaptureGeometry::full_monitor(m, 16, 8).unwrap(), RgbImage::new(16, 8));
        for v in values {
            cap.push(RgbImage::from_pixel(16, 8, Rgb([*v; 3])));
        }
        let r = Rewind::new();
        r.start(RewindConfig { fps: 4.0, ..RewindConfig::default() }, Box::new(cap), Box::new(FixedWindows::default())).unwrap();
        let t0 = Instant::now();
        while r.status().seconds < 0.75 {
            assert!(t0.elapsed() < Duration::from_secs(10));
            std::thread::sleep(Duration::from_millis(5));
        }
        r
    }

    #[test]
    fn a_question_about_the_last_seconds_sends_the_clip_and_a_follow_up_sends_the_same_one() {
        let rewind = recording(&[5, 6, 7]);
        let seen = Arc::new(Seen::default());
        let session = Session::new();
        session.set_assistant(seen.clone());
        let out = ask_recent(&session, &rewind, 10.0, "What happened?", &mut |_| {}).unwrap();
        assert_eq!(out.text, "ok");
        session.ask("And then?", &mut |_| {}).unwrap();
        rewind.stop();
        let seen = seen.0.lock().unwrap();
        let (first, second) = (&seen[0], &seen[1]);
        let clip = first.0.as_ref().unwrap();
        assert!(first.1.is_empty(), "the clip replaces the capture image");
        assert!(clip.frames.len() >= 3 && clip.fps == Some(4.0));
        assert_eq!(clip.indices, (0..clip.frames.len()).collect::<Vec<_>>());
        assert!(Arc::ptr_eq(clip, second.0.as_ref().unwrap()), "the follow-up reuses the clip");
        assert_eq!(session.history().len(), 2);
        assert!(ask_recent(&session, &rewind, 10.0, "  ", &mut |_| {}).is_err(), "blank questions are refused");
    }

    #[test]
    fn what_changed_sends_the_frame_at_the_last_question_then_now() {
        let rewind = recording(&[5, 6]);
        let seen = Arc::new(Seen::default());
        let session = Session::new();
        session.set_assistant(seen.clone());
        ask_changed(&session, &rewind, "What changed?", &mut |_| {}).unwrap();
        rewind.stop();
        let seen = seen.0.lock().unwrap();
        assert!(seen[0].0.is_none());
        assert_eq!(seen[0].1, [5, 6]);
        assert_eq!(seen[0].2, change_question("What changed?"));
        assert!(session.clip().is_none());
        drop(seen);
        // A new capture is a plain conversation again.
        session.set_capture(session.capture().unwrap());
        session.ask("Plain?", &mut |_| {}).unwrap();
    }
}
