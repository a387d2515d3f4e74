//! Rewind commands: the indicator's status, a question about the last N seconds or about what
//! changed (answers streamed over a channel, like Ask; the conversation is not stored on disk,
//! since rewind keeps the screen in memory only), and saving a clip to a folder the user picked.
//! Recording follows the settings (`rewind.enabled`), applied at start and on every save.

use std::path::PathBuf;

use serde::Serialize;
use tauri::ipc::Channel;
use tauri::State;

use screenpilot_desktop::assistant::AskOutcome;
use screenpilot_desktop::rewind::{ask, save, RewindStatus};

use super::capture::{data_url, CaptureView};
use crate::error::{blocking, CmdResult};
use crate::state::{lock, AppState};

/// Whether rewind records, and what it holds.
#[tauri::command]
pub fn rewind_status(state: State<'_, AppState>) -> RewindStatus {
    state.rewind.status()
}

/// A rewind answer and what the model was shown, so the answer can say what it is about.
#[derive(Debug, Serialize)]
pub struct RewindAnswer {
    #[serde(flatten)]
    pub outcome: AskOutcome,
    /// Frames sent: those of the clip, or 2 for "what changed".
    pub frames: usize,
    /// Seconds of screen the clip spans (0 for "what changed").
    pub seconds: f64,
    /// The newest frame asked about, now the conversation's capture (shown on the stage).
    pub frame: Option<CaptureView>,
}

/// The conversation's capture (the newest frame of the clip or the change) as the stage shows it.
fn frame(session: &screenpilot_desktop::session::Session) -> CmdResult<Option<CaptureView>> {
    let Some(shot) = session.capture() else { return Ok(None) };
    let png = data_url(&screenpilot_desktop::screen::png_bytes(&shot.image)?);
    Ok(Some(CaptureView { png, geometry: screenpilot_desktop::screen::geometry_view(&shot.geometry), thread: None }))
}

/// Asks `question` about the last `seconds` of the screen (sent as a video).
#[tauri::command]
pub async fn rewind_ask(seconds: f64, question: String, on_token: Channel<String>, state: State<'_, AppState>) -> CmdResult<RewindAnswer> {
    let (session, rewind) = (state.session.clone(), state.rewind.clone());
    *lock(&state.thread) = None;
    blocking(move || {
        let outcome = ask::ask_recent(&session, &rewind, seconds, &question, &mut |p| drop(on_token.send(p.to_string())))?;
        // The clip just asked about: its frames, and the time steps its indices count at its fps.
        let (frames, seconds) = session.clip().map_or((0, 0.0), |c| {
            let steps = c.indices.last().map_or(0, |i| i + 1) as f64;
            (c.frames.len(), c.fps.filter(|f| *f > 0.0).map_or(0.0, |f| steps / f))
        });
        Ok(RewindAnswer { outcome, frames, seconds, frame: frame(&session)? })
    })
    .await
}

/// Asks `question` about what changed since the last rewind question (two images).
#[tauri::command]
pub async fn rewind_changed(question: String, on_token: Channel<String>, state: State<'_, AppState>) -> CmdResult<RewindAnswer> {
    let (session, rewind) = (state.session.clone(), state.rewind.clone());
    *lock(&state.thread) = None;
    blocking(move || {
        let outcome = ask::ask_changed(&session, &rewind, &question, &mut |p| drop(on_token.send(p.to_string())))?;
        Ok(RewindAnswer { outcome, frames: 2, seconds: 0.0, frame: frame(&session)? })
    })
    .await
}

/// Writes the last `seconds` into `dir` as PNG frames and clip.json; returns how many frames.
#[tauri::command]
pub async fn rewind_save(seconds: f64, dir: PathBuf, state: State<'_, AppState>) -> CmdResult<usize> {
    let rewind = state.rewind.clone();
    blocking(move || {
        let view = rewind.clip(seconds)?;
        Ok(save::save_clip(&view.clip, &dir)?.len().saturating_sub(1))
    })
    .await
}
