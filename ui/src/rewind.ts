// Rewind: the sidebar chip that shows while the screen is being recorded into memory, the
// composer's rewind buttons (ask about the last N seconds, what changed, save a clip), and the
// Settings → Rewind fields (filled and read with the rest of the settings form).
import { open } from "@tauri-apps/plugin-dialog";
import { api, type RewindAnswer, type RewindStatus, type Settings } from "./api";
import { ask, showFrame, startUnstored } from "./conversation";
import { $, bytes, showError } from "./dom";

const el = {
  chip: $<HTMLButtonElement>("rewind-chip"), chipInfo: $("rewind-info"), tools: $("rewind-tools"),
  seconds: $<HTMLInputElement>("rewind-seconds"), ask: $<HTMLButtonElement>("rewind-ask"),
  changed: $<HTMLButtonElement>("rewind-changed"), save: $<HTMLButtonElement>("rewind-save"),
  enabled: $<HTMLInputElement>("set-rewind-enabled"), fps: $<HTMLInputElement>("set-rewind-fps"),
  length: $<HTMLInputElement>("set-rewind-seconds"), mib: $<HTMLInputElement>("set-rewind-mib"),
  windows: $<HTMLInputElement>("set-rewind-windows"), regions: $<HTMLInputElement>("set-rewind-regions"),
};

let recording = false;
/// Whether rewind records (as of the last status): Ask then has something to ask about.
export const isRecording = () => recording;

function render(s: RewindStatus) {
  recording = s.recording;
  el.chip.hidden = !s.recording;
  el.tools.hidden = !s.recording;
  el.chip.dataset.recording = s.recording ? "yes" : "no";
  el.chipInfo.textContent = s.recording ? `Rewind · ${s.seconds.toFixed(0)} s` : "Rewind off";
  el.chip.title = s.recording
    ? `Recording the screen into memory only: ${s.seconds.toFixed(1)} of ${s.capacity_seconds.toFixed(0)} s, ${s.frames} frames, ${bytes(s.bytes)} of ${bytes(s.max_bytes)}${s.error ? ` (last capture failed: ${s.error})` : ""}`
    : "Rewind is off (Settings)";
}

/// Asks the backend what rewind holds and updates the chip.
export async function refreshRewind() {
  try { render(await api.rewindStatus()); } catch { /* the chip is informative only */ }
}

const seconds = () => Math.max(1, Number(el.seconds.value) || 10);

/// The answer, naming what the model saw; its newest frame goes on the stage.
function withSubject(r: RewindAnswer) {
  if (r.frame) showFrame(r.frame);
  const subject = r.seconds > 0 ? `video of ${r.frames} frames, ${r.seconds.toFixed(1)} s` : `${r.frames} images: then and now`;
  return { ...r, subject };
}

/// Puts the rewind settings into the form.
export function fillRewind(s: Settings) {
  const r = s.rewind;
  el.enabled.checked = r.enabled;
  el.fps.value = String(r.fps); el.length.value = String(r.seconds); el.mib.value = String(r.max_mib);
  el.windows.value = r.windows.join(", ");
  el.regions.value = r.regions.map((g) => `${g.x},${g.y},${g.width},${g.height}`).join("; ");
}

/// The form's rewind settings; a region that is not four whole numbers is a field error.
export function readRewind(s: Settings): { field: string; message: string }[] {
  const regions = el.regions.value.split(";").map((t) => t.trim()).filter(Boolean).map((t) => t.split(",").map((n) => Number(n.trim())));
  const bad = regions.some((r) => r.length !== 4 || r.some((n) => !Number.isInteger(n) || n < 0));
  s.rewind = {
    enabled: el.enabled.checked, fps: Number(el.fps.value), seconds: Number(el.length.value), max_mib: Number(el.mib.value),
    windows: el.windows.value.split(",").map((t) => t.trim()).filter(Boolean),
    regions: bad ? s.rewind.regions : regions.map(([x, y, width, height]) => ({ x, y, width, height })),
  };
  return bad ? [{ field: "rewind_blackout", message: "regions are x,y,width,height in screen pixels, separated by ;" }] : [];
}

export function initRewind(openSettings: () => void) {
  el.chip.onclick = openSettings;
  el.ask.onclick = () => { startUnstored(); ask(async (q, ch) => withSubject(await api.rewindAsk(seconds(), q, ch))); };
  el.changed.onclick = () => {
    if (!$<HTMLTextAreaElement>("question").value.trim()) $<HTMLTextAreaElement>("question").value = "What changed?";
    startUnstored();
    ask(async (q, ch) => withSubject(await api.rewindChanged(q, ch)));
  };
  el.save.onclick = async () => {
    const dir = await open({ directory: true, multiple: false, title: "Folder for the clip's frames" });
    if (typeof dir !== "string") return;
    try {
      const n = await api.rewindSave(seconds(), dir);
      el.chip.title = `Saved ${n} frames to ${dir}`;
    } catch (e) { showError(e); }
  };
  refreshRewind();
  window.setInterval(refreshRewind, 1000);
}
