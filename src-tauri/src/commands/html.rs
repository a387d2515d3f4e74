//! Screenshot → HTML: generate a page of the capture, save it, score its fidelity; save a copy
//! where the user chooses.

use serde::Serialize;
use tauri::State;

use screenpilot_desktop::html::{self, Page};
use screenpilot_desktop::DesktopError;

use crate::commands::capture::data_url;
use crate::error::{blocking, CmdResult};
use crate::state::{lock, AppState};

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
    *lock(&state.last_page) = Some(std::path::PathBuf::from(&page.path));
    let diff = page.diff_png.as_deref().map(data_url);
    Ok(PageView { page, diff })
}

/// Copies the last generated page to `dest` (a path the save dialog gave: absolute, `.html`).
#[tauri::command]
pub async fn html_save(dest: String, state: State<'_, AppState>) -> CmdResult<()> {
    let src = lock(&state.last_page).clone().ok_or_else(|| DesktopError::InvalidArgument("generate a page first".into()))?;
    let dest = std::path::PathBuf::from(dest);
    let html_ext = dest.extension().is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"));
    if !dest.is_absolute() || !html_ext {
        return Err(DesktopError::InvalidArgument(format!("save the page as an absolute path ending in .html, not {}", dest.display())).into());
    }
    blocking(move || {
        std::fs::copy(&src, &dest).map_err(|e| DesktopError::io(&dest, e))?;
        Ok(())
    })
    .await
}
