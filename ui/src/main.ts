// ScreenPilot UI: plain TypeScript over the app's Tauri commands (see src-tauri/src/commands).
import { Channel, invoke } from "@tauri-apps/api/core";
import { listen } from "@tauri-apps/api/event";
import { open } from "@tauri-apps/plugin-dialog";
import { decide as decideTask, initTasks, loadHistory, pending, renderAudit, startWith, type AuditRow, type Outcome, type Proposal } from "./task";
import "./style.css";

type Geometry = { image_width: number; image_height: number; origin_x: number; origin_y: number; scale_x: number; scale_y: number; monitor: string; scale_factor: number };
type CaptureView = { png: string; geometry: Geometry };
type ModelInfo = { name: string; path: string; device: string; dtype: string; parameters: number; weight_bytes: number };
type Timings = {
  preprocess_ms: number; vision_ms: number; images: number; vision_cache_hits: number; prompt_tokens: number; cached_prompt_tokens: number;
  prefill_ms: number; ttft_ms: number; decode_tokens: number; decode_tokens_per_s: number; completion_tokens: number; total_ms: number;
};
type CacheStats = { hits: number; misses: number; evictions: number; entries: number; bytes: number; budget_bytes: number };
type CacheReport = { vision: CacheStats; prefix: CacheStats; prefix_reused_tokens: number };
type AskOutcome = { text: string; cancelled: boolean; timings: Timings; cache: CacheReport | null };
type Shape = { kind: "box" | "point"; label: string; x1: number; y1: number; x2: number; y2: number; screen_x: number | null; screen_y: number | null };
type Progress = { file: string; file_index: number; files: number; bytes: number; total: number };
type CmdError = { kind: string; message: string };

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const el = {
  modelPath: $<HTMLInputElement>("model-path"), browse: $<HTMLButtonElement>("browse"), load: $<HTMLButtonElement>("load"), modelInfo: $("model-info"),
  repo: $<HTMLInputElement>("repo"), download: $<HTMLButtonElement>("download"), downloadCancel: $<HTMLButtonElement>("download-cancel"),
  progress: $<HTMLProgressElement>("download-progress"), downloadStatus: $("download-status"),
  monitor: $<HTMLSelectElement>("monitor"), capture: $<HTMLButtonElement>("capture"), window: $<HTMLSelectElement>("window"),
  captureWindow: $<HTMLButtonElement>("capture-window"), region: $<HTMLButtonElement>("region"), hover: $("hover-coords"),
  error: $("error"), stage: $("stage"), shot: $<HTMLImageElement>("shot"), overlay: $("overlay"), selection: $("selection"),
  question: $<HTMLTextAreaElement>("question"), send: $<HTMLButtonElement>("send"), cancel: $<HTMLButtonElement>("cancel"),
  answer: $("answer"), timings: $("timings"), actionsEnabled: $<HTMLInputElement>("actions-enabled"), stop: $<HTMLButtonElement>("stop"),
  proposal: $("proposal"), proposalText: $("proposal-text"), accept: $<HTMLButtonElement>("accept"), reject: $<HTMLButtonElement>("reject"),
  toHtml: $<HTMLButtonElement>("to-html"), pagePanel: $("page-panel"), page: $<HTMLIFrameElement>("page"),
  pageScore: $("page-score"), pageDiff: $<HTMLImageElement>("page-diff"),
  actionStatus: $("action-status"), auditOpen: $<HTMLButtonElement>("audit-open"), audit: $<HTMLTableElement>("audit"), auditPath: $("audit-path"),
  tabAsk: $<HTMLButtonElement>("tab-ask"), tabTask: $<HTMLButtonElement>("tab-task"), askPanel: $("ask-panel"), taskPanel: $("task-panel"),
  taskView: $("task-view"),
  askBackend: $<HTMLSelectElement>("ask-backend"), serverFields: $("server-fields"), serverUrl: $<HTMLInputElement>("server-url"),
  serverModel: $<HTMLInputElement>("server-model"), serverConnect: $<HTMLButtonElement>("server-connect"),
};

