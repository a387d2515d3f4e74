//! Model commands: settings, open a local folder, model info, download from the hub, and
//! which backend answers Ask and To HTML (the local model or an OpenAI-compatible server).

use std::sync::Arc;

use tauri::ipc::Channel;
use tauri::State;

use screenpilot_desktop::assistant::{Assistant, ModelInfo};
use screenpilot_desktop::backend_assistant::BackendAssistant;
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

/// Loads a model folder, remembers it, and returns what was loaded. It answers questions
/// unless the server was chosen (then it is kept for tasks and for switching back).
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
    let assistant: Arc<dyn Assistant> = Arc::new(assistant);
    *lock(&state.local) = Some(Arc::clone(&assistant));
    let mut settings = lock(&state.settings);
    if !settings.use_server {
        state.session.set_assistant(assistant);
    }
    settings.model_dir = Some(dir);
    settings.save(&state.settings_path)?;
    Ok(info)
}

/// The loaded model, if any.
#[tauri::command]
pub fn model_info(state: State<'_, AppState>) -> Option<ModelInfo> {
    state.session.assistant().map(|a| a.info())
}

/// Chooses what answers Ask and To HTML: `local` (the loaded local model, None if there is
/// none) or `server` (connects to the OpenAI-compatible server at `url` asking for `model`,
/// empty: the first it lists; key from `$SCREENPILOT_API_KEY`). The choice, URL and model are
/// saved to settings.json once it works; a server that cannot be used gives its one-line
/// error and leaves everything as it was.
#[tauri::command]
pub async fn backend_use(kind: String, url: Option<String>, model: Option<String>, state: State<'_, AppState>) -> CmdResult<Option<ModelInfo>> {
    let assistant: Option<Arc<dyn Assistant>> = match kind.as_str() {
        "local" => lock(&state.local).clone(),
        "server" => {
            let url = url.map(|u| u.trim().to_string()).filter(|u| !u.is_empty());
            let url = url.ok_or_else(|| DesktopError::InvalidArgument("type the server's URL (http://HOST:PORT/v1)".into()))?;
            let model = model.map(|m| m.trim().to_string()).filter(|m| !m.is_empty());
            let (u, m) = (url.clone(), model.clone());
            let server = blocking(move || Ok(BackendAssistant::connect(&u, m.as_deref())?)).await?;
            let mut settings = lock(&state.settings);
            settings.backend_url = Some(url);
            settings.backend_model = model;
            Some(Arc::new(server))
        }
        other => return Err(DesktopError::InvalidArgument(format!("unknown backend {other:?}")).into()),
    };
    let info = assistant.as_ref().map(|a| a.info());
    match assistant {
        Some(a) => state.session.set_assistant(a),
        None => state.session.clear_assistant(),
    }
    let mut settings = lock(&state.settings);
    settings.use_server = kind == "server";
    settings.save(&state.settings_path)?;
    Ok(info)
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
