// The Settings view: one form over the app's settings. Saving sends the whole form; the backend
// validates every field (crates/desktop/src/settings.rs) and saves nothing if one is bad, and
// each bad field gets its message inline. The image-token cap shows what a capture of the chosen
// screen costs at that cap.
import { api, type FieldError, type Settings, type SettingsView } from "./api";
import { $, bytes, clearError, showError } from "./dom";
import { fillMcp, readMcp, refreshMcp } from "./mcp";
import { fillRewind, readRewind, refreshRewind } from "./rewind";

const el = {
  form: $<HTMLFormElement>("settings-form"), device: $<HTMLSelectElement>("set-device"), dtype: $<HTMLSelectElement>("set-dtype"),
  quant: $<HTMLSelectElement>("set-quant"),
  tokens: $<HTMLInputElement>("set-tokens"), tokensCost: $("set-tokens-cost"),
  local: $<HTMLInputElement>("set-backend-local"), server: $<HTMLInputElement>("set-backend-server"), serverFields: $("server-fields"),
  url: $<HTMLInputElement>("server-url"), model: $<HTMLInputElement>("server-model"), key: $<HTMLInputElement>("server-key"),
  hkCapture: $<HTMLInputElement>("set-hotkey-capture"), hkStop: $<HTMLInputElement>("set-hotkey-stop"),
  dataDir: $<HTMLInputElement>("set-data-dir"), threadDays: $<HTMLInputElement>("set-thread-days"), threadCap: $<HTMLInputElement>("set-thread-cap"),
  threadUsage: $("set-thread-usage"), auditDays: $<HTMLInputElement>("set-audit-days"),
  save: $<HTMLButtonElement>("settings-save"), revert: $<HTMLButtonElement>("settings-revert"), status: $("settings-status"), reload: $<HTMLButtonElement>("settings-reload"),
};

let saved: SettingsView | null = null;
let monitorSize: () => [number, number] | null = () => null;
let onSaved: (s: Settings) => void = () => {};

const num = (i: HTMLInputElement) => (i.value.trim() === "" ? NaN : Number(i.value));
const text = (i: HTMLInputElement) => i.value.trim() || null;

function fill(v: SettingsView) {
  const s = v.settings;
  el.device.value = s.device; el.dtype.value = s.dtype; el.quant.value = s.quant;
  el.tokens.value = String(s.max_image_tokens ?? 1024);
  (s.use_server ? el.server : el.local).checked = true;
  el.url.value = s.backend_url ?? ""; el.model.value = s.backend_model ?? ""; el.key.value = s.backend_key ?? "";
  el.hkCapture.value = s.hotkey_capture; el.hkStop.value = s.hotkey_stop;
  el.dataDir.value = s.data_dir ?? v.data_dir;
  el.threadDays.value = String(s.thread_days); el.threadCap.value = String(s.thread_cap_mib); el.auditDays.value = String(s.audit_days);
  el.threadUsage.textContent = `Stored conversations now use ${bytes(v.threads_bytes)}.`;
  fillMcp(s);
  fillRewind(s);
  serverFieldsState();
  showFieldErrors([]);
  updateCost();
}

type NumberField = { input: HTMLInputElement; field: keyof Settings };
const NUMBERS = (): NumberField[] => [
  { input: el.tokens, field: "max_image_tokens" }, { input: el.threadDays, field: "thread_days" },
  { input: el.threadCap, field: "thread_cap_mib" }, { input: el.auditDays, field: "audit_days" },
];

