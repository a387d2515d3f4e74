// The app's commands and what they return (src-tauri/src/commands): one typed place, so the
// views never spell a command name or a payload shape twice.
import { Channel, invoke } from "@tauri-apps/api/core";

export type CmdError = { kind: string; message: string };
export type Geometry = { image_width: number; image_height: number; origin_x: number; origin_y: number; scale_x: number; scale_y: number; monitor: string; scale_factor: number };
export type CaptureView = { png: string; geometry: Geometry; thread: ThreadSummary | null };
export type ModelInfo = { name: string; path: string; device: string; dtype: string; parameters: number; weight_bytes: number };
export type Timings = {
  preprocess_ms: number; vision_ms: number; images: number; vision_cache_hits: number; prompt_tokens: number; cached_prompt_tokens: number;
  prefill_ms: number; ttft_ms: number; decode_tokens: number; decode_tokens_per_s: number; completion_tokens: number; total_ms: number;
};
export type CacheStats = { hits: number; misses: number; evictions: number; entries: number; bytes: number; budget_bytes: number };
export type CacheReport = { vision: CacheStats; prefix: CacheStats; prefix_reused_tokens: number };
/// What the UI keeps of an answer's timings (stored with the thread).
export type TurnTimings = { timings: Timings; cache: CacheReport | null };
export type AskOutcome = { text: string; cancelled: boolean; timings: Timings; cache: CacheReport | null };
export type Shape = { kind: "box" | "point"; label: string; x1: number; y1: number; x2: number; y2: number; screen_x: number | null; screen_y: number | null };
export type Progress = { file: string; file_index: number; files: number; bytes: number; total: number };
export type Monitor = { index: number; name: string; width: number; height: number; scale_factor: number };
export type WindowItem = { id: number; title: string; app: string };

export type Turn = { question: string; answer: string; cancelled: boolean; at_ms: number; timings: TurnTimings | null };
export type ThreadSummary = { id: string; title: string; source: string; created_ms: number; updated_ms: number; turns: number; bytes: number };
export type ThreadView = { summary: ThreadSummary; turns: Turn[]; png: string; geometry: Geometry };

export type Fit = "gpu" | "cpu" | "too_big";
export type Installed = { repo: string | null; name: string; path: string; bytes: number; complete: boolean };
export type CatalogRow = {
  repo: string; size: string; variant: string; parameters: number; download_bytes: number; memory_bytes: number; cpu_memory_bytes: number;
  note: string; fit: Fit; installed: Installed | null;
};
export type DeviceMemory = { gpu_name: string | null; gpu_bytes: number | null; ram_bytes: number };
export type ModelsView = { memory: DeviceMemory; catalog: CatalogRow[]; installed: Installed[] };

export type Settings = {
  model_dir: string | null; hf_endpoint: string | null; max_image_tokens: number | null;
  backend_url: string | null; backend_model: string | null; backend_key: string | null; use_server: boolean;
  device: string; dtype: string; quant: string; hotkey_capture: string; hotkey_stop: string; data_dir: string | null;
  thread_days: number; thread_cap_mib: number; audit_days: number;
  mcp_enabled: boolean; mcp_port: number; mcp_token: string | null; mcp_share_screenshots: boolean; mcp_allow_actions: boolean; mcp_tools: string[];
  rewind: RewindSettings;
};
/// Rewind's settings (crates/desktop/src/rewind/settings.rs).
export type RewindSettings = {
  enabled: boolean; fps: number; seconds: number; max_mib: number;
  regions: { x: number; y: number; width: number; height: number }[]; windows: string[];
};
/// A rewind answer and what the model was shown (frames sent; seconds the clip spans, 0 for
/// "what changed"; the newest frame, now the conversation's capture).
export type RewindAnswer = AskOutcome & { frames: number; seconds: number; frame: CaptureView | null };
/// What the recording indicator shows.
export type RewindStatus = { recording: boolean; fps: number; seconds: number; capacity_seconds: number; frames: number; bytes: number; max_bytes: number; error: string | null };
/// One call of an MCP client (src-tauri/src/mcp.rs).
export type McpCall = { client: string; tool: string; result: string; detail: string; ms: number; at_ms: number };
export type McpStatus = { url: string | null; calls: McpCall[]; error: string | null };
export type FieldError = { field: string; message: string };
export type SettingsView = { settings: Settings; data_dir: string; threads_bytes: number };
export type AuditRow = { time: string; timestamp: string; step: number; action: string; target: string; decision: string };
export type PageView = { path: string; html: string; score: number | null; note: string | null; diff: string | null };

