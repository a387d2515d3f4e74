//! Model and settings commands: the settings (read; validate and save as one), what a capture
//! costs in image tokens, load a local folder (with the device, precision and token cap of the
//! settings) or reload it, the model list with fit marks and the installed models, download
//! from the hub and delete, and which backend answers Ask and To HTML (this computer or an
//! OpenAI-compatible server).

use std::sync::Arc;

use serde::Serialize;
use tauri::ipc::Channel;
use tauri::{AppHandle, State};

use screenpilot_desktop::assistant::{Assistant, ModelInfo};
use screenpilot_desktop::backend_assistant::BackendAssistant;
use screenpilot_desktop::catalog::{self, CatalogRow, DeviceMemory, InstalledModel};
use screenpilot_desktop::download::{self, CancelToken, DownloadProgress, DownloadRequest};
use screenpilot_desktop::engine_assistant::{EngineAssistant, LoadOptions};
use screenpilot_desktop::settings::{self, FieldError, Settings};
use screenpilot_desktop::DesktopError;

use crate::error::{blocking, CmdResult, CommandError};
use crate::state::{lock, AppState};

/// The image-token cap when the settings name none.
pub const DEFAULT_IMAGE_TOKENS: usize = 1024;

/// The settings and what the Settings view shows beside them.
#[derive(Debug, Serialize)]
pub struct SettingsView {
    /// The saved settings.
    pub settings: Settings,
    /// The data folder in use now.
    pub data_dir: String,
    /// Bytes the stored conversations take.
    pub threads_bytes: u64,
}

fn settings_view(state: &AppState) -> SettingsView {
    SettingsView { settings: lock(&state.settings).clone(), data_dir: state.data_dir.display().to_string(), threads_bytes: state.threads.total_bytes() }
}

/// The saved settings.
#[tauri::command]
pub fn settings_get(state: State<'_, AppState>) -> SettingsView {
    settings_view(&state)
}

/// Validates `settings` as a whole and saves it; a bad field saves nothing and comes back as
/// an `invalid_settings` error listing every bad field. New hotkeys take effect at once (one that
/// another program holds is a field error, and the old ones stay); a new backend is connected
/// before saving (a server that cannot be used is a field error) and answers from then on;
/// the conversation limits apply at once, the audit log's at the next start.
#[tauri::command]
pub async fn settings_set(settings: Settings, app: AppHandle, state: State<'_, AppState>) -> CmdResult<SettingsView> {
    let new = settings;
    new.validate().map_err(CommandError::InvalidSettings)?;
    let old = lock(&state.settings).clone();
    let backend_changed = (old.use_server, &old.backend_url, &old.backend_model, &old.backend_key) != (new.use_server, &new.backend_url, &new.backend_model, &new.backend_key);
    let server: Option<Arc<dyn Assistant>> = if backend_changed && new.use_server {
        let connected = connect_server(&new).await;
        let server = connected.map_err(|e| CommandError::InvalidSettings(vec![FieldError { field: "backend_url".into(), message: e.to_string() }]))?;
        Some(Arc::new(server))
    } else {
        None
    };
    if (&old.hotkey_capture, &old.hotkey_stop) != (&new.hotkey_capture, &new.hotkey_stop) {
        crate::hotkeys::apply(&app, &new).map_err(CommandError::InvalidSettings)?;
    }
    // The MCP server: a port that cannot be bound is a field error, and the old setup comes back.
    if let Err(e) = state.mcp.apply(&new).await {
        let _ = state.mcp.apply(&old).await;
        return Err(CommandError::InvalidSettings(vec![e]));
    }
    let monitor = state.monitor.load(std::sync::atomic::Ordering::Relaxed);
    let rewound = state.rewind.apply(&new.rewind, monitor);
    crate::tray::show_rewind(&app, state.rewind.is_recording());
    rewound.map_err(|e| CommandError::InvalidSettings(vec![FieldError { field: "rewind_enabled".into(), message: e.to_string() }]))?;
    new.save(&state.settings_path)?;
    *lock(&state.settings) = new.clone();
    if backend_changed {
        match server.or_else(|| lock(&state.local).clone()) {
            Some(a) => state.session.set_assistant(a),
            None => state.session.clear_assistant(),
        }
    }
    // The conversation limits apply at once; the audit log's age limit at the next start (the
    // task runner appends to the open file, which pruning replaces).
    let (threads, keep) = (state.threads.clone(), lock(&state.thread).clone());
    blocking(move || {
        threads.enforce_limits(&new, screenpilot_desktop::threads::now_ms(), keep.as_deref())?;
        Ok(())
    })
    .await?;
    Ok(settings_view(&state))
}

/// Every bad field of `settings` (empty: they would save), without saving anything.
#[tauri::command]
pub fn settings_check(settings: Settings) -> Vec<FieldError> {
    settings.validate().err().unwrap_or_default()
}

