//! One user's session: the loaded [`Assistant`], the current capture (and the frozen frame a
//! region is dragged on; or a rewind clip, or the two frames of "what changed", see
//! [`crate::rewind::ask`]), the conversation about that capture, and the ask control that
//! never lets requests pile up: a new question cancels the running one (between two tokens),
//! waits for it to end, and runs; requests superseded while waiting return `Cancelled`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use screenpilot_agent::Screenshot;
use screenpilot_engine::Clip;
use screenpilot_model::Flow;

use crate::assistant::{AskOutcome, AskRequest, Assistant, Exchange};
use crate::error::{DesktopError, Result};

/// Most characters in a question.
pub const MAX_QUESTION_CHARS: usize = 4000;
/// Tokens generated per answer.
pub const DEFAULT_MAX_TOKENS: usize = 256;

/// Shared state behind the app's commands.
#[derive(Default)]
pub struct Session {
    assistant: RwLock<Option<Arc<dyn Assistant>>>,
    capture: Mutex<Option<Screenshot>>,
    /// A rewind clip the conversation is about (sent instead of the capture).
    clip: Mutex<Option<Arc<Clip>>>,
    /// The frame before the capture ("what changed": sent first, the capture second).
    before: Mutex<Option<Screenshot>>,
    frozen: Mutex<Option<Screenshot>>,
    history: Mutex<Vec<Exchange>>,
    latest: AtomicU64,
    running: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The question trimmed, or an error when it is empty or longer than [`MAX_QUESTION_CHARS`].
pub fn check_question(question: &str) -> Result<&str> {
    let question = question.trim();
    if question.is_empty() || question.chars().count() > MAX_QUESTION_CHARS {
        return Err(DesktopError::InvalidArgument(format!("question must have 1..={MAX_QUESTION_CHARS} characters")));
    }
    Ok(question)
}

impl Session {
    /// An empty session.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the assistant (a newly loaded model).
    pub fn set_assistant(&self, a: Arc<dyn Assistant>) {
        *self.assistant.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(a);
    }

