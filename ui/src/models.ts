// The Models view: the Qwen3-VL models people run, each with its download size, the memory it
// needs and whether it fits this computer (GPU, CPU only, too big); download with progress,
// speed, time left, cancel and resume; installed models with their size on disk, load and delete;
// any folder or hub repository besides. The chip in the sidebar shows what is loaded.
import { api, Channel, type CatalogRow, type Installed, type ModelInfo, type ModelsView, type Progress } from "./api";
import { $, bytes, clearError, duration, h, memory, showError } from "./dom";

const el = {
  deviceLine: $("device-line"), catalog: $<HTMLTableElement>("catalog"), installed: $<HTMLTableElement>("installed"), installedEmpty: $("installed-empty"),
  modelPath: $<HTMLInputElement>("model-path"), browse: $<HTMLButtonElement>("browse"), load: $<HTMLButtonElement>("load"),
  repo: $<HTMLInputElement>("repo"), download: $<HTMLButtonElement>("download"), downloadBox: $("download-box"), downloadTitle: $("download-title"),
  downloadCancel: $<HTMLButtonElement>("download-cancel"), progress: $<HTMLProgressElement>("download-progress"), downloadStatus: $("download-status"),
  modelInfo: $("model-info"), loadStatus: $("load-status"), loadText: $("load-text"),
};

const FIT_TEXT = { gpu: "Fits your GPU", cpu: "CPU only (slow)", too_big: "Too big" } as const;
let downloading: string | null = null;
let onLoaded: (m: ModelInfo | null) => void = () => {};

/// The model chip and everything that says what is loaded.
export function showModel(m: ModelInfo | null) {
  el.modelInfo.textContent = !m ? "no model"
    : m.device === "remote" ? `${m.name} · remote`
    : `${m.name} · ${m.device} · ${m.dtype} · ${(m.parameters / 1e6).toFixed(1)}M params · ${bytes(m.weight_bytes)}`;
  el.modelInfo.dataset.loaded = m ? "yes" : "no";
  el.modelInfo.title = m ? m.path : "Choose a model in Models";
}

let loadTimer = 0;
/// The load status in Models (with the seconds it has taken so far), or none.
function loading(text: string | null) {
  window.clearInterval(loadTimer);
  el.loadStatus.hidden = text === null;
  el.loadText.textContent = text ?? "";
  if (text === null) return;
  const t0 = performance.now();
  loadTimer = window.setInterval(() => { el.loadText.textContent = `${text} ${Math.round((performance.now() - t0) / 1000)} s`; }, 1000);
}

/// The model to suggest on first run: the largest Instruct model that fits the GPU, else the
/// smallest that runs at all.
export function recommended(v: ModelsView): CatalogRow | null {
  const instruct = v.catalog.filter((r) => r.variant === "Instruct");
  const gpu = instruct.filter((r) => r.fit === "gpu").sort((a, b) => b.parameters - a.parameters);
  const cpu = instruct.filter((r) => r.fit === "cpu").sort((a, b) => a.parameters - b.parameters);
  return gpu[0] ?? cpu[0] ?? null;
}

/// Loads a model folder; its progress shows in the Models view and in the chip.
export async function loadModel(path: string): Promise<ModelInfo | null> {
  clearError();
  const name = path.split("/").filter(Boolean).slice(-3).join("/");
  el.modelInfo.textContent = `loading ${name}…`;
  loading(`Loading ${name}…`);
  try {
    const m = await api.modelOpen(path);
    el.modelPath.value = path;
    // What answers now: this model, or the server when Settings chose one (the model is kept).
    onLoaded(await api.modelInfo());
    return m;
  } catch (e) {
    showModel(await api.modelInfo());
    showError(e);
    return null;
  } finally { loading(null); }
}

function modelCell(name: string, sub: string) {
  return h("td", {}, h("div", { class: "model-name" }, name), h("div", { class: "muted small" }, sub));
}

function catalogRow(r: CatalogRow): HTMLTableRowElement {
  const need = r.fit === "cpu" ? r.cpu_memory_bytes : r.memory_bytes;
  const actions = h("td", { class: "actions" });
  if (r.installed) {
    const load = h("button", { type: "button", class: "primary small" }, "Load");
    load.onclick = () => loadModel(r.installed!.path);
    const del = deleteButton(r.repo);
    actions.append(load, del);
  } else {
    const dl = h("button", { type: "button", class: "small download-model", disabled: r.fit === "too_big" || downloading !== null }, "Download");
    dl.onclick = () => download(r.repo);
    actions.append(dl);
  }
  return h("tr", { "data-repo": r.repo, "data-fit": r.fit },
    modelCell(`Qwen3-VL ${r.size} ${r.variant}`, r.note || r.repo),
    h("td", {}, bytes(r.download_bytes)),
    h("td", { title: `on a GPU (bf16): ${memory(r.memory_bytes)} of GPU memory · on the CPU (f32): ${memory(r.cpu_memory_bytes)} of RAM` }, memory(need) + (r.fit === "cpu" ? " RAM" : "")),
    h("td", {}, h("span", { class: `fit fit-${r.fit}` }, FIT_TEXT[r.fit]), r.installed ? h("span", { class: "badge" }, "installed") : ""),
    actions);
}

