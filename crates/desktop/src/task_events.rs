//! What a running task tells the UI ([`TaskEvent`], serialised with a `kind` tag), and the
//! proposals it shows: computed here, in Rust, from the model's parsed action and the
//! screenshot the model saw (thumbnail, description, targets in image pixels). The UI only
//! answers a proposal by its id; nothing it sends becomes part of an action.
//!
//! [`Emitter`] delivers one task's events and ends with exactly one [`TaskEvent::Outcome`]:
//! nothing of that task is delivered after it (a worker still winding down after a stop is
//! silent).

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use image::RgbImage;
use serde::Serialize;

use screenpilot_agent::policy::ConfirmRequest;
use screenpilot_agent::{OsPoint, Screenshot};

use crate::audit_table::AuditRow;
use crate::task::describe;

/// Longest side of a step's thumbnail, in pixels.
pub const THUMBNAIL_SIDE: u32 = 480;

/// One event of one task.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskEvent {
    /// The model is asked about a new screenshot (step 1, 2, …).
    Step {
        task: u64,
        step: u32,
        /// `data:image/png;base64,…` of the screenshot, at most [`THUMBNAIL_SIDE`] a side.
        thumbnail: String,
        /// The screenshot's size (what proposal points refer to).
        image_width: u32,
        image_height: u32,
    },
    /// A piece of the model's answer as it is generated.
    Text { task: u64, step: u32, text: String },
    /// The model's whole answer of a step.
    Said { task: u64, step: u32, text: String },
    /// An action the model proposes; `auto` ones were approved by the auto mode and are
    /// shown, not asked.
    Proposal(Proposal),
    /// What became of a proposal: `accepted`, `rejected`, `auto`.
    Decided { task: u64, proposal: u64, decision: String },
    /// How the task ended; the last event of a task.
    Outcome(TaskOutcome),
}

/// A proposed action, as the UI shows it before the decision.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Proposal {
    pub task: u64,
    pub step: u32,
    /// What `decide` names.
    pub id: u64,
    /// One line a person can check (`left click at (812, 455)`, `type "hello"`).
    pub description: String,
    /// Text the action would type, if any.
    pub text: Option<String>,
    /// Targets in the screenshot's pixels (draw them on the step's thumbnail, scaled).
    pub image_points: Vec<(f64, f64)>,
    /// The same targets in OS coordinates.
    pub screen_points: Vec<OsPoint>,
    /// The monitor it would happen on.
    pub monitor: String,
    /// Approved by the auto mode without asking.
    pub auto: bool,
    /// Why this action is asked about even in the auto mode (closing, deleting, Enter…).
    pub always_asks: Option<String>,
}

/// How a task ended.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TaskOutcome {
    pub task: u64,
    /// `success`, `failure`, `answered`, `no_action`, `rejected`, `actions_disabled`,
    /// `step_limit`, `turn_limit`, `done` (a one-step task ran its action), `refused` (a
    /// one-step task's action could not be used), `stopped`, `error`.
    pub status: String,
    /// A sentence for the user.
    pub message: String,
    /// The model's answer (`answered`) or its text without an action (`no_action`).
    pub answer: Option<String>,
    /// The task's records of the audit log, readable.
    pub audit: Vec<AuditRow>,
}

/// Where events go (the app emits them to the web view; tests collect them).
pub type EventSink = Arc<dyn Fn(TaskEvent) + Send + Sync>;

/// One task's events: delivered until its outcome, dropped after it.
pub struct Emitter {
    sink: EventSink,
    ended: Mutex<bool>,
}

impl Emitter {
    pub fn new(sink: EventSink) -> Self {
        Self { sink, ended: Mutex::new(false) }
    }

    /// Delivers `ev` unless the task has ended.
    pub fn emit(&self, ev: TaskEvent) {
        let ended = crate::task_runner::lock(&self.ended);
        if !*ended {
            (self.sink)(ev);
        }
    }

    /// Delivers the outcome unless one was delivered already; true if this one was.
    pub fn end(&self, outcome: TaskOutcome) -> bool {
        let mut ended = crate::task_runner::lock(&self.ended);
        if *ended {
            return false;
        }
        *ended = true;
        (self.sink)(TaskEvent::Outcome(outcome));
        true
    }

    /// Whether the outcome was delivered.
    pub fn has_ended(&self) -> bool {
        *crate::task_runner::lock(&self.ended)
    }
}

/// `data:image/png;base64,…` of `img` scaled down to at most [`THUMBNAIL_SIDE`] a side
/// (empty when it cannot be encoded, which only a zero-sized image does).
pub fn thumbnail(img: &RgbImage) -> String {
    let (w, h) = img.dimensions();
    let scale = f64::from(THUMBNAIL_SIDE) / f64::from(w.max(h).max(1));
    let small;
    let img = if scale < 1.0 {
        let (tw, th) = ((f64::from(w) * scale).round().max(1.0) as u32, (f64::from(h) * scale).round().max(1.0) as u32);
        small = image::imageops::thumbnail(img, tw, th);
        &small
    } else {
        img
    };
    match crate::screen::png_bytes(img) {
        Ok(png) => format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(png)),
        Err(_) => String::new(),
    }
}

/// The proposal for `req` on `shot` (the screenshot the model saw).
pub fn proposal(task: u64, step: u32, id: u64, req: &ConfirmRequest<'_>, shot: &Screenshot, auto: bool) -> Proposal {
    let g = &shot.geometry;
    let screen_points = req.action.points();
    let image_points = screen_points
        .iter()
        .map(|p| {
            let i = g.physical_to_image(g.monitor.os_to_physical(*p));
            (i.x, i.y)
        })
        .collect();
    let text = match req.action {
        screenpilot_agent::ScreenAction::Type { text } => Some(text.clone()),
        _ => None,
    };
    Proposal {
        task,
        step,
        id,
        description: describe(req.action),
        text,
        image_points,
        screen_points,
        monitor: req.monitor.name.clone(),
        auto,
        always_asks: req.always_asks().map(str::to_string),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn thumbnails_are_small_pngs_and_small_images_keep_their_size() {
        let big = RgbImage::from_pixel(1920, 1080, image::Rgb([10, 20, 30]));
        let t = thumbnail(&big);
        let png = base64::engine::general_purpose::STANDARD.decode(t.strip_prefix("data:image/png;base64,").unwrap()).unwrap();
        let back = image::load_from_memory(&png).unwrap();
        assert_eq!((back.width(), back.height()), (480, 270));
        let small = thumbnail(&RgbImage::new(40, 30));
        let png = base64::engine::general_purpose::STANDARD.decode(small.strip_prefix("data:image/png;base64,").unwrap()).unwrap();
        assert_eq!(image::load_from_memory(&png).unwrap().width(), 40);
    }

    #[test]
    fn nothing_is_delivered_after_the_outcome() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let e = Emitter::new(Arc::new(move |ev| g.lock().unwrap().push(ev)));
        let outcome = |s: &str| TaskOutcome { task: 1, status: s.into(), message: String::new(), answer: None, audit: Vec::new() };
        e.emit(TaskEvent::Text { task: 1, step: 1, text: "a".into() });
        assert!(e.end(outcome("stopped")));
        assert!(!e.end(outcome("success")));
        e.emit(TaskEvent::Text { task: 1, step: 1, text: "b".into() });
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 2);
        assert!(matches!(&got[1], TaskEvent::Outcome(o) if o.status == "stopped"));
        assert!(e.has_ended());
    }
}
