// The To HTML view: the generated page beside the capture it was made from, its fidelity score,
// a toggle for the difference image, copy, save and regenerate. The page is shown in an iframe
// sandboxed without scripts, and carries a no-script CSP of its own (crates/desktop/src/html.rs).
import { save as saveDialog } from "@tauri-apps/plugin-dialog";
import { api, type PageView } from "./api";
import { $, clearError, copyText, showError } from "./dom";

const el = {
  generate: $<HTMLButtonElement>("to-html"), copy: $<HTMLButtonElement>("html-copy"), save: $<HTMLButtonElement>("html-save"),
  diffToggle: $<HTMLInputElement>("html-diff-toggle"), score: $("page-score"), page: $<HTMLIFrameElement>("page"),
  diff: $<HTMLImageElement>("page-diff"), shot: $<HTMLImageElement>("html-shot"), capture: $<HTMLImageElement>("shot"),
};
let last: PageView | null = null;
const frame = $("page-frame");

/// The page is laid out at the capture's size (as it was scored) and scaled down to fit beside it.
function fitPage() {
  const w = el.capture.naturalWidth || 1280, h = el.capture.naturalHeight || 800;
  const k = frame.clientWidth / w;
  Object.assign(el.page.style, { width: `${w}px`, height: `${h}px`, transform: `scale(${k})` });
  frame.style.height = `${h * k}px`;
}
new ResizeObserver(fitPage).observe(frame);

function showDiff() {
  const on = el.diffToggle.checked && !!last?.diff;
  el.diff.hidden = !on;
  frame.hidden = on;
}

async function generate() {
  clearError();
  el.shot.src = el.capture.src;
  el.generate.disabled = true;
  el.generate.textContent = "Generating…";
  el.score.textContent = "generating…";
  try {
    const p = await api.htmlGenerate();
    last = p;
    el.page.srcdoc = p.html;
    fitPage();
    el.score.textContent = (p.score !== null ? `fidelity (SSIM) ${p.score.toFixed(3)}` : `no fidelity score: ${p.note}`) + ` · saved to ${p.path}`;
    el.score.title = p.path;
    if (p.diff) el.diff.src = p.diff;
    el.diffToggle.disabled = !p.diff;
    el.copy.disabled = el.save.disabled = false;
    showDiff();
  } catch (e) { el.score.textContent = ""; showError(e); }
  finally { el.generate.disabled = false; el.generate.textContent = last ? "Regenerate" : "Generate page"; }
}

export function initHtml() {
  el.generate.onclick = generate;
  el.diffToggle.onchange = showDiff;
  el.copy.onclick = async () => {
    if (!last) return;
    const ok = await copyText(last.html);
    el.copy.textContent = ok ? "Copied" : "Copy failed";
    window.setTimeout(() => { el.copy.textContent = "Copy HTML"; }, 1500);
  };
  el.save.onclick = async () => {
    if (!last) return;
    try {
      const dest = await saveDialog({ title: "Save the page", defaultPath: last.path.split("/").pop(), filters: [{ name: "HTML", extensions: ["html"] }] });
      if (dest) { await api.htmlSave(dest); el.score.textContent = el.score.textContent?.replace(/ · saved to .*$/, "") + ` · saved to ${dest}`; }
    } catch (e) { showError(e); }
  };
}

/// The capture changed: the page shown is about the old one.
export function captureChanged() {
  el.shot.src = el.capture.src;
  fitPage();
}
