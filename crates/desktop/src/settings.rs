//! The app's remembered choices: a small JSON file in the app config folder, written
//! atomically (temporary file + rename). Unknown or missing fields fall back to defaults, so
//! files of older versions load. [`Settings::validate`] names every bad field with a message a
//! person reads; [`parse_hotkey`] reads shortcuts like `Ctrl+Shift+S`, and [`image_tokens`]
//! says what a capture costs under a token cap (the model crate's own resize arithmetic).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use screenpilot_model::preprocess::smart_resize;
use screenpilot_model::{GridThw, PreprocessConfig};

use crate::error::{DesktopError, Result};
use crate::mcp::{McpConfig, ToolName};

/// The app's identifier; its folders are named after it.
pub const APP_ID: &str = "dev.screenpilot.app";

/// The data folder the app uses when the settings name none (where Tauri's `app_data_dir`
/// puts it on each platform), for the CLI's `mcp` audit log. None without a home folder.
pub fn default_data_dir() -> Option<PathBuf> {
    let home = || std::env::var_os("HOME").map(PathBuf::from);
    let base = if cfg!(target_os = "macos") {
        home()?.join("Library/Application Support")
    } else if cfg!(windows) {
        PathBuf::from(std::env::var_os("APPDATA")?)
    } else {
        std::env::var_os("XDG_DATA_HOME").map(PathBuf::from).filter(|p| p.is_absolute()).or_else(|| home().map(|h| h.join(".local/share")))?
    };
    Some(base.join(APP_ID))
}

/// What the app remembers between runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Settings {
    /// The last model folder that loaded.
    pub model_dir: Option<PathBuf>,
    /// Hub endpoint for downloads (empty: `$HF_ENDPOINT` or the public hub).
    pub hf_endpoint: Option<String>,
    /// Cap on visual tokens per image (large screens are thousands of tokens); None: the
    /// app's default [`DEFAULT_MAX_IMAGE_TOKENS`]. Valid: [`MIN_IMAGE_TOKENS`]..=[`MAX_IMAGE_TOKENS`].
    pub max_image_tokens: Option<usize>,
    /// An OpenAI-compatible server tasks may run on instead of the local model (base URL
    /// ending in `/v1`; its key comes from `$SCREENPILOT_API_KEY`).
    pub backend_url: Option<String>,
    /// The model to ask that server for (None: the first it lists).
    pub backend_model: Option<String>,
    /// The key for that server (None: the app falls back to `$SCREENPILOT_API_KEY`).
    pub backend_key: Option<String>,
    /// Ask and To HTML use that server instead of the local model (Settings, "Where the model runs").
    pub use_server: bool,
    /// Where the model runs: `auto` (a GPU when there is one), `cpu`, `cuda`, `metal`.
    pub device: String,
    /// Precision: `auto` (bf16 on a GPU, f32 on the CPU), `f32`, `bf16`, `f16`.
    pub dtype: String,
    /// The language model's weights quantized at load: `none`, `q8_0`, `q6_k`, `q5_k`, `q4_k`,
    /// `q4_0` (smaller and faster on the CPU, at a quality cost BENCHMARKS.md measures).
    pub quant: String,
    /// Global shortcut that captures the screen.
    pub hotkey_capture: String,
    /// Global shortcut that stops an answer or a task.
    pub hotkey_stop: String,
    /// Where conversations and the audit log live (None: the app's default folder).
    pub data_dir: Option<PathBuf>,
    /// Conversations not touched for this many days are deleted (0: kept forever).
    pub thread_days: u32,
    /// Conversations take at most this many MiB; the oldest go first.
    pub thread_cap_mib: u64,
    /// Audit records older than this many days are deleted (0: kept forever).
    pub audit_days: u32,
    /// The app serves MCP clients (streamable HTTP on 127.0.0.1:`mcp_port`) while it runs.
    pub mcp_enabled: bool,
    /// The MCP server's port.
    pub mcp_port: u16,
    /// The bearer token MCP clients must send (None: none, loopback only anyway).
    pub mcp_token: Option<String>,
    /// MCP clients may have screenshots (`screenshot`); off: text and coordinates only.
    pub mcp_share_screenshots: bool,
    /// MCP clients may act (each action still confirmed).
    pub mcp_allow_actions: bool,
    /// The tools MCP clients see.
    pub mcp_tools: Vec<String>,
    /// Rewind: the recent screen kept in memory (off by default).
    pub rewind: crate::rewind::settings::RewindSettings,
}