let geometry: Geometry | null = null;
let frozenPng: string | null = null;
let askSeq = 0;

function showError(e: unknown) {
  const err = e as CmdError;
  el.error.textContent = err && err.message ? err.message : String(e);
}
function clearError() { el.error.textContent = ""; }

const mb = (b: number) => (b / 1048576).toFixed(1) + " MiB";
function showModel(m: ModelInfo | null) {
  el.modelInfo.textContent = !m ? "no model"
    : m.device === "remote" ? `${m.name} · remote`
    : `${m.name} · ${m.device} · ${m.dtype} · ${(m.parameters / 1e6).toFixed(1)}M params · ${mb(m.weight_bytes)}`;
  el.modelInfo.dataset.loaded = m ? "yes" : "no";
}

async function loadModel(path: string) {
  clearError();
  el.modelInfo.textContent = "loading…";
  try {
    const m = await invoke<ModelInfo>("model_open", { path });
    // With "Server" chosen the local model is kept for tasks; the server keeps answering.
    if (el.askBackend.value === "local") showModel(m);
    else showModel(await invoke<ModelInfo | null>("model_info"));
  } catch (e) { showModel(await invoke<ModelInfo | null>("model_info")); showError(e); }
}

// What answers Ask and To HTML: the local model, or an OpenAI-compatible server (connected off
// the main thread; its one-line error shows, and what answered before keeps answering).
async function useBackend() {
  clearError();
  const server = el.askBackend.value === "server";
  el.serverFields.hidden = !server;
  el.serverConnect.disabled = true;
  if (server) el.modelInfo.textContent = "connecting…";
  try {
    const args = { kind: el.askBackend.value, url: el.serverUrl.value.trim() || null, model: el.serverModel.value.trim() || null };
    showModel(await invoke<ModelInfo | null>("backend_use", args));
  } catch (e) { showModel(await invoke<ModelInfo | null>("model_info")); showError(e); }
  finally { el.serverConnect.disabled = false; }
}

// The native folder picker (tauri-plugin-dialog; the capability grants only dialog:allow-open).
// The chosen folder goes into the path field and is loaded; typing a path works as before.
async function browse() {
  clearError();
  try {
    const dir = await open({ directory: true, multiple: false, title: "Model folder", defaultPath: el.modelPath.value.trim() || undefined });
    if (typeof dir === "string") { el.modelPath.value = dir; await loadModel(dir); }
  } catch (e) { showError(e); }
}

async function download() {
  clearError();
  const onProgress = new Channel<Progress>();
  onProgress.onmessage = (p) => {
    el.progress.value = p.total ? p.bytes / p.total : 0;
    el.downloadStatus.textContent = `${p.file} (${p.file_index}/${p.files}) ${mb(p.bytes)} / ${mb(p.total)}`;
  };
  el.downloadCancel.disabled = false;
  try {
    const dir = await invoke<string>("model_download", { repo: el.repo.value.trim(), revision: null, onProgress });
    el.downloadStatus.textContent = "downloaded";
    el.modelPath.value = dir;
    await loadModel(dir);
  } catch (e) { showError(e); } finally { el.downloadCancel.disabled = true; }
}

function showCapture(v: CaptureView) {
  geometry = v.geometry;
  el.shot.src = v.png;
  el.overlay.replaceChildren();
  hideProposal();
  el.answer.textContent = "";
}

async function capture(cmd: string, args: Record<string, unknown>, freeze: boolean) {
  clearError();
  try {
    const v = await invoke<CaptureView>(cmd, args);
    if (freeze) frozenPng = v.png;
    showCapture(v);
    el.shot.dataset.captured = String(Date.now());
  } catch (e) { showError(e); }
}

async function fillPickers() {
  try {
    const ms = await invoke<{ index: number; name: string; width: number; height: number; scale_factor: number }[]>("monitors_list");
    el.monitor.replaceChildren(...ms.map((m) => new Option(`${m.name} ${m.width}×${m.height} @${m.scale_factor}x`, String(m.index))));
  } catch (e) { showError(e); }
  try {
    const ws = await invoke<{ id: number; title: string; app: string }[]>("windows_list");
    el.window.replaceChildren(...ws.map((w) => new Option(`${w.title} (${w.app})`, String(w.id))));
  } catch (e) {
    // No window list (e.g. no window manager): window capture is unavailable, the rest works.
    el.window.disabled = el.captureWindow.disabled = true;
    el.captureWindow.title = (e as CmdError).message ?? String(e);
  }
}

