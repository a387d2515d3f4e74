// ScreenPilot's front end: plain TypeScript over the app's commands (src-tauri/src/commands).
// This file lays out the views (Ask, Task, To HTML, Models, Settings, and the first-run welcome),
// the capture toolbar and the start-up; each view lives in a module of its own.
import { listen } from "@tauri-apps/api/event";
import { open } from "@tauri-apps/plugin-dialog";
import { api, type CaptureView, type Monitor, type ModelInfo } from "./api";
import { $, clearError, showError } from "./dom";
import { clearMarkers, currentGeometry, drawMarkers, hasCapture, initConversation, refreshThreads, showCapture } from "./conversation";
import { captureChanged, initHtml } from "./html";
import { initModels, loadModel, recommended, refreshModels, showModel } from "./models";
import { initMcp, refreshMcp } from "./mcp";
import { initRewind, isRecording } from "./rewind";
import { initSettings, refreshSettings, refreshTokenCost } from "./settings";
import { decide as decideTask, initTasks, loadHistory, pending, renderAudit, startWith, type Outcome, type Proposal } from "./task";
import "./style.css";

type View = "welcome" | "ask" | "task" | "html" | "models" | "settings";
const VIEWS: View[] = ["welcome", "ask", "task", "html", "models", "settings"];

const el = {
  monitor: $<HTMLSelectElement>("monitor"), capture: $<HTMLButtonElement>("capture"), window: $<HTMLSelectElement>("window"),
  captureWindow: $<HTMLButtonElement>("capture-window"), newCapture: $<HTMLButtonElement>("new-capture"),
  actionsEnabled: $<HTMLInputElement>("actions-enabled"), stop: $<HTMLButtonElement>("stop"),
  proposal: $("proposal"), proposalText: $("proposal-text"), accept: $<HTMLButtonElement>("accept"), reject: $<HTMLButtonElement>("reject"),
  actionStatus: $("action-status"), auditOpen: $<HTMLButtonElement>("audit-open"), audit: $<HTMLTableElement>("audit"), auditPath: $("audit-path"),
  modelChip: $<HTMLButtonElement>("model-chip"), welcomeModels: $<HTMLButtonElement>("welcome-models"), welcomeCapture: $<HTMLButtonElement>("welcome-capture-btn"),
  welcomeModel: $("welcome-model"), welcomeModelText: $("welcome-model-text"), welcomeCaptureStep: $("welcome-capture"),
};
let monitors: Monitor[] = [];
let modelLoaded = false;

// ---- views -----------------------------------------------------------------------------------

function show(view: View) {
  for (const v of VIEWS) {
    $(`view-${v}`).hidden = v !== view;
    const tab = document.getElementById(`tab-${v}`);
    if (tab) { tab.setAttribute("aria-selected", String(v === view)); tab.classList.toggle("active", v === view); }
  }
  document.body.dataset.view = view;
  if (view === "models") refreshModels();
  if (view === "settings") refreshSettings();
  if (view === "task") loadHistory();
  if (view === "html") captureChanged();
}
/// The hotkeys of the settings wherever the UI names them.
function showHotkeys(capture: string, stop: string) {
  $("welcome-hotkey").textContent = capture;
  el.newCapture.title = `Capture the chosen screen and start a conversation about it (${capture})`;
  el.capture.title = `Capture this screen (${capture})`;
  el.stop.title = `Stop the running task or action (${stop})`;
}

/// Ask shows the first-run steps until there is something to ask about: a capture, or the
/// screen rewind is recording.
const showAsk = () => show(hasCapture() || isRecording() ? "ask" : "welcome");

for (const v of VIEWS) {
  const tab = document.getElementById(`tab-${v}`);
  if (tab) tab.onclick = () => (v === "ask" ? showAsk() : show(v));
}
// Arrow keys move between the tabs (the tablist pattern).
$("nav").onkeydown = (ev) => {
  const tabs = [...document.querySelectorAll<HTMLButtonElement>("#nav .tab")];
  const i = tabs.indexOf(document.activeElement as HTMLButtonElement);
  if (i < 0 || !["ArrowDown", "ArrowUp"].includes(ev.key)) return;
  ev.preventDefault();
  const next = tabs[(i + (ev.key === "ArrowDown" ? 1 : tabs.length - 1)) % tabs.length];
  next.focus(); next.click();
};

let suggestion = "";
function updateWelcome() {
  el.welcomeModel.dataset.done = modelLoaded ? "yes" : "no";
  el.welcomeModelText.textContent = modelLoaded ? `${$("model-info").textContent} is ready.`
    : `Download one that fits this computer, or open a folder you already have.${suggestion}`;
  el.welcomeCaptureStep.dataset.done = hasCapture() ? "yes" : "no";
}
async function suggest() {
  try {
    const r = recommended(await api.modelsList());
    suggestion = r ? ` For this computer: Qwen3-VL ${r.size} ${r.variant}${r.fit === "cpu" ? " (on the CPU, slowly)" : ""}.` : " This computer has too little memory for a local model; a server can answer instead (Settings).";
    updateWelcome();
  } catch { /* the Models view says what went wrong */ }
}