/// The MCP server's default port.
pub const DEFAULT_MCP_PORT: u16 = 8765;

/// Visual tokens per image when the settings leave it open.
pub const DEFAULT_MAX_IMAGE_TOKENS: usize = 1024;
/// Smallest token cap (Qwen3-VL's minimum image is 64 tokens).
pub const MIN_IMAGE_TOKENS: usize = 64;
/// Largest token cap (Qwen3-VL's maximum image is 16384 tokens).
pub const MAX_IMAGE_TOKENS: usize = 16384;
/// Choices of [`Settings::device`].
pub const DEVICES: [&str; 4] = ["auto", "cpu", "cuda", "metal"];
/// Choices of [`Settings::dtype`].
pub const DTYPES: [&str; 4] = ["auto", "f32", "bf16", "f16"];
/// Choices of [`Settings::quant`].
pub const QUANTS: [&str; 6] = ["none", "q8_0", "q6_k", "q5_k", "q4_k", "q4_0"];
/// Longest retention in days (100 years).
pub const MAX_DAYS: u32 = 36_500;
/// Largest conversation cap, MiB (1 TiB).
pub const MAX_THREAD_CAP_MIB: u64 = 1 << 20;

impl Default for Settings {
    fn default() -> Self {
        Self {
            model_dir: None,
            hf_endpoint: None,
            max_image_tokens: None,
            backend_url: None,
            backend_model: None,
            backend_key: None,
            use_server: false,
            device: "auto".into(),
            dtype: "auto".into(),
            quant: "none".into(),
            hotkey_capture: "Ctrl+Shift+S".into(),
            hotkey_stop: "Ctrl+Shift+X".into(),
            data_dir: None,
            thread_days: 30,
            thread_cap_mib: 512,
            audit_days: 90,
            mcp_enabled: false,
            mcp_port: DEFAULT_MCP_PORT,
            mcp_token: None,
            mcp_share_screenshots: false,
            mcp_allow_actions: false,
            mcp_tools: ToolName::ALL.iter().map(|t| t.as_str().to_string()).collect(),
            rewind: Default::default(),
        }
    }
}

/// A field of the settings that is not acceptable, and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FieldError {
    /// The field's name as in the settings file (`hotkey_stop`).
    pub field: String,
    /// What is wrong, for a person.
    pub message: String,
}

/// A keyboard shortcut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hotkey {
    pub ctrl: bool,
    pub shift: bool,
    pub alt: bool,
    pub meta: bool,
    /// `S`, `7`, `F5`, `Space`.
    pub key: String,
}

impl std::fmt::Display for Hotkey {
    /// The canonical spelling: `Ctrl+Alt+Shift+Super+S` (modifiers present, in that order).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (on, name) in [(self.ctrl, "Ctrl"), (self.alt, "Alt"), (self.shift, "Shift"), (self.meta, "Super")] {
            if on {
                write!(f, "{name}+")?;
            }
        }
        f.write_str(&self.key)
    }
}

