//! Model commands: settings, open a local folder, model info, download from the hub.

use std::sync::Arc;

use tauri::ipc::Channel;
use tauri::State;

use screenpilot_desktop::assistant::{Assistant, ModelInfo};
use screenpilot_desktop::engine_assistant::EngineAssistant;
use screenpilot_desktop::download::{self, CancelToken, DownloadProgress, DownloadRequest};
use screenpilot_desktop::settings::Settings;
use screenpilot_desktop::DesktopError;

use crate::error::{blocking, CmdResult};
use crate::state::{lock, AppState};

/// The remembered settings.
#[tauri::command]
pub fn settings_get(state: State<'_, AppState>) -> Settings {
    lock(&state.settings).clone()
}

/// Loads a model folder, remembers it, and returns what was loaded.
#[tauri::command]
pub async fn model_open(path: String, state: State<'_, AppState>) -> CmdResult<ModelInfo> {
    let dir = std::path::PathBuf::from(path.trim());
    if !dir.is_absolute() {
        return Err(DesktopError::InvalidArgument("the model folder must be an absolute path".into()).into());
    }
    let max_tokens = lock(&state.settings).max_image_tokens.or(Some(1024));
    let d = dir.clone();
    let assistant = blocking(move || Ok(EngineAssistant::load(&d, max_tokens)?)).await?;
    let info = assistant.info();
    state.session.set_assistant(Arc::new(assistant));
    let mut settings = lock(&state.settings);
    settings.model_dir = Some(dir);
    settings.save(&state.settings_path)?;
    Ok(info)
}

/// The loaded model, if any.
#[tauri::command]
pub fn model_info(state: State<'_, AppState>) -> Option<ModelInfo> {
    state.session.assistant().map(|a| a.info())
}

/// Downloads `repo` at `revision` with progress on `on_progress`; returns the folder
/// (load it with `model_open`). A cancelled download resumes when started again.
#[tauri::command]
pub async fn model_download(repo: String, revision: Option<String>, on_progress: Channel<DownloadProgress>, state: State<'_, AppState>) -> CmdResult<String> {
    download::validate_repo_id(&repo)?;
    let token = CancelToken::new();
    *lock(&state.download) = Some(token.clone());
    let req = DownloadRequest {
        endpoint: download::resolve_endpoint(lock(&state.settings).hf_endpoint.as_deref()),
        repo,
        revision: revision.unwrap_or_else(|| "main".into()),
        cache_dir: state.models_dir.clone(),
        parallel: 4,
    };
    let sink = Arc::new(move |p: DownloadProgress| {
        let _ = on_progress.send(p);
    });
    let dir = blocking(move || Ok(download::download(&req, &token, sink)?)).await?;
    Ok(dir.display().to_string())
}

/// Cancels the running download.
#[tauri::command]
pub fn model_download_cancel(state: State<'_, AppState>) {
    if let Some(t) = lock(&state.download).take() {
        t.cancel();
    }
}
