//! Recording of one task into a folder, for review and for [`crate::replay::replay`]:
//!
//! - `task.json` ([`TaskRecord`]): format version, task text, start time (UTC, RFC 3339), a
//!   summary of the policy, `max_turns`, and the geometry of the first screenshot's monitor;
//! - `step-001.png`, `step-002.png`, ...: the screenshot the model saw at each turn (PNG, lossless);
//! - `steps.jsonl`: one JSON object a line, told apart by `"type"` ([`StepLine`]):
//!   - `"turn"` ([`TurnRecord`]), one per model turn: turn number, screenshot file name and
//!     hash ([`crate::audit::screenshot_hash`]), its [`CaptureGeometry`], the raw model output,
//!     the model's time in ms;
//!   - `"action"` ([`ActionRecord`]), one per action the agent got to, once it is decided: the
//!     parsed [`ModelAction`](crate::model_action::ModelAction), the resolved
//!     [`ScreenAction`](crate::screen_action::ScreenAction) or the refusal message, the user's
//!     answer when asked, the decision ([`AuditDecision`]), the action's time in ms;
//!   - `"outcome"` ([`OutcomeRecord`]), last: the [`Outcome`] or the error that ended the task.
//!
//! **Fail closed.** A write returns `Ok` only once its bytes are flushed and synced. The agent
//! writes a turn's screenshot and `turn` line *before* any action of that turn is gated, so
//! when the disk is full (or the folder is gone) the task stops with
//! [`crate::AgentError::Record`] and no action of that turn runs. The `action` line of an
//! action that ran is written after it; when that fails the task stops with
//! [`crate::AgentError::RecordAfterAction`]. After a failed write the recorder refuses every
//! further write, so a torn line is never followed by another.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::agent::Outcome;
use crate::audit::{now_rfc3339, screenshot_hash, AuditDecision};
use crate::capture::Screenshot;
use crate::coords::CaptureGeometry;
use crate::policy::{AutoLimits, Decision, Mode, Policy};

/// The task file's name.
pub const TASK_FILE: &str = "task.json";
/// The step log's name.
pub const STEPS_FILE: &str = "steps.jsonl";
/// The format version written into `task.json`.
pub const FORMAT_VERSION: u32 = 1;

/// The screenshot file name of a turn: `step-001.png`.
pub fn screenshot_name(turn: u32) -> String {
    format!("step-{turn:03}.png")
}

/// How actions were approved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum ModeSummary {
    /// Every action asked the user.
    ConfirmEach,
    /// The auto mode with its limits.
    Auto {
        /// Step limit.
        max_steps: u32,
        /// Rate limit: minimum ms between actions.
        min_interval_ms: u64,
    },
}

/// The policy a task ran under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySummary {
    /// The user had opted in to actions.
    pub actions_enabled: bool,
    /// How actions were approved.
    pub mode: ModeSummary,
}

impl From<&Policy> for PolicySummary {
    fn from(p: &Policy) -> Self {
        let mode = match p.mode {
            Mode::ConfirmEach => ModeSummary::ConfirmEach,
            Mode::Auto(l) => ModeSummary::Auto {
                max_steps: l.max_steps(),
                min_interval_ms: u64::try_from(l.min_interval().as_millis()).unwrap_or(u64::MAX),
            },
        };
        Self { actions_enabled: p.actions_enabled, mode }
    }
}

impl PolicySummary {
    /// The policy again (the rate limit to the millisecond).
    pub fn to_policy(&self) -> Policy {
        let mode = match self.mode {
            ModeSummary::ConfirmEach => Mode::ConfirmEach,
            ModeSummary::Auto { max_steps, min_interval_ms } => {
                Mode::Auto(AutoLimits::new(max_steps, std::time::Duration::from_millis(min_interval_ms)))
            }
        };
        Policy { actions_enabled: self.actions_enabled, mode }
    }
}

/// `task.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// The task text.
    pub task: String,
    /// When the task started (UTC, RFC 3339).
    pub started: String,
    /// The policy it ran under.
    pub policy: PolicySummary,
    /// Most model turns.
    pub max_turns: u32,
    /// The first screenshot's geometry (monitor, region, image size).
    pub geometry: CaptureGeometry,
}