/// Image tokens a `width`×`height` capture costs at `cap` (None: the default cap).
#[tauri::command]
pub fn image_tokens(width: u32, height: u32, cap: Option<usize>) -> CmdResult<usize> {
    if width == 0 || height == 0 || width > 32768 || height > 32768 {
        return Err(DesktopError::InvalidArgument(format!("screen size {width}x{height}")).into());
    }
    Ok(settings::image_tokens(width, height, Some(cap.unwrap_or(DEFAULT_IMAGE_TOKENS))))
}

fn load_options(s: &Settings) -> LoadOptions {
    LoadOptions { max_image_tokens: Some(s.max_image_tokens.unwrap_or(DEFAULT_IMAGE_TOKENS)), device: s.device.clone(), dtype: s.dtype.clone(), quant: s.quant.clone() }
}

/// Loads a model folder with the settings' device, precision and cap, remembers it, and
/// returns what was loaded. It answers questions unless the server was chosen (then it is
/// kept for tasks and for switching back).
pub async fn open_folder(dir: std::path::PathBuf, state: &AppState) -> CmdResult<ModelInfo> {
    if !dir.is_absolute() {
        return Err(DesktopError::InvalidArgument("the model folder must be an absolute path".into()).into());
    }
    let opts = load_options(&lock(&state.settings));
    let d = dir.clone();
    let assistant = blocking(move || Ok(EngineAssistant::load_with(&d, &opts)?)).await?;
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

/// Loads the model folder at `path`.
#[tauri::command]
pub async fn model_open(path: String, state: State<'_, AppState>) -> CmdResult<ModelInfo> {
    open_folder(std::path::PathBuf::from(path.trim()), &state).await
}

/// Loads the remembered folder again (after changing the device, precision or cap); what
/// answers now (None: nothing to load).
#[tauri::command]
pub async fn model_reload(state: State<'_, AppState>) -> CmdResult<Option<ModelInfo>> {
    let Some(dir) = lock(&state.settings).model_dir.clone() else { return Ok(None) };
    open_folder(dir, &state).await?;
    Ok(state.session.assistant().map(|a| a.info()))
}

/// The loaded model, if any.
#[tauri::command]
pub fn model_info(state: State<'_, AppState>) -> Option<ModelInfo> {
    state.session.assistant().map(|a| a.info())
}

/// The model list as the Models view shows it.
#[derive(Debug, Serialize)]
pub struct ModelsView {
    /// GPU and RAM the fit marks are computed for.
    pub memory: DeviceMemory,
    /// The Qwen3-VL models people run, with fit marks and whether each is installed.
    pub catalog: Vec<CatalogRow>,
    /// Every downloaded model (those of the list and any other repository).
    pub installed: Vec<InstalledModel>,
}

/// The model list, fit marks and installed models.
#[tauri::command]
pub async fn models_list(state: State<'_, AppState>) -> CmdResult<ModelsView> {
    let (memory, dir) = (state.memory.clone(), state.models_dir.clone());
    blocking(move || {
        let installed = catalog::installed(&dir);
        Ok(ModelsView { catalog: catalog::rows(&memory, &installed), installed, memory })
    })
    .await
}

/// Deletes downloaded model `repo` from disk; the bytes freed. The loaded model keeps running
/// from memory until another is loaded.
#[tauri::command]
pub async fn model_delete(repo: String, state: State<'_, AppState>) -> CmdResult<u64> {
    let dir = state.models_dir.clone();
    blocking(move || Ok(catalog::delete_installed(&dir, &repo)?)).await
}

/// The server's API key: the one in the settings, else `$SCREENPILOT_API_KEY`.
pub fn api_key(s: &Settings) -> Option<String> {
    s.backend_key.clone().filter(|k| !k.is_empty()).or_else(|| std::env::var("SCREENPILOT_API_KEY").ok().filter(|k| !k.is_empty()))
}

/// Connects to the OpenAI-compatible server of `s` (URL, model, key; off the async runtime).
async fn connect_server(s: &Settings) -> CmdResult<BackendAssistant> {
    let url = s.backend_url.clone().filter(|u| !u.is_empty());
    let url = url.ok_or_else(|| DesktopError::InvalidArgument("type the server's URL in Settings (http://HOST:PORT/v1)".into()))?;
    let (model, key) = (s.backend_model.clone(), api_key(s));
    blocking(move || Ok(BackendAssistant::connect_with_key(&url, model.as_deref(), key)?)).await
}

/// Chooses what answers Ask and To HTML (at start; Settings switch through `settings_set`):
/// `local` (the loaded local model, None if there is none) or `server` (the OpenAI-compatible
/// server of the settings: URL, model, key). A server that cannot be used gives its one-line
/// error and leaves everything as it was.
#[tauri::command]
pub async fn backend_use(kind: String, state: State<'_, AppState>) -> CmdResult<Option<ModelInfo>> {
    let assistant: Option<Arc<dyn Assistant>> = match kind.as_str() {
        "local" => lock(&state.local).clone(),
        "server" => {
            let settings = lock(&state.settings).clone();
            Some(Arc::new(connect_server(&settings).await?))
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