export const api = {
  settingsGet: () => invoke<SettingsView>("settings_get"),
  /// Validates and saves; the field errors come back as a `CmdError` of kind `invalid_settings`
  /// whose `fields` lists them.
  settingsSet: (settings: Settings) => invoke<SettingsView>("settings_set", { settings }),
  settingsCheck: (settings: Settings) => invoke<FieldError[]>("settings_check", { settings }),
  imageTokens: (width: number, height: number, cap: number | null) => invoke<number>("image_tokens", { width, height, cap }),

  modelOpen: (path: string) => invoke<ModelInfo>("model_open", { path }),
  modelReload: () => invoke<ModelInfo | null>("model_reload"),
  modelInfo: () => invoke<ModelInfo | null>("model_info"),
  modelsList: () => invoke<ModelsView>("models_list"),
  modelDelete: (repo: string) => invoke<number>("model_delete", { repo }),
  modelDownload: (repo: string, onProgress: Channel<Progress>) => invoke<string>("model_download", { repo, revision: null, onProgress }),
  modelDownloadCancel: () => invoke<void>("model_download_cancel"),
  backendUse: (kind: "local" | "server") => invoke<ModelInfo | null>("backend_use", { kind }),

  monitors: () => invoke<Monitor[]>("monitors_list"),
  windows: () => invoke<WindowItem[]>("windows_list"),
  captureMonitor: (index: number) => invoke<CaptureView>("capture_monitor", { index }),
  captureWindow: (id: number) => invoke<CaptureView>("capture_window", { id }),
  captureRegion: (x: number, y: number, width: number, height: number) => invoke<CaptureView>("capture_region", { x, y, width, height }),

  ask: (question: string, onToken: Channel<string>) => invoke<AskOutcome>("ask", { question, onToken }),
  askCancel: () => invoke<void>("ask_cancel"),
  overlay: (text: string) => invoke<Shape[]>("overlay", { text }),

  threads: () => invoke<ThreadSummary[]>("threads_list"),
  threadOpen: (id: string) => invoke<ThreadView>("thread_open", { id }),
  threadDelete: (id: string) => invoke<void>("thread_delete", { id }),
  threadsClear: () => invoke<number>("threads_clear"),

  htmlGenerate: () => invoke<PageView>("html_generate"),
  htmlSave: (dest: string) => invoke<void>("html_save", { dest }),

  actionsSetEnabled: (on: boolean) => invoke<boolean>("actions_set_enabled", { on }),
  taskStop: () => invoke<void>("task_stop"),
  auditRead: () => invoke<[string, AuditRow[]]>("audit_read"),

  mcpStatus: () => invoke<McpStatus>("mcp_status"),

  rewindStatus: () => invoke<RewindStatus>("rewind_status"),
  rewindAsk: (seconds: number, question: string, onToken: Channel<string>) => invoke<RewindAnswer>("rewind_ask", { seconds, question, onToken }),
  rewindChanged: (question: string, onToken: Channel<string>) => invoke<RewindAnswer>("rewind_changed", { question, onToken }),
  rewindSave: (seconds: number, dir: string) => invoke<number>("rewind_save", { seconds, dir }),
};

export { Channel };
