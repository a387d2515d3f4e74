// Task mode (src-tauri/src/commands/task.rs): a task box, the live list of steps (thumbnail with
// the proposed action drawn on it, what the model said), per proposal Accept (Enter) / Reject
// (Esc) / auto for the next N steps, the outcome and the task's audit as a table. Proposals
// are computed in Rust; the UI only answers one by its id. The one-step "Act" on an answer is
// a task too: its proposal is handed to the Ask view (main.ts) through the hooks. Below: the
// Calibrate button (pointer self-test per monitor) and the past tasks read from their
// recordings, each with a "Replay check".
import { invoke } from "@tauri-apps/api/core";
import { listen } from "@tauri-apps/api/event";
import type { AuditRow } from "./api";

export type Point = { x: number; y: number };
export type Proposal = {
  task: number; step: number; id: number; description: string; text: string | null;
  image_points: [number, number][]; screen_points: Point[]; monitor: string; auto: boolean; always_asks: string | null;
};
export type { AuditRow };
export type Outcome = { task: number; status: string; message: string; answer: string | null; audit: AuditRow[] };
type TaskEvent =
  | { kind: "step"; task: number; step: number; thumbnail: string; image_width: number; image_height: number }
  | { kind: "text" | "said"; task: number; step: number; text: string }
  | ({ kind: "proposal" } & Proposal)
  | { kind: "decided"; task: number; proposal: number; decision: string }
  | ({ kind: "outcome" } & Outcome);
export type Decision = "accept" | "reject" | { auto: number };

/// What main.ts does for the one-step "Act" task.
export type Hooks = {
  showOneStep: (p: Proposal) => void;
  oneStepDone: (o: Outcome) => void;
  showError: (e: unknown) => void;
  monitor: () => number;
};

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const el = {
  text: $<HTMLTextAreaElement>("task-text"), backend: $<HTMLSelectElement>("task-backend"), start: $<HTMLButtonElement>("task-start"),
  steps: $<HTMLOListElement>("task-steps"), outcome: $("task-outcome"), audit: $<HTMLTableElement>("task-audit"),
  history: $<HTMLTableElement>("task-history"), historyRefresh: $<HTMLButtonElement>("history-refresh"),
  calibrate: $<HTMLButtonElement>("calibrate"), calibrateResult: $<HTMLUListElement>("calibrate-result"),
};
type TaskSummary = { id: string; started: string; task: string; status: string; message: string; steps: number };
type ReplayCheck = { id: string; identical: boolean; steps: number; actions: number; differences: string[] };
type MonitorReport = { monitor: string; samples: unknown[]; max_error_px: number; mean_error_px: number };

const kinds = new Map<number, "task" | "one_step">();
let starting: "task" | "one_step" | null = null;
/// The proposal waiting for the user, if any.
let waiting: { id: number; oneStep: boolean } | null = null;
let hooks: Hooks;

export const pending = () => waiting;

export async function decide(d: Decision) {
  if (!waiting) return;
  const id = waiting.id;
  waiting = null;
  document.querySelectorAll(`.task-proposal[data-id="${id}"] .choices`).forEach((c) => c.remove());
  try { await invoke("task_decide", { proposal: id, decision: d }); } catch (e) { hooks.showError(e); }
}

/// Starts a task of kind `kind` through `cmd`; events that arrive before its id is known are
/// that task's (one task runs at a time).
export async function startWith(kind: "task" | "one_step", cmd: string, args: Record<string, unknown>): Promise<number | null> {
  starting = kind;
  try {
    const id = await invoke<number | null>(cmd, args);
    if (id !== null) kinds.set(id, kind);
    return id;
  } finally { starting = null; }
}

function kindOf(task: number) {
  if (!kinds.has(task)) kinds.set(task, starting ?? "task");
  return kinds.get(task);
}

const pct = (v: number, total: number) => (100 * v) / total + "%";