/// A `"turn"` line: what the model saw and said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnRecord {
    /// Turn number, from 1.
    pub turn: u32,
    /// When the model answered (UTC, RFC 3339).
    pub time: String,
    /// The screenshot's file name in the folder.
    pub screenshot: String,
    /// [`screenshot_hash`] of its pixels.
    pub screenshot_sha256: String,
    /// How the screenshot maps onto the monitor.
    pub geometry: CaptureGeometry,
    /// The raw model output.
    pub model_output: String,
    /// The model's time for this turn.
    pub model_ms: u64,
}

/// An `"action"` line: one action of the turn before it, as decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    /// The turn it belongs to.
    pub turn: u32,
    /// The parsed [`ModelAction`](crate::model_action::ModelAction) as JSON; `null` when the output did not parse or held none.
    pub action: Option<Value>,
    /// The resolved [`ScreenAction`](crate::screen_action::ScreenAction) as JSON; `null` when refused or finished.
    pub screen_action: Option<Value>,
    /// The refusal message (`refused_invalid`) or the input error (`failed`).
    pub detail: Option<String>,
    /// What the user answered, when the gate asked.
    pub user: Option<Decision>,
    /// The final decision (never `approved`, which only the audit log holds).
    pub decision: AuditDecision,
    /// How long the action took to execute, when it ran.
    pub action_ms: Option<u64>,
}

/// The `"outcome"` line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    /// When the task ended (UTC, RFC 3339).
    pub time: String,
    /// How it ended, unless an error ended it.
    pub outcome: Option<Outcome>,
    /// The error that ended it.
    pub error: Option<String>,
}

/// One line of `steps.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StepLine {
    /// A model turn.
    Turn(TurnRecord),
    /// A decided action.
    Action(ActionRecord),
    /// How the task ended.
    Outcome(OutcomeRecord),
}