/// Reads a shortcut like `Ctrl+Shift+S`: modifiers Ctrl/Control, Shift, Alt/Option,
/// Super/Meta/Cmd/Command (any case), then exactly one key: A-Z, 0-9, F1-F24 or Space.
/// At least one modifier, except for function keys.
pub fn parse_hotkey(s: &str) -> std::result::Result<Hotkey, String> {
    let bad = |why: &str| format!("not a hotkey: {s:?} ({why})");
    let mut hk = Hotkey { ctrl: false, shift: false, alt: false, meta: false, key: String::new() };
    let mut key: Option<String> = None;
    for part in s.split('+').map(str::trim) {
        if part.is_empty() {
            return Err(bad("an empty part"));
        }
        let lower = part.to_ascii_lowercase();
        let modifier = match lower.as_str() {
            "ctrl" | "control" => Some(&mut hk.ctrl),
            "shift" => Some(&mut hk.shift),
            "alt" | "option" => Some(&mut hk.alt),
            "super" | "meta" | "cmd" | "command" => Some(&mut hk.meta),
            _ => None,
        };
        if let Some(m) = modifier {
            if *m {
                return Err(bad(&format!("{part} appears twice")));
            }
            *m = true;
            continue;
        }
        if key.is_some() {
            return Err(bad("more than one key"));
        }
        key = Some(normal_key(part).ok_or_else(|| bad(&format!("unknown key {part:?}: use A-Z, 0-9, F1-F24 or Space")))?);
    }
    let key = key.ok_or_else(|| bad("no key after the modifiers"))?;
    let function_key = key.len() > 1 && key.starts_with('F');
    if !(hk.ctrl || hk.shift || hk.alt || hk.meta || function_key) {
        return Err(bad("add Ctrl, Alt, Shift or Super"));
    }
    hk.key = key;
    Ok(hk)
}

fn normal_key(part: &str) -> Option<String> {
    let upper = part.to_ascii_uppercase();
    if upper.len() == 1 && upper.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Some(upper);
    }
    if upper == "SPACE" {
        return Some("Space".into());
    }
    let n: u32 = upper.strip_prefix('F')?.parse().ok()?;
    ((1..=24).contains(&n) && !upper[1..].starts_with('0')).then(|| format!("F{n}"))
}

/// Visual tokens a `width`×`height` capture costs with Qwen3-VL's default preprocessing bounds
/// and the token cap `cap` (None: [`DEFAULT_MAX_IMAGE_TOKENS`]); 0 for a size the model
/// refuses (a zero side, an aspect ratio above 200).
pub fn image_tokens(width: u32, height: u32, cap: Option<usize>) -> usize {
    let cfg = PreprocessConfig { max_image_tokens: Some(cap.unwrap_or(DEFAULT_MAX_IMAGE_TOKENS)), ..PreprocessConfig::qwen3_vl_default() };
    let (min_pixels, max_pixels) = cfg.pixel_bounds();
    let Ok(factor) = u32::try_from(cfg.factor()) else { return 0 };
    match smart_resize(height, width, factor, min_pixels, max_pixels) {
        Ok((h, w)) => GridThw { t: 1, h: h as usize / cfg.patch_size, w: w as usize / cfg.patch_size }.num_tokens(cfg.merge_size),
        Err(_) => 0,
    }
}

fn http_url(s: &str) -> bool {
    let rest = s.strip_prefix("http://").or_else(|| s.strip_prefix("https://"));
    rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or("");
        !host.is_empty() && !s.contains(char::is_whitespace)
    })
}