function modelChanged(m: ModelInfo | null) {
  modelLoaded = m !== null;
  showModel(m);
  updateWelcome();
}

// ---- capture ---------------------------------------------------------------------------------

function captured(v: CaptureView, freeze: boolean) {
  showCapture(v, freeze);
  updateWelcome();
  show("ask");
}

async function capture(run: () => Promise<CaptureView>, freeze: boolean) {
  clearError();
  for (const b of [el.capture, el.newCapture, el.captureWindow]) b.disabled = true;
  try { captured(await run(), freeze); } catch (e) { showError(e); }
  finally { for (const b of [el.capture, el.newCapture, el.captureWindow]) b.disabled = false; }
  // The windows open now (the list is read again after every capture).
  fillWindows();
}
const captureScreen = () => capture(() => api.captureMonitor(Number(el.monitor.value || 0)), true);

async function fillPickers() {
  try {
    monitors = await api.monitors();
    el.monitor.replaceChildren(...monitors.map((m) => new Option(`${m.name} · ${m.width}×${m.height}${m.scale_factor !== 1 ? ` @${m.scale_factor}x` : ""}`, String(m.index))));
  } catch (e) { showError(e); }
  await fillWindows();
}
async function fillWindows() {
  try {
    const ws = await api.windows();
    el.window.replaceChildren(...ws.map((w) => new Option(w.app && w.app !== w.title ? `${w.title} — ${w.app}` : w.title, String(w.id))));
    // No window list to choose from: the window capture stays out of the way.
    el.window.hidden = el.captureWindow.hidden = ws.length === 0;
  } catch (e) {
    // No window list (e.g. no window manager): window capture is unavailable, the rest works.
    el.window.hidden = el.captureWindow.hidden = true;
  }
}
const monitorSize = (): [number, number] | null => {
  const m = monitors.find((x) => String(x.index) === el.monitor.value) ?? monitors[0];
  return m ? [m.width, m.height] : null;
};

// ---- acting on an answer (a task of one step) --------------------------------------------------

function hideProposal() { el.proposal.hidden = true; clearMarkers(); }
function showProposal(p: Proposal) {
  if (!currentGeometry()) return;
  el.proposalText.textContent = p.description + (p.always_asks ? ` — asks because ${p.always_asks}` : "");
  drawMarkers(p.image_points);
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

initConversation({
  afterAnswer: async () => { try { await startWith("one_step", "act_on_answer", {}); } catch (e) { showError(e); } },
  beforeAsk: () => { hideProposal(); el.actionStatus.textContent = ""; },
  shown: () => { hideProposal(); el.actionStatus.textContent = ""; updateWelcome(); captureChanged(); show("ask"); },
});
initTasks({ showOneStep: showProposal, oneStepDone, showError, monitor: () => Number(el.monitor.value || 0) });
initHtml();
initModels(modelChanged, async () => {
  const dir = await open({ directory: true, multiple: false, title: "Model folder", defaultPath: ($<HTMLInputElement>("model-path").value.trim() || undefined) });
  return typeof dir === "string" ? dir : null;
});
initSettings(monitorSize, async (s) => { showHotkeys(s.hotkey_capture, s.hotkey_stop); modelChanged(await api.modelInfo()); }, async () => {
  clearError();
  $("model-info").textContent = "loading…";
  try { modelChanged(await api.modelReload()); } catch (e) { showError(e); modelChanged(await api.modelInfo()); }
});

initMcp(() => show("settings"));
initRewind(() => show("settings"));

el.capture.onclick = captureScreen;
el.newCapture.onclick = captureScreen;
el.welcomeCapture.onclick = captureScreen;
el.welcomeModels.onclick = () => show("models");
el.modelChip.onclick = () => show("models");
el.captureWindow.onclick = () => capture(() => api.captureWindow(Number(el.window.value)), false);
el.monitor.onchange = () => refreshTokenCost();
el.actionsEnabled.onchange = () => api.actionsSetEnabled(el.actionsEnabled.checked);
el.accept.onclick = () => decide(true);
el.reject.onclick = () => decide(false);
el.stop.onclick = () => { api.taskStop(); el.actionStatus.textContent = "stopped"; };
el.auditOpen.onclick = async () => {
  try {
    const [path, rows] = await api.auditRead();
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

// The global capture hotkey and the tray capture in the backend (the window may be hidden).
listen<CaptureView>("captured", (ev) => captured(ev.payload, true));
listen<{ kind: string; message: string }>("capture-failed", (ev) => showError(ev.payload));
listen("stopped", () => { el.actionStatus.textContent = "stopped"; });

(async () => {
  await fillPickers();
  suggest();
  const s = await refreshSettings();
  await refreshMcp();
  if (s) showHotkeys(s.settings.hotkey_capture, s.settings.hotkey_stop);
  refreshThreads();
  modelChanged(await api.modelInfo());
  if (s?.settings.use_server) {
    try { modelChanged(await api.backendUse("server")); } catch (e) { showError(e); }
  }
  showAsk();
  document.body.dataset.ready = "yes";
  // The last model loads in the background; its progress shows in the chip and in Models.
  if (!s?.settings.use_server && s?.settings.model_dir && !modelLoaded) await loadModel(s.settings.model_dir);
})();