function stepItem(task: number, step: number): HTMLLIElement {
  let li = el.steps.querySelector<HTMLLIElement>(`li[data-task="${task}"][data-step="${step}"]`);
  if (!li) {
    li = document.createElement("li");
    li.className = "step"; li.dataset.task = String(task); li.dataset.step = String(step);
    const title = document.createElement("div"); title.className = "step-title"; title.textContent = `Step ${step}`;
    const thumb = document.createElement("div"); thumb.className = "thumb";
    const said = document.createElement("pre"); said.className = "said";
    const props = document.createElement("div"); props.className = "step-proposals";
    li.append(title, thumb, said, props);
    el.steps.append(li);
  }
  return li;
}

function onStep(e: Extract<TaskEvent, { kind: "step" }>) {
  const li = stepItem(e.task, e.step);
  const thumb = li.querySelector<HTMLDivElement>(".thumb")!;
  const img = document.createElement("img");
  img.src = e.thumbnail; img.alt = `step ${e.step}`;
  thumb.dataset.w = String(e.image_width); thumb.dataset.h = String(e.image_height);
  thumb.replaceChildren(img);
  li.scrollIntoView({ block: "nearest" });
}

function onProposal(p: Proposal) {
  const li = stepItem(p.task, p.step);
  const thumb = li.querySelector<HTMLDivElement>(".thumb")!;
  const [w, h] = [Number(thumb.dataset.w || 1), Number(thumb.dataset.h || 1)];
  for (const [x, y] of p.image_points) {
    const m = document.createElement("div");
    m.className = "marker"; m.dataset.proposal = String(p.id);
    m.style.left = pct(x, w); m.style.top = pct(y, h);
    thumb.append(m);
  }
  const div = document.createElement("div");
  div.className = "task-proposal"; div.dataset.id = String(p.id); div.dataset.state = p.auto ? "auto" : "pending";
  const desc = document.createElement("div");
  desc.className = "desc";
  desc.textContent = p.description + (p.auto ? " (auto)" : "") + (p.always_asks ? ` — asks because ${p.always_asks}` : "");
  div.append(desc);
  if (!p.auto) {
    const choices = document.createElement("div");
    choices.className = "choices";
    const button = (cls: string, label: string, d: () => Decision) => {
      const b = document.createElement("button");
      b.className = cls; b.textContent = label; b.onclick = () => decide(d());
      return b;
    };
    const n = document.createElement("input");
    n.type = "number"; n.min = "1"; n.max = "50"; n.value = "3"; n.className = "auto-n"; n.title = "steps";
    choices.append(button("accept", "Accept (Enter)", () => "accept"), button("reject", "Reject (Esc)", () => "reject"),
      button("auto", "Auto for next", () => ({ auto: Math.max(1, Math.min(50, Number(n.value) || 1)) })), n);
    div.append(choices);
    waiting = { id: p.id, oneStep: false };
    div.tabIndex = -1;
  }
  li.querySelector(".step-proposals")!.append(div);
  if (!p.auto) div.focus();
  li.scrollIntoView({ block: "nearest" });
}

function renderAudit(table: HTMLTableElement, rows: AuditRow[]) {
  const body = table.tBodies[0];
  body.replaceChildren(...rows.map((r) => {
    const tr = document.createElement("tr");
    for (const v of [r.time, String(r.step), r.action, r.target, r.decision]) {
      const td = document.createElement("td"); td.textContent = v; tr.append(td);
    }
    tr.title = r.timestamp;
    return tr;
  }));
  table.hidden = false;
}
export { renderAudit };

function onOutcome(o: Outcome) {
  if (waiting) waiting = null;
  document.querySelectorAll(".task-proposal .choices").forEach((c) => c.remove());
  if (kindOf(o.task) === "one_step") return hooks.oneStepDone(o);
  el.outcome.dataset.status = o.status;
  el.outcome.textContent = o.answer ? `${o.message}: ${o.answer}` : o.message;
  renderAudit(el.audit, o.audit);
  el.start.disabled = false;
  loadHistory();
}

const when = (rfc3339: string) => {
  const d = new Date(rfc3339);
  return isNaN(d.getTime()) ? "?" : d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
};

async function replayCheck(id: string, cell: HTMLTableCellElement, button: HTMLButtonElement) {
  button.disabled = true;
  cell.textContent = "checking…"; delete cell.dataset.identical;
  try {
    const r = await invoke<ReplayCheck>("task_replay", { id });
    cell.dataset.identical = r.identical ? "yes" : "no";
    cell.textContent = r.identical ? `identical (${r.steps} steps, ${r.actions} actions)` : r.differences.join("\n");
  } catch (e) { cell.textContent = ""; hooks.showError(e); }
  button.disabled = false;
}