/// Why a recording could not be written or read.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The folder for a new recording already holds files.
    #[error("the recording folder {} is not empty", .0.display())]
    NotEmpty(PathBuf),
    /// Creating or writing a file failed (full disk, folder removed, read-only).
    #[error("cannot write {}: {error}", path.display())]
    Write {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// Reading a file failed.
    #[error("cannot read {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// The folder is not a recording.
    #[error("{} is not a recording: {why}", path.display())]
    NotARecording {
        /// The folder.
        path: PathBuf,
        /// What is missing.
        why: &'static str,
    },
    /// A file of the recording does not parse.
    #[error("{} line {line}: {message}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A record or screenshot could not be encoded.
    #[error("cannot encode the recording: {0}")]
    Encode(String),
    /// [`Recorder::start`] was not called (or called twice).
    #[error("the recorder {0}")]
    State(&'static str),
    /// An earlier write failed; the recording is closed.
    #[error("an earlier write to the recording failed, so it takes no more")]
    Closed,
}

fn encode_err(e: impl std::fmt::Display) -> RecordError {
    RecordError::Encode(e.to_string())
}

/// `value` as JSON (for [`ActionRecord`]'s fields).
pub fn to_json<T: Serialize>(value: Option<&T>) -> Result<Option<Value>, RecordError> {
    value.map(serde_json::to_value).transpose().map_err(encode_err)
}

/// Writes one task's recording (see the module docs). One recorder records one task.
#[derive(Debug)]
pub struct Recorder {
    dir: PathBuf,
    steps: Option<File>,
    closed: bool,
}

impl Recorder {
    /// A recorder writing into `dir`, which is created (with its parents) or must be empty.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, RecordError> {
        let dir = dir.into();
        let werr = |error| RecordError::Write { path: dir.clone(), error };
        fs::create_dir_all(&dir).map_err(werr)?;
        if fs::read_dir(&dir).map_err(werr)?.next().is_some() {
            return Err(RecordError::NotEmpty(dir));
        }
        Ok(Self { dir, steps: None, closed: false })
    }

    /// The recording's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether [`Self::start`] has written `task.json`.
    pub fn is_started(&self) -> bool {
        self.steps.is_some()
    }

    /// Runs one write; after a failure every later write is refused.
    fn guard(&mut self, f: impl FnOnce(&mut Self) -> Result<(), RecordError>) -> Result<(), RecordError> {
        if self.closed {
            return Err(RecordError::Closed);
        }
        let r = f(self);
        self.closed = r.is_err();
        r
    }

    /// Writes `task.json` and creates `steps.jsonl`.
    pub fn start(&mut self, task: &str, policy: &Policy, max_turns: u32, geometry: &CaptureGeometry) -> Result<(), RecordError> {
        if self.steps.is_some() {
            return Err(RecordError::State("was already started"));
        }
        let record = TaskRecord {
            version: FORMAT_VERSION,
            task: task.to_string(),
            started: now_rfc3339(),
            policy: PolicySummary::from(policy),
            max_turns,
            geometry: geometry.clone(),
        };
        let json = serde_json::to_vec_pretty(&record).map_err(encode_err)?;
        self.guard(|me| {
            write_new(&me.dir.join(TASK_FILE), &json)?;
            let path = me.dir.join(STEPS_FILE);
            let file = File::options().append(true).create_new(true).open(&path).map_err(|error| RecordError::Write { path, error })?;
            me.steps = Some(file);
            Ok(())
        })
    }

    /// Writes the screenshot of `turn` and its `turn` line (before its actions are gated).
    pub fn turn(&mut self, turn: u32, shot: &Screenshot, model_output: &str, model_ms: u64) -> Result<(), RecordError> {
        let name = screenshot_name(turn);
        let (w, h) = shot.image.dimensions();
        let mut png = Vec::new();
        PngEncoder::new_with_quality(&mut png, CompressionType::Fast, FilterType::Adaptive)
            .write_image(shot.image.as_raw(), w, h, ExtendedColorType::Rgb8)
            .map_err(encode_err)?;
        let line = StepLine::Turn(TurnRecord {
            turn,
            time: now_rfc3339(),
            screenshot: name.clone(),
            screenshot_sha256: screenshot_hash(&shot.image),
            geometry: shot.geometry.clone(),
            model_output: model_output.to_string(),
            model_ms,
        });
        self.guard(|me| {
            if me.steps.is_none() {
                return Err(RecordError::State("was not started"));
            }
            write_new(&me.dir.join(&name), &png)?;
            me.append(&line)
        })
    }

    /// Writes an `action` line.
    pub fn action(&mut self, record: ActionRecord) -> Result<(), RecordError> {
        let line = StepLine::Action(record);
        self.guard(|me| me.append(&line))
    }

    /// Writes the `outcome` line: the outcome, or the error that ended the task.
    pub fn outcome(&mut self, outcome: Option<&Outcome>, error: Option<String>) -> Result<(), RecordError> {
        let line = StepLine::Outcome(OutcomeRecord { time: now_rfc3339(), outcome: outcome.cloned(), error });
        self.guard(|me| me.append(&line))
    }

    fn append(&mut self, line: &StepLine) -> Result<(), RecordError> {
        let mut bytes = serde_json::to_vec(line).map_err(encode_err)?;
        bytes.push(b'\n');
        let file = self.steps.as_mut().ok_or(RecordError::State("was not started"))?;
        file.write_all(&bytes)
            .and_then(|()| file.flush())
            .and_then(|()| file.sync_data())
            .map_err(|error| RecordError::Write { path: self.dir.join(STEPS_FILE), error })
    }
}

/// Creates `path` (never overwriting) with `bytes`, synced.
fn write_new(path: &Path, bytes: &[u8]) -> Result<(), RecordError> {
    let werr = |error| RecordError::Write { path: path.to_path_buf(), error };
    let mut f = File::options().write(true).create_new(true).open(path).map_err(werr)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(werr)
}

/// A recording read back.
#[derive(Debug, Clone)]
pub struct Recording {
    /// Its folder.
    pub dir: PathBuf,
    /// `task.json`.
    pub task: TaskRecord,
    /// `steps.jsonl`, in order.
    pub lines: Vec<StepLine>,
}

impl Recording {
    /// Reads `task.json` and `steps.jsonl` from `dir`; a missing folder or file or a line
    /// that does not parse is one error naming it.
    pub fn open(dir: &Path) -> Result<Self, RecordError> {
        if !dir.is_dir() {
            return Err(RecordError::NotARecording { path: dir.to_path_buf(), why: "no such folder" });
        }
        let read = |name: &str, why: &'static str| {
            let path = dir.join(name);
            match fs::read_to_string(&path) {
                Ok(text) => Ok((path, text)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Err(RecordError::NotARecording { path: dir.to_path_buf(), why }),
                Err(error) => Err(RecordError::Read { path, error }),
            }
        };
        let (task_path, text) = read(TASK_FILE, "it has no task.json")?;
        let task: TaskRecord = serde_json::from_str(&text)
            .map_err(|e| RecordError::Corrupt { path: task_path.clone(), line: e.line(), message: e.to_string() })?;
        if task.version != FORMAT_VERSION {
            let message = format!("format version {} (this build reads {FORMAT_VERSION})", task.version);
            return Err(RecordError::Corrupt { path: task_path, line: 1, message });
        }
        let (steps_path, text) = read(STEPS_FILE, "it has no steps.jsonl")?;
        let mut lines = Vec::new();
        for (i, l) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let line = serde_json::from_str(l)
                .map_err(|e| RecordError::Corrupt { path: steps_path.clone(), line: i + 1, message: e.to_string() })?;
            lines.push(line);
        }
        Ok(Self { dir: dir.to_path_buf(), task, lines })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use image::RgbImage;