function deleteButton(repo: string): HTMLButtonElement {
  const del = h("button", { type: "button", class: "quiet small delete-model", "aria-label": `Delete ${repo} from disk` }, "Delete");
  del.onclick = async () => {
    if (del.dataset.armed !== "yes") {
      del.dataset.armed = "yes"; del.textContent = "Delete from disk?";
      window.setTimeout(() => { del.dataset.armed = ""; del.textContent = "Delete"; }, 4000);
      return;
    }
    try { await api.modelDelete(repo); await refreshModels(); } catch (e) { showError(e); }
  };
  return del;
}

function installedRow(m: Installed): HTMLTableRowElement {
  const load = h("button", { type: "button", class: "small" }, "Load");
  load.onclick = () => loadModel(m.path);
  const actions = h("td", { class: "actions" }, load);
  if (m.repo) actions.append(deleteButton(m.repo));
  return h("tr", { "data-path": m.path },
    modelCell(m.name, m.complete ? "" : "incomplete: download it again to resume"),
    h("td", { class: "path small", title: m.path }, m.path), h("td", {}, bytes(m.bytes)), actions);
}

function deviceText(v: ModelsView) {
  const m = v.memory;
  const gpu = m.gpu_bytes ? `${m.gpu_name ?? "a GPU"} with ${memory(m.gpu_bytes)}` : "no supported GPU found";
  return `This computer: ${gpu} · ${memory(m.ram_bytes)} of RAM. The marks say what fits.`;
}

/// Reloads the catalog and the installed models.
export async function refreshModels() {
  let v: ModelsView;
  try { v = await api.modelsList(); } catch (e) { showError(e); return; }
  el.deviceLine.textContent = deviceText(v);
  el.catalog.tBodies[0].replaceChildren(...v.catalog.map(catalogRow));
  el.installed.tBodies[0].replaceChildren(...v.installed.map(installedRow));
  el.installedEmpty.hidden = v.installed.length > 0;
  return v;
}

/// Downloads `repo` (resuming what an earlier download left), then loads it.
export async function download(repo: string) {
  clearError();
  if (!repo) return showError({ kind: "invalid_argument", message: "type a repository, e.g. Qwen/Qwen3-VL-2B-Instruct" });
  downloading = repo;
  el.catalog.querySelectorAll<HTMLButtonElement>("button.download-model").forEach((b) => { b.disabled = true; });
  el.download.disabled = true;
  el.downloadBox.hidden = false;
  el.downloadTitle.textContent = `Downloading ${repo}`;
  el.downloadStatus.textContent = "starting…";
  el.progress.value = 0;
  const onProgress = new Channel<Progress>();
  // Speed over the last few seconds of samples.
  const samples: [number, number][] = [];
  onProgress.onmessage = (p) => {
    const now = performance.now();
    samples.push([now, p.bytes]);
    while (samples.length > 2 && now - samples[0][0] > 5000) samples.shift();
    const [t0, b0] = samples[0];
    const speed = now > t0 ? ((p.bytes - b0) * 1000) / (now - t0) : 0;
    el.progress.value = p.total ? p.bytes / p.total : 0;
    const left = speed > 0 ? ` · ${duration((p.total - p.bytes) / speed)} left` : "";
    el.downloadStatus.textContent = `${p.file} (${p.file_index}/${p.files}) · ${bytes(p.bytes)} of ${bytes(p.total)}` + (speed > 0 ? ` · ${bytes(speed)}/s` : "") + left;
  };
  el.downloadCancel.disabled = false;
  try {
    const dir = await api.modelDownload(repo, onProgress);
    el.progress.value = 1;
    el.downloadStatus.textContent = "downloaded";
    el.modelPath.value = dir;
    downloading = null;
    await refreshModels();
    await loadModel(dir);
  } catch (e) {
    const cancelled = (e as { kind?: string }).kind === "cancelled";
    el.downloadStatus.textContent = cancelled ? "cancelled — Download resumes where it stopped" : "failed";
    showError(e);
  } finally {
    downloading = null;
    el.downloadCancel.disabled = true;
    el.download.disabled = false;
    await refreshModels();
  }
}

export function initModels(loaded: (m: ModelInfo | null) => void, browse: () => Promise<string | null>) {
  onLoaded = loaded;
  el.load.onclick = () => loadModel(el.modelPath.value.trim());
  el.modelPath.onkeydown = (ev) => { if (ev.key === "Enter") loadModel(el.modelPath.value.trim()); };
  el.browse.onclick = async () => {
    clearError();
    try {
      const dir = await browse();
      if (dir) { el.modelPath.value = dir; await loadModel(dir); }
    } catch (e) { showError(e); }
  };
  el.download.onclick = () => download(el.repo.value.trim());
  el.downloadCancel.onclick = () => api.modelDownloadCancel();
}