/// The form as settings, and the fields that are not whole numbers (those keep their saved
/// value in the settings, so that the backend can still check every other field).
function read(): { settings: Settings; errors: FieldError[] } {
  const base = saved!.settings;
  const settings: Settings = {
    ...base,
    device: el.device.value, dtype: el.dtype.value, quant: el.quant.value,
    use_server: el.server.checked, backend_url: text(el.url), backend_model: text(el.model), backend_key: text(el.key),
    hotkey_capture: el.hkCapture.value.trim(), hotkey_stop: el.hkStop.value.trim(),
    data_dir: el.dataDir.value.trim() === saved!.data_dir && base.data_dir === null ? null : text(el.dataDir),
  };
  const errors: FieldError[] = [];
  const record = settings as unknown as Record<string, unknown>;
  for (const { input, field } of NUMBERS()) {
    const v = num(input);
    if (Number.isInteger(v) && v >= 0) record[field] = v;
    else errors.push({ field, message: "must be a whole number (0 or more)" });
  }
  const { port } = readMcp(settings);
  if (Number.isInteger(port) && port >= 1 && port <= 65535) settings.mcp_port = port;
  else errors.push({ field: "mcp_port", message: "must be a port between 1 and 65535" });
  errors.push(...readRewind(settings));
  return { settings, errors };
}

function showFieldErrors(errors: FieldError[]) {
  for (const box of el.form.querySelectorAll<HTMLElement>(".field-error")) {
    const e = errors.find((x) => x.field === box.dataset.for);
    box.textContent = e ? e.message : "";
    const input = el.form.querySelector<HTMLElement>(`[name="${box.dataset.for}"]`);
    if (input) {
      if (e) { input.setAttribute("aria-invalid", "true"); input.setAttribute("aria-describedby", `err-${box.dataset.for}`); box.id = `err-${box.dataset.for}`; }
      else input.removeAttribute("aria-invalid");
    }
  }
}

function serverFieldsState() {
  for (const i of [el.url, el.model, el.key]) i.disabled = !el.server.checked;
  el.serverFields.dataset.off = el.server.checked ? "" : "yes";
}

let costSeq = 0;
async function updateCost() {
  const size = monitorSize();
  const cap = num(el.tokens);
  if (!size || !Number.isFinite(cap)) { el.tokensCost.textContent = ""; return; }
  const seq = ++costSeq;
  try {
    const n = await api.imageTokens(size[0], size[1], cap);
    if (seq === costSeq) el.tokensCost.textContent = `A capture of this ${size[0]}×${size[1]} screen costs ${n} image tokens at this cap.`;
  } catch (e) {
    if (seq === costSeq) el.tokensCost.textContent = "";
  }
}

function invalid(errors: FieldError[]) {
  showFieldErrors(errors);
  el.status.textContent = "Not saved: fix the fields marked below.";
  el.status.dataset.state = "invalid";
  el.form.querySelector<HTMLElement>("[aria-invalid='true']")?.focus();
}

async function save(ev: Event) {
  ev.preventDefault();
  if (!saved) return;
  clearError();
  el.status.textContent = "";
  el.status.dataset.state = "saving";
  const { settings, errors } = read();
  try {
    // Every bad field at once: those that are not numbers here, the others from the backend.
    const all = [...errors, ...(await api.settingsCheck(settings)).filter((e) => !errors.some((x) => x.field === e.field))];
    if (all.length) return invalid(all);
    saved = await api.settingsSet(settings);
    fill(saved);
    el.status.textContent = "Saved";
    el.status.dataset.state = "saved";
    refreshMcp();
    refreshRewind();
    onSaved(saved.settings);
  } catch (e) {
    const err = e as { kind?: string; message?: string; fields?: FieldError[] };
    if (err.kind === "invalid_settings" && err.fields) invalid(err.fields);
    else { showError(e); el.status.dataset.state = "error"; }
  }
}

/// Loads the settings into the form.
export async function refreshSettings(): Promise<SettingsView | null> {
  try { saved = await api.settingsGet(); fill(saved); refreshMcp(); return saved; } catch (e) { showError(e); return null; }
}

export function initSettings(size: () => [number, number] | null, saved_: (s: Settings) => void, reload: () => void) {
  monitorSize = size;
  onSaved = saved_;
  el.form.onsubmit = save;
  el.revert.onclick = () => { if (saved) { fill(saved); el.status.textContent = ""; } };
  el.tokens.oninput = updateCost;
  el.local.onchange = el.server.onchange = serverFieldsState;
  el.reload.onclick = reload;
}
export { updateCost as refreshTokenCost };