impl Settings {
    /// Every field that is not acceptable, each with a message (Ok: all are).
    pub fn validate(&self) -> std::result::Result<(), Vec<FieldError>> {
        let mut errs = Vec::new();
        let mut err = |field: &str, message: String| errs.push(FieldError { field: field.into(), message });
        if let Some(n) = self.max_image_tokens {
            if !(MIN_IMAGE_TOKENS..=MAX_IMAGE_TOKENS).contains(&n) {
                err("max_image_tokens", format!("must be between {MIN_IMAGE_TOKENS} and {MAX_IMAGE_TOKENS}"));
            }
        }
        if !DEVICES.contains(&self.device.as_str()) {
            err("device", format!("{:?} is not one of {}", self.device, DEVICES.join(", ")));
        }
        if !DTYPES.contains(&self.dtype.as_str()) {
            err("dtype", format!("{:?} is not one of {}", self.dtype, DTYPES.join(", ")));
        }
        if !QUANTS.contains(&self.quant.as_str()) {
            err("quant", format!("{:?} is not one of {}", self.quant, QUANTS.join(", ")));
        }
        let capture = parse_hotkey(&self.hotkey_capture);
        let stop = parse_hotkey(&self.hotkey_stop);
        match (&capture, &stop) {
            (Ok(c), Ok(s)) if c == s => err("hotkey_stop", format!("the capture and stop hotkeys are both {c}")),
            _ => {}
        }
        if let Err(m) = capture {
            err("hotkey_capture", m);
        }
        if let Err(m) = stop {
            err("hotkey_stop", m);
        }
        if let Some(d) = &self.data_dir {
            if !d.is_absolute() {
                err("data_dir", format!("{} must be an absolute folder", d.display()));
            } else if d.exists() && !d.is_dir() {
                err("data_dir", format!("{} is a file, not a folder", d.display()));
            }
        }
        for (field, days) in [("thread_days", self.thread_days), ("audit_days", self.audit_days)] {
            if days > MAX_DAYS {
                err(field, format!("must be at most {MAX_DAYS} days (0 keeps forever)"));
            }
        }
        if !(1..=MAX_THREAD_CAP_MIB).contains(&self.thread_cap_mib) {
            err("thread_cap_mib", format!("must be between 1 and {MAX_THREAD_CAP_MIB} MiB"));
        }
        if self.use_server && self.backend_url.as_deref().is_none_or(|u| u.trim().is_empty()) {
            err("backend_url", "type the server's address (http://HOST:PORT/v1) to use a server".into());
        }
        if self.backend_key.as_deref().is_some_and(|k| k.chars().any(char::is_control)) {
            err("backend_key", "an API key is one line without control characters".into());
        }
        for (field, url) in [("backend_url", &self.backend_url), ("hf_endpoint", &self.hf_endpoint)] {
            if let Some(u) = url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
                if !http_url(u) {
                    err(field, format!("{u:?} is not an http:// or https:// address"));
                }
            }
        }
        if self.mcp_port == 0 {
            err("mcp_port", "must be a port between 1 and 65535".into());
        }
        if self.mcp_token.as_deref().is_some_and(|k| k.chars().any(|c| c.is_control() || c == ' ')) {
            err("mcp_token", "a token is one word without spaces or control characters".into());
        }
        match self.mcp_tool_set() {
            Err(m) => err("mcp_tools", m),
            Ok(t) if t.is_empty() && self.mcp_enabled => err("mcp_tools", "offer at least one tool".into()),
            Ok(_) => {}
        }
        errs.extend(self.rewind.field_errors());
        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }

    /// The tools MCP clients see, each name checked.
    fn mcp_tool_set(&self) -> std::result::Result<BTreeSet<ToolName>, String> {
        self.mcp_tools.iter().map(|t| t.parse::<ToolName>()).collect()
    }

    /// What MCP clients are allowed, with action decisions going to `audit`.
    pub fn mcp_config(&self, audit: PathBuf) -> McpConfig {
        McpConfig {
            tools: self.mcp_tool_set().unwrap_or_default(),
            share_screenshots: self.mcp_share_screenshots,
            allow_actions: self.mcp_allow_actions,
            max_tokens: crate::session::DEFAULT_MAX_TOKENS,
            audit: Some(audit),
        }
    }

    /// Reads `path`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| DesktopError::io(path, std::io::Error::new(std::io::ErrorKind::InvalidData, e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(DesktopError::io(path, e)),
        }
    }

    /// Writes `path` atomically, creating its folder.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| DesktopError::io(dir, e))?;
        }
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| DesktopError::io(path, std::io::Error::other(e)))?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).map_err(|e| DesktopError::io(&tmp, e))?;
        // It may hold the server's API key: only its owner may read it (Unix).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(|e| DesktopError::io(&tmp, e))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| DesktopError::io(path, e))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use image::{DynamicImage, RgbImage};

    #[test]
    fn round_trips_and_defaults_when_missing() {
        let dir = std::env::temp_dir().join(format!("sp-settings-{}", std::process::id()));
        let path = dir.join("settings.json");
        let _ = std::fs::remove_file(&path);
        assert_eq!(Settings::load(&path).unwrap(), Settings::default());
        let s = Settings { model_dir: Some("/m".into()), hf_endpoint: Some("http://x".into()), max_image_tokens: Some(64), ..Settings::default() };
        s.save(&path).unwrap();
        assert_eq!(Settings::load(&path).unwrap(), s);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "the key inside is the owner's only");
        }
        std::fs::write(&path, "{\"model_dir\": \"/n\", \"unknown\": 1}").unwrap();
        assert_eq!(Settings::load(&path).unwrap().model_dir, Some(PathBuf::from("/n")));
        std::fs::write(&path, "not json").unwrap();
        assert!(Settings::load(&path).is_err());
    }

    #[test]
    fn files_of_older_versions_load_with_the_new_defaults() {
        let old = r#"{"model_dir": "/m", "max_image_tokens": 2048, "backend_url": "http://h:8000/v1", "use_server": true}"#;
        let s: Settings = serde_json::from_str(old).unwrap();
        assert_eq!((s.model_dir.as_deref(), s.max_image_tokens, s.use_server), (Some(Path::new("/m")), Some(2048), true));
        let d = Settings::default();
        assert_eq!((s.device.as_str(), s.dtype.as_str(), s.thread_days, s.thread_cap_mib, s.audit_days), ("auto", "auto", 30, 512, 90));
        assert_eq!((s.hotkey_capture.as_str(), s.hotkey_stop.as_str(), &s.data_dir), (d.hotkey_capture.as_str(), d.hotkey_stop.as_str(), &None));
        d.validate().unwrap();
        s.validate().unwrap();
    }

    #[test]
    fn validate_names_every_bad_field() {
        let s = Settings {
            max_image_tokens: Some(63),
            device: "tpu".into(),
            dtype: "int4".into(),
            quant: "q3_k".into(),
            hotkey_capture: "Ctrl+Shift+X".into(),
            hotkey_stop: "shift+control+x".into(),
            data_dir: Some("relative/folder".into()),
            thread_days: MAX_DAYS + 1,
            thread_cap_mib: 0,
            audit_days: 0,
            backend_url: Some("ftp://host/v1".into()),
            hf_endpoint: Some("http://".into()),
            mcp_port: 0,
            mcp_token: Some("two words".into()),
            mcp_tools: vec!["find".into(), "format_disk".into()],
            ..Settings::default()
        };
        let errs = s.validate().unwrap_err();
        let mut fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["backend_url", "data_dir", "device", "dtype", "hf_endpoint", "hotkey_stop", "max_image_tokens", "mcp_port", "mcp_token", "mcp_tools", "quant", "thread_cap_mib", "thread_days"]
        );
        let msg = |f: &str| errs.iter().find(|e| e.field == f).unwrap().message.clone();
        assert_eq!(msg("max_image_tokens"), "must be between 64 and 16384");
        assert!(msg("hotkey_stop").contains("both Ctrl+Shift+X"), "{}", msg("hotkey_stop"));
        assert!(msg("data_dir").contains("must be an absolute folder"));
        for ok in [Some(64), Some(16384), None] {
            Settings { max_image_tokens: ok, ..Settings::default() }.validate().unwrap();
        }
        assert!(Settings { max_image_tokens: Some(16385), ..Settings::default() }.validate().is_err());
        let bad_key = Settings { hotkey_capture: "Ctrl+Shift+Ö".into(), ..Settings::default() }.validate().unwrap_err();
        assert_eq!(bad_key.len(), 1);
        assert_eq!(bad_key[0].field, "hotkey_capture");
        assert!(bad_key[0].message.starts_with("not a hotkey: "), "{}", bad_key[0].message);
        let file = std::env::temp_dir().join(format!("sp-settings-file-{}", std::process::id()));
        std::fs::write(&file, "x").unwrap();
        let e = Settings { data_dir: Some(file.clone()), ..Settings::default() }.validate().unwrap_err();
        assert!(e[0].message.contains("is a file"));
        let _ = std::fs::remove_file(&file);
        let fine = Settings { backend_url: Some("https://api.example.com/v1".into()), hf_endpoint: Some(" ".into()), data_dir: Some(std::env::temp_dir()), ..Settings::default() };
        fine.validate().unwrap();
        // A server needs its address; a key is one line.
        let e = Settings { use_server: true, backend_url: Some("  ".into()), backend_key: Some("sk\nx".into()), ..Settings::default() }.validate().unwrap_err();
        assert_eq!(e.iter().map(|f| f.field.as_str()).collect::<Vec<_>>(), ["backend_url", "backend_key"]);
        Settings { use_server: true, backend_url: Some("http://h:8000/v1".into()), backend_key: Some("sk-1".into()), ..Settings::default() }.validate().unwrap();
    }

    #[test]
    fn hotkeys_parse() {
        let hk = parse_hotkey("ctrl+SHIFT+s").unwrap();
        assert_eq!(hk, Hotkey { ctrl: true, shift: true, alt: false, meta: false, key: "S".into() });
        assert_eq!(hk.to_string(), "Ctrl+Shift+S");
        let hk = parse_hotkey("Cmd + Option + space").unwrap();
        assert_eq!((hk.meta, hk.alt, hk.ctrl, hk.key.as_str()), (true, true, false, "Space"));
        assert_eq!(parse_hotkey("Control+Meta+Alt+Shift+7").unwrap().to_string(), "Ctrl+Alt+Shift+Super+7");
        assert_eq!(parse_hotkey("F5").unwrap().key, "F5");
        assert_eq!(parse_hotkey("Super+f24").unwrap().key, "F24");
        for bad in ["", "S", "Ctrl", "Ctrl+", "Ctrl++S", "Ctrl+S+T", "Ctrl+Ctrl+S", "Ctrl+F25", "Ctrl+F0", "Ctrl+F05", "Ctrl+Tab", "Ctrl+é", "Hyper+S", "7"] {
            let e = parse_hotkey(bad).unwrap_err();
            assert!(e.starts_with("not a hotkey: "), "{bad:?}: {e}");
        }
    }

    /// The tokens the model crate's whole preprocessing produces for a `w`×`h` image.
    fn model_tokens(w: u32, h: u32, cap: usize) -> usize {
        let cfg = PreprocessConfig { max_image_tokens: Some(cap), ..PreprocessConfig::qwen3_vl_default() };
        let img = DynamicImage::ImageRgb8(RgbImage::new(w, h));
        screenpilot_model::preprocess::preprocess(&img, &cfg).unwrap().grid.num_tokens(cfg.merge_size)
    }

    #[test]
    fn image_tokens_match_the_model_crate_and_respect_the_cap() {
        for (w, h) in [(1000, 1000), (1920, 1080), (2560, 1440), (3840, 2160), (40, 40), (1280, 20), (900, 1600)] {
            for cap in [64, 256, DEFAULT_MAX_IMAGE_TOKENS, 4096, MAX_IMAGE_TOKENS] {
                let t = image_tokens(w, h, Some(cap));
                assert_eq!(t, model_tokens(w, h, cap), "{w}x{h} cap {cap}");
                assert!(t <= cap, "{w}x{h}: {t} tokens over the cap {cap}");
                assert!(t > 0);
            }
            assert_eq!(image_tokens(w, h, None), image_tokens(w, h, Some(DEFAULT_MAX_IMAGE_TOKENS)));
        }
        // Qwen3-VL's documented example: 1000x1000 becomes 992x992, 961 tokens.
        assert_eq!(image_tokens(1000, 1000, Some(MAX_IMAGE_TOKENS)), 31 * 31);
        assert!(image_tokens(3840, 2160, Some(MAX_IMAGE_TOKENS)) > image_tokens(3840, 2160, None));
        assert_eq!(image_tokens(0, 10, None), 0);
        assert_eq!(image_tokens(1, 500, None), 0, "aspect ratio over 200");
    }
}