    /// Removes the assistant (questions then fail with `NoModel`).
    pub fn clear_assistant(&self) {
        *self.assistant.write().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// The loaded assistant.
    pub fn assistant(&self) -> Option<Arc<dyn Assistant>> {
        self.assistant.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Sets the capture questions are about; starts a new conversation.
    pub fn set_capture(&self, shot: Screenshot) {
        *lock(&self.capture) = Some(shot);
        *lock(&self.clip) = None;
        *lock(&self.before) = None;
        lock(&self.history).clear();
    }

    /// Makes a rewind clip the subject of a new conversation; `newest` (its last frame)
    /// becomes the capture (what overlays map onto).
    pub fn set_clip(&self, clip: Arc<Clip>, newest: Screenshot) {
        self.set_capture(newest);
        *lock(&self.clip) = Some(clip);
    }

    /// Makes two frames the subject of a new conversation: `before`, then `after` (the capture).
    pub fn set_change(&self, before: Screenshot, after: Screenshot) {
        self.set_capture(after);
        *lock(&self.before) = Some(before);
    }

    /// The rewind clip the conversation is about, if any.
    pub fn clip(&self) -> Option<Arc<Clip>> {
        lock(&self.clip).clone()
    }

    /// Reopens a stored conversation: its capture and the exchanges so far (see
    /// [`crate::threads::Thread::exchanges`]), so a follow-up sees them.
    /// A question still running is cancelled (its answer belongs to the conversation it was
    /// asked in).
    pub fn restore(&self, shot: Screenshot, history: Vec<Exchange>) {
        self.cancel();
        self.set_capture(shot);
        *lock(&self.history) = history;
    }

    /// Keeps a full frame to drag a region on.
    pub fn set_frozen(&self, shot: Screenshot) {
        *lock(&self.frozen) = Some(shot);
    }

    /// The current capture.
    pub fn capture(&self) -> Option<Screenshot> {
        lock(&self.capture).clone()
    }

    /// The frozen frame.
    pub fn frozen(&self) -> Option<Screenshot> {
        lock(&self.frozen).clone()
    }

    /// The conversation so far.
    pub fn history(&self) -> Vec<Exchange> {
        lock(&self.history).clone()
    }

    /// Cancels the running question, if any.
    pub fn cancel(&self) {
        self.latest.fetch_add(1, Ordering::SeqCst);
    }

    /// Asks about the current capture, streaming pieces to `on_token`. See the module doc
    /// for how concurrent questions behave.
    pub fn ask(&self, question: &str, on_token: &mut dyn FnMut(&str)) -> Result<AskOutcome> {
        let question = check_question(question)?;
        let assistant = self.assistant().ok_or(DesktopError::NoModel)?;
        let shot = self.capture().ok_or(DesktopError::NoCapture)?;
        let me = self.latest.fetch_add(1, Ordering::SeqCst) + 1;
        let _running = lock(&self.running);
        if self.latest.load(Ordering::SeqCst) != me {
            return Err(DesktopError::Cancelled);
        }
        let history = self.history();
        let (clip, before) = (self.clip(), lock(&self.before).clone());
        let images: Vec<&image::RgbImage> = match (&clip, &before) {
            (Some(_), _) => Vec::new(),
            (None, Some(b)) => vec![b.image.as_ref(), shot.image.as_ref()],
            (None, None) => vec![shot.image.as_ref()],
        };
        let req = AskRequest { images: &images, clip: clip.as_ref(), history: &history, question, max_tokens: DEFAULT_MAX_TOKENS };
        let mut cb = |piece: &str| {
            if self.latest.load(Ordering::SeqCst) != me {
                return Flow::Stop;
            }
            // An empty piece only asks whether to go on (see `Assistant::ask`).
            if !piece.is_empty() {
                on_token(piece);
            }
            Flow::Continue
        };
        let out = assistant.ask(&req, &mut cb)?;
        if !out.cancelled {
            lock(&self.history).push(Exchange { question: question.to_string(), answer: out.text.clone() });
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::assistant::{ModelInfo, ScriptedAssistant};
    use screenpilot_agent::{CaptureGeometry, InputSpace, MonitorGeometry, OsPoint};
    use std::sync::mpsc;

    fn session_with(a: Arc<dyn Assistant>) -> Session {
        let s = Session::new();
        s.set_assistant(a);
        let m = MonitorGeometry { name: "m".into(), origin: OsPoint { x: 0, y: 0 }, width: 32, height: 32, scale_factor: 1.0, input_space: InputSpace::Physical };
        let g = CaptureGeometry::full_monitor(m, 32, 32).unwrap();
        s.set_capture(Screenshot { image: Arc::new(image::RgbImage::new(32, 32)), geometry: g });
        s
    }

    #[test]
    fn follow_ups_reuse_the_capture_and_history() {
        let s = session_with(Arc::new(ScriptedAssistant { text: "a b c".into() }));
        let mut seen = String::new();
        let out = s.ask("first?", &mut |p| seen.push_str(p)).unwrap();
        assert_eq!((out.text.as_str(), seen.as_str()), ("a b c", "a b c"));
        s.ask("second?", &mut |_| {}).unwrap();
        let h = s.history();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].question, "first?");
        assert!(s.ask("   ", &mut |_| {}).is_err());
        let shot = s.capture().unwrap();
        s.restore(shot.clone(), vec![Exchange { question: "old?".into(), answer: "yes".into() }]);
        s.ask("new?", &mut |_| {}).unwrap();
        assert_eq!(s.history().iter().map(|e| e.question.as_str()).collect::<Vec<_>>(), ["old?", "new?"]);
        s.set_capture(shot);
        assert!(s.history().is_empty(), "a new capture starts a new conversation");
    }

    /// Streams tokens until told to stop, reporting when it started.
    struct Endless(Mutex<mpsc::Sender<()>>);
    impl Assistant for Endless {
        fn info(&self) -> ModelInfo {
            ScriptedAssistant { text: String::new() }.info()
        }
        fn ask(&self, _: &AskRequest<'_>, on_token: &mut dyn FnMut(&str) -> Flow) -> Result<AskOutcome> {
            let _ = lock(&self.0).send(());
            let mut text = String::new();
            loop {
                if on_token("x") == Flow::Stop {
                    return Ok(AskOutcome { text, cancelled: true, timings: Default::default(), token_ids: Vec::new(), cache: None });
                }
                text.push('x');
                std::thread::yield_now();
            }
        }
    }

    #[test]
    fn cancel_stops_the_running_question() {
        let (tx, rx) = mpsc::channel();
        let s = Arc::new(session_with(Arc::new(Endless(Mutex::new(tx)))));
        let s1 = Arc::clone(&s);
        let first = std::thread::spawn(move || s1.ask("one", &mut |_| {}));
        rx.recv().unwrap(); // the first is running
        s.cancel();
        let out = first.join().unwrap().unwrap();
        assert!(out.cancelled);
        assert!(s.history().is_empty(), "a cancelled answer is not part of the conversation");
    }
}