// Region selection on the frozen frame.
let selecting = false;
let dragStart: [number, number] | null = null;
function imagePoint(ev: MouseEvent): [number, number] | null {
  if (!geometry) return null;
  const r = el.shot.getBoundingClientRect();
  return [((ev.clientX - r.left) / r.width) * geometry.image_width, ((ev.clientY - r.top) / r.height) * geometry.image_height];
}
el.region.onclick = () => {
  if (!frozenPng) return showError({ kind: "no_capture", message: "capture a monitor first" });
  el.shot.src = frozenPng;
  selecting = true;
  el.region.textContent = "Drag on the screenshot…";
};
el.stage.onmousedown = (ev) => { if (selecting) { dragStart = [ev.clientX, ev.clientY]; } };
el.stage.onmousemove = (ev) => {
  const p = imagePoint(ev);
  if (p && geometry) {
    const sx = Math.round(geometry.origin_x + p[0] * geometry.scale_x), sy = Math.round(geometry.origin_y + p[1] * geometry.scale_y);
    el.hover.textContent = `image ${Math.round(p[0])}, ${Math.round(p[1])} · screen ${sx}, ${sy}`;
  }
  if (selecting && dragStart) {
    const s = el.stage.getBoundingClientRect();
    Object.assign(el.selection.style, {
      left: Math.min(dragStart[0], ev.clientX) - s.left + "px", top: Math.min(dragStart[1], ev.clientY) - s.top + "px",
      width: Math.abs(ev.clientX - dragStart[0]) + "px", height: Math.abs(ev.clientY - dragStart[1]) + "px",
    });
    el.selection.hidden = false;
  }
};
el.stage.onmouseup = async (ev) => {
  if (!selecting || !dragStart || !geometry) return;
  const r = el.shot.getBoundingClientRect();
  const k = geometry.image_width / r.width;
  const x = (Math.min(dragStart[0], ev.clientX) - r.left) * k, y = (Math.min(dragStart[1], ev.clientY) - r.top) * k;
  const w = Math.abs(ev.clientX - dragStart[0]) * k, h = Math.abs(ev.clientY - dragStart[1]) * k;
  selecting = false; dragStart = null; el.selection.hidden = true; el.region.textContent = "Select region";
  await capture("capture_region", { x, y, width: w, height: h }, false);
};

// Overlays, in percent of the image so they follow any display size.
const pct = (v: number, total: number) => (100 * v) / total + "%";
function drawShapes(shapes: Shape[]) {
  if (!geometry) return;
  const g = geometry;
  el.overlay.replaceChildren(...shapes.map((s) => {
    const d = document.createElement("div");
    d.className = "shape " + s.kind;
    d.style.left = pct(s.x1, g.image_width); d.style.top = pct(s.y1, g.image_height);
    if (s.kind === "box") { d.style.width = pct(s.x2 - s.x1, g.image_width); d.style.height = pct(s.y2 - s.y1, g.image_height); }
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = s.label + (s.screen_x !== null ? ` (${s.screen_x}, ${s.screen_y})` : "");
    d.append(label);
    return d;
  }));
}

function hideProposal() {
  el.proposal.hidden = true;
  el.overlay.querySelectorAll(".marker").forEach((m) => m.remove());
}
// The one-step task of "Act": its proposal is drawn on the capture the answer was about.
function showProposal(p: Proposal) {
  if (!geometry) return;
  const g = geometry;
  el.proposalText.textContent = p.description + (p.always_asks ? ` — asks because ${p.always_asks}` : "");
  for (const [x, y] of p.image_points) {
    const m = document.createElement("div");
    m.className = "marker"; m.style.left = pct(x, g.image_width); m.style.top = pct(y, g.image_height);
    el.overlay.append(m);
  }
  el.proposal.hidden = false;
  el.proposal.focus();
}