/// The recorded tasks, newest first, each with a "Replay check".
export async function loadHistory() {
  let list: TaskSummary[];
  try { list = await invoke<TaskSummary[]>("task_history"); } catch (e) { hooks.showError(e); return; }
  el.history.tBodies[0].replaceChildren(...list.flatMap((t) => {
    const tr = document.createElement("tr");
    tr.dataset.id = t.id; tr.dataset.status = t.status; tr.title = `${t.id}: ${t.message}`;
    for (const v of [when(t.started), t.task, t.status, String(t.steps)]) {
      const td = document.createElement("td"); td.textContent = v; tr.append(td);
    }
    const replay = document.createElement("tr");
    replay.className = "replay-row";
    const cell = document.createElement("td"); cell.colSpan = 5; cell.className = "replay";
    replay.append(cell); replay.hidden = true;
    const td = document.createElement("td");
    const b = document.createElement("button");
    b.className = "replay-check"; b.textContent = "Replay check";
    b.onclick = () => { replay.hidden = false; replayCheck(t.id, cell, b); };
    td.append(b); tr.append(td);
    return [tr, replay];
  }));
}

/// The calibration self-test on every monitor (the window hides meanwhile).
async function calibrate() {
  el.calibrate.disabled = true;
  el.calibrateResult.replaceChildren();
  el.calibrateResult.dataset.state = "running";
  try {
    const reports = await invoke<MonitorReport[]>("calibrate");
    el.calibrateResult.replaceChildren(...reports.map((r) => {
      const li = document.createElement("li");
      li.dataset.ok = r.max_error_px <= 1 ? "yes" : "no";
      li.textContent = `${r.monitor}: max error ${r.max_error_px.toFixed(1)} px, mean ${r.mean_error_px.toFixed(1)} px`;
      return li;
    }));
    el.calibrateResult.dataset.state = "done";
  } catch (e) {
    const li = document.createElement("li");
    li.dataset.ok = "no";
    li.textContent = (e as { message?: string })?.message ?? String(e);
    el.calibrateResult.replaceChildren(li);
    el.calibrateResult.dataset.state = "error";
  }
  el.calibrate.disabled = false;
}

function onEvent(e: TaskEvent) {
  const oneStep = kindOf(e.task) === "one_step";
  switch (e.kind) {
    case "step": if (!oneStep) onStep(e); break;
    case "text": if (!oneStep) stepItem(e.task, e.step).querySelector(".said")!.textContent += e.text; break;
    case "said": if (!oneStep) stepItem(e.task, e.step).querySelector(".said")!.textContent = e.text; break;
    case "proposal":
      if (oneStep) { if (!e.auto) waiting = { id: e.id, oneStep: true }; hooks.showOneStep(e); }
      else onProposal(e);
      break;
    case "decided": {
      const div = document.querySelector<HTMLElement>(`.task-proposal[data-id="${e.proposal}"]`);
      if (div) div.dataset.state = e.decision;
      if (waiting?.id === e.proposal) waiting = null;
      break;
    }
    case "outcome": onOutcome(e); break;
  }
}

async function start() {
  const text = el.text.value.trim();
  if (!text) return;
  el.steps.replaceChildren();
  el.audit.hidden = true;
  el.outcome.dataset.status = "running"; el.outcome.textContent = "running…";
  el.start.disabled = true;
  try {
    await startWith("task", "task_start", { task: text, backend: el.backend.value, monitor: hooks.monitor() });
  } catch (e) {
    el.outcome.dataset.status = "error"; el.outcome.textContent = "";
    el.start.disabled = false;
    hooks.showError(e);
  }
}

export function initTasks(h: Hooks) {
  hooks = h;
  el.start.onclick = start;
  el.historyRefresh.onclick = loadHistory;
  el.calibrate.onclick = calibrate;
  el.text.onkeydown = (ev) => { if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); start(); } };
  listen<TaskEvent>("task", (ev) => onEvent(ev.payload));
}
