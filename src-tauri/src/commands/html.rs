//! Screenshot → HTML: generate a page of the capture, save it, score its fidelity.

use base64::Engine;
use serde::Serialize;
use tauri::State;

use screenpilot_desktop::html::{self, Page};

use crate::error::{blocking, CmdResult};
use crate::state::AppState;

/// A page for the UI (the diff image as a data URL).
#[derive(Debug, Serialize)]
pub struct PageView {
    /// The page.
    #[serde(flatten)]
    pub page: Page,
    /// `data:image/png;base64,...` of the difference, if scored.
    pub diff: Option<String>,
}

/// Generates, saves and scores a page for the current capture.
#[tauri::command]
pub async fn html_generate(state: State<'_, AppState>) -> CmdResult<PageView> {
    let (session, dir) = (state.session.clone(), state.html_dir.clone());
    let page = blocking(move || Ok(html::generate_page(&session, &dir)?)).await?;
    let diff = page.diff_png.as_ref().map(|p| format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(p)));
    Ok(PageView { page, diff })
}