async function decide(accept: boolean) {
  if (!pending()) return;
  if (pending()?.oneStep) { hideProposal(); el.actionStatus.textContent = "…"; }
  await decideTask(accept ? "accept" : "reject");
}

const ONE_STEP_STATUS: Record<string, string> = { done: "executed", rejected: "rejected", actions_disabled: "actions are off", stopped: "stopped" };
function oneStepDone(o: Outcome) {
  hideProposal();
  el.actionStatus.textContent = ONE_STEP_STATUS[o.status] ?? (o.status === "refused" ? o.message : `${o.status}: ${o.message}`);
}

// An answer holding an action becomes a task of one step (the backend reads the action from
// the conversation; the proposal comes back as a task event).
async function afterAnswer(text: string) {
  drawShapes(await invoke<Shape[]>("overlay", { text }));
  try { await startWith("one_step", "act_on_answer", {}); } catch (e) { showError(e); }
}

// Asking: a new question supersedes the running one (the backend cancels it); pieces of a
// superseded answer are ignored.
async function ask() {
  const question = el.question.value.trim();
  if (!question) return;
  clearError();
  const seq = ++askSeq;
  const onToken = new Channel<string>();
  let pieces = 0;
  el.answer.textContent = ""; el.answer.dataset.state = "running"; el.answer.dataset.pieces = "0"; el.timings.textContent = "";
  hideProposal(); el.overlay.replaceChildren();
  onToken.onmessage = (piece) => {
    if (seq !== askSeq) return;
    el.answer.textContent += piece;
    el.answer.dataset.pieces = String(++pieces);
  };
  try {
    const out = await invoke<AskOutcome>("ask", { question, onToken });
    if (seq !== askSeq) return;
    showTimings(out);
    el.answer.dataset.state = out.cancelled ? "cancelled" : "done";
    if (!out.cancelled) await afterAnswer(out.text);
  } catch (e) {
    if (seq !== askSeq) return;
    el.answer.dataset.state = "error";
    if ((e as CmdError).kind !== "cancelled") showError(e);
  }
}

// One line: time to first token and where it went (the vision tower is skipped when the
// capture's features are cached, e.g. for a follow-up), then decode speed; cache counters on hover.
function showTimings(out: AskOutcome) {
  const t = out.timings;
  if (!out.cache) {
    // A server (or the scripted assistant): only the times seen here and the token counts it sent.
    el.timings.textContent = `first text ${t.ttft_ms.toFixed(0)} ms · ${t.prompt_tokens} prompt tokens · ${t.completion_tokens} tokens` +
      (t.decode_tokens_per_s > 0 ? ` at ${t.decode_tokens_per_s.toFixed(1)} tok/s` : "") + ` · total ${t.total_ms.toFixed(0)} ms`;
    el.timings.title = "";
    return;
  }
  const vision = t.images > 0 && t.vision_cache_hits === t.images ? "vision cache hit" : `vision ${t.vision_ms.toFixed(0)}`;
  const reused = t.cached_prompt_tokens > 0 ? `; ${t.cached_prompt_tokens}/${t.prompt_tokens} prompt tokens cached` : "";
  el.timings.textContent = `first token ${t.ttft_ms.toFixed(0)} ms (preprocess ${t.preprocess_ms.toFixed(0)}, ${vision}, prefill ${t.prefill_ms.toFixed(0)}${reused}) · ${t.decode_tokens} tokens at ${t.decode_tokens_per_s.toFixed(1)} tok/s · total ${t.total_ms.toFixed(0)} ms`;
  const c = out.cache;
  el.timings.title = c
    ? `vision cache: ${c.vision.hits} hits, ${c.vision.misses} misses, ${c.vision.entries} images · prefix cache: ${c.prefix.hits} hits, ${c.prefix.misses} misses, ${c.prefix_reused_tokens} tokens reused`
    : "";
}

let debounce: number | undefined;
function askDebounced() {
  el.answer.dataset.state = "queued";
  window.clearTimeout(debounce);
  debounce = window.setTimeout(ask, 250);
}