    use super::*;
    use crate::coords::{InputSpace, MonitorGeometry, OsPoint};

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sp-record-unit-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn shot() -> Screenshot {
        let m = MonitorGeometry { name: "m".into(), origin: OsPoint { x: -40, y: 0 }, width: 40, height: 20, scale_factor: 2.0, input_space: InputSpace::Logical };
        let mut img = RgbImage::new(20, 10);
        img.put_pixel(3, 4, image::Rgb([1, 2, 3]));
        Screenshot { image: Arc::new(img), geometry: CaptureGeometry::full_monitor(m, 20, 10).unwrap() }
    }

    #[test]
    fn a_recording_reads_back_as_written() {
        let d = dir("roundtrip");
        let mut r = Recorder::new(&d).unwrap();
        let s = shot();
        let policy = Policy { actions_enabled: true, mode: Mode::Auto(AutoLimits::new(7, std::time::Duration::from_millis(250))) };
        r.start("do it", &policy, 9, &s.geometry).unwrap();
        r.turn(1, &s, "<tool_call>...", 12).unwrap();
        let action = ActionRecord { turn: 1, action: None, screen_action: None, detail: Some("bad".into()), user: None, decision: AuditDecision::RefusedInvalid, action_ms: None };
        r.action(action.clone()).unwrap();
        r.outcome(Some(&Outcome::Answered("ok".into())), None).unwrap();
        let rec = Recording::open(&d).unwrap();
        assert_eq!((rec.task.task.as_str(), rec.task.max_turns, &rec.task.geometry), ("do it", 9, &s.geometry));
        assert_eq!(rec.task.policy.to_policy(), policy);
        assert_eq!(rec.lines.len(), 3);
        let StepLine::Turn(t) = &rec.lines[0] else { panic!("{:?}", rec.lines[0]) };
        assert_eq!((t.screenshot.as_str(), t.model_ms, &t.geometry), ("step-001.png", 12, &s.geometry));
        let png = image::open(d.join("step-001.png")).unwrap().to_rgb8();
        assert_eq!(screenshot_hash(&png), t.screenshot_sha256);
        assert_eq!(rec.lines[1], StepLine::Action(action));
        let StepLine::Outcome(o) = &rec.lines[2] else { panic!() };
        assert_eq!(o.outcome, Some(Outcome::Answered("ok".into())));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_folder_with_files_is_refused_and_a_turn_needs_a_start() {
        let d = dir("notempty");
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("x"), b"x").unwrap();
        assert!(matches!(Recorder::new(&d), Err(RecordError::NotEmpty(_))));
        let d2 = dir("nostart");
        let mut r = Recorder::new(&d2).unwrap();
        assert!(matches!(r.turn(1, &shot(), "", 0), Err(RecordError::State(_))));
        assert!(matches!(r.turn(1, &shot(), "", 0), Err(RecordError::Closed)), "closed after a failure");
        for d in [d, d2] {
            fs::remove_dir_all(&d).unwrap();
        }
    }

    #[test]
    fn a_removed_folder_fails_the_next_write_and_closes_the_recorder() {
        let d = dir("removed");
        let mut r = Recorder::new(&d).unwrap();
        let s = shot();
        r.start("t", &Policy::default(), 3, &s.geometry).unwrap();
        fs::remove_dir_all(&d).unwrap();
        let err = r.turn(1, &s, "out", 1).unwrap_err();
        assert!(matches!(err, RecordError::Write { .. }) && err.to_string().contains("step-001.png"), "{err}");
        assert!(matches!(r.outcome(None, Some("x".into())), Err(RecordError::Closed)));
    }
}