// Screenshot → HTML, shown in a sandboxed iframe (no scripts; the page carries a CSP too).
type PageView = { path: string; html: string; score: number | null; note: string | null; diff: string | null };
el.toHtml.onclick = async () => {
  clearError();
  el.pageScore.textContent = "generating…";
  el.pagePanel.hidden = false;
  try {
    const p = await invoke<PageView>("html_generate");
    el.page.srcdoc = p.html;
    el.pageScore.textContent = (p.score !== null ? `fidelity (SSIM) ${p.score.toFixed(3)}` : `no fidelity score: ${p.note}`) + ` · saved to ${p.path}`;
    el.pageDiff.hidden = p.diff === null;
    if (p.diff) el.pageDiff.src = p.diff;
  } catch (e) { el.pageScore.textContent = ""; showError(e); }
};

el.browse.onclick = browse;
el.askBackend.onchange = () => { el.serverFields.hidden = el.askBackend.value !== "server"; if (el.askBackend.value === "local") useBackend(); };
el.serverConnect.onclick = useBackend;
el.load.onclick = () => loadModel(el.modelPath.value.trim());
el.download.onclick = download;
el.downloadCancel.onclick = () => invoke("model_download_cancel");
el.capture.onclick = () => capture("capture_monitor", { index: Number(el.monitor.value || 0) }, true);
el.captureWindow.onclick = () => capture("capture_window", { id: Number(el.window.value) }, false);
el.send.onclick = askDebounced;
el.cancel.onclick = () => { askSeq++; el.answer.dataset.state = "cancelled"; invoke("ask_cancel"); };
el.question.onkeydown = (ev) => { if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); askDebounced(); } };
el.actionsEnabled.onchange = () => invoke("actions_set_enabled", { on: el.actionsEnabled.checked });
el.accept.onclick = () => decide(true);
el.reject.onclick = () => decide(false);
el.stop.onclick = () => { invoke("task_stop"); el.actionStatus.textContent = "stopped"; };
el.auditOpen.onclick = async () => {
  try {
    const [path, rows] = await invoke<[string, AuditRow[]]>("audit_read");
    el.auditPath.textContent = path;
    renderAudit(el.audit, rows);
  } catch (e) { showError(e); }
};
// Enter accepts and Esc rejects the proposal that waits (not while typing).
window.addEventListener("keydown", (ev) => {
  const typing = ev.target instanceof HTMLTextAreaElement || ev.target instanceof HTMLInputElement;
  if (!pending() || typing) return;
  if (ev.key === "Enter") { ev.preventDefault(); decide(true); }
  if (ev.key === "Escape") { ev.preventDefault(); decide(false); }
});
function showTab(task: boolean) {
  // The task's steps take the place of the capture.
  el.askPanel.hidden = el.stage.hidden = task; el.taskPanel.hidden = el.taskView.hidden = !task;
  el.tabAsk.classList.toggle("active", !task); el.tabTask.classList.toggle("active", task);
}
el.tabAsk.onclick = () => showTab(false);
el.tabTask.onclick = () => { showTab(true); loadHistory(); };
initTasks({ showOneStep: showProposal, oneStepDone, showError, monitor: () => Number(el.monitor.value || 0) });

listen("hotkey-capture", () => el.capture.click());
listen("stopped", () => { el.actionStatus.textContent = "stopped"; });

(async () => {
  await fillPickers();
  showModel(await invoke<ModelInfo | null>("model_info"));
  const s = await invoke<{ model_dir: string | null; backend_url: string | null; backend_model: string | null; use_server: boolean }>("settings_get");
  el.serverUrl.value = s.backend_url ?? ""; el.serverModel.value = s.backend_model ?? "";
  el.askBackend.value = s.use_server ? "server" : "local"; el.serverFields.hidden = !s.use_server;
  if (s.model_dir) { el.modelPath.value = s.model_dir; await loadModel(s.model_dir); }
  if (s.use_server) await useBackend();
  document.body.dataset.ready = "yes";
})();
