// The Ask view: the capture of the open conversation (with the boxes and points of an answer
// drawn on it, coordinates on hover), its questions and answers in order (Markdown, streamed
// without moving what the reader is looking at), one quiet line of timings per answer, and the
// list of stored conversations in the sidebar. Every capture starts a new conversation; the
// backend stores each answer with its conversation (src-tauri/src/commands/threads.rs).
import { api, Channel, type AskOutcome, type CaptureView, type Geometry, type Shape, type ThreadSummary, type Turn, type TurnTimings } from "./api";
import { $, bytes, clearError, copyButton, h, showError, when } from "./dom";
import { renderMarkdown, splitThinking } from "./markdown";

const el = {
  stage: $("stage"), shot: $<HTMLImageElement>("shot"), overlay: $("overlay"), selection: $("selection"), hover: $("hover-coords"),
  messages: $("messages"), question: $<HTMLTextAreaElement>("question"), composer: $<HTMLFormElement>("composer"),
  cancel: $<HTMLButtonElement>("cancel"), region: $<HTMLButtonElement>("region"),
  threads: $<HTMLUListElement>("threads"), threadsEmpty: $("threads-empty"), threadsClear: $<HTMLButtonElement>("threads-clear"),
};

/// What the rest of the app does around a conversation.
export type ConversationHooks = {
  /// After an answer: act on it (a one-step task) when it holds an action.
  afterAnswer: (text: string) => Promise<void>;
  /// Before a question: the proposal of the previous answer is void.
  beforeAsk: () => void;
  /// A capture or a stored conversation is shown.
  shown: () => void;
};

let hooks: ConversationHooks;
let geometry: Geometry | null = null;
let frozenPng: string | null = null;
let threadId: string | null = null;
let askSeq = 0;

export const currentGeometry = () => geometry;
export const hasCapture = () => geometry !== null;

// ---- the capture and its overlays ------------------------------------------------------------

const pct = (v: number, total: number) => (100 * v) / total + "%";

function showImage(png: string, g: Geometry) {
  geometry = g;
  el.shot.src = png;
  el.overlay.replaceChildren();
  el.shot.dataset.captured = String(Date.now());
}

/// Shows the frame a rewind answer was about on the stage, keeping the conversation.
export function showFrame(v: CaptureView) {
  showImage(v.png, v.geometry);
}

/// Draws `shapes` (one answer's boxes and points) on the capture; hovering one shows where it is.
export function drawShapes(shapes: Shape[]) {
  if (!geometry) return;
  const g = geometry;
  el.overlay.querySelectorAll(".shape").forEach((s) => s.remove());
  el.overlay.append(...shapes.map((s) => {
    const where = s.screen_x !== null ? `screen ${s.screen_x}, ${s.screen_y}` : `image ${Math.round(s.x1)}, ${Math.round(s.y1)}`;
    const d = h("div", { class: "shape " + s.kind, title: `${s.label}: ${where}` });
    d.style.left = pct(s.x1, g.image_width); d.style.top = pct(s.y1, g.image_height);
    if (s.kind === "box") { d.style.width = pct(s.x2 - s.x1, g.image_width); d.style.height = pct(s.y2 - s.y1, g.image_height); }
    d.append(h("span", { class: "label" }, s.label + (s.screen_x !== null ? ` (${s.screen_x}, ${s.screen_y})` : "")));
    return d;
  }));
}

/// Markers of a proposed action on the capture.
export function drawMarkers(points: [number, number][]) {
  if (!geometry) return;
  const g = geometry;
  for (const [x, y] of points) {
    const m = h("div", { class: "marker" });
    m.style.left = pct(x, g.image_width); m.style.top = pct(y, g.image_height);
    el.overlay.append(m);
  }
}
export const clearMarkers = () => el.overlay.querySelectorAll(".marker").forEach((m) => m.remove());

async function showShapesOf(text: string, turn: HTMLElement | null) {
  try {
    const shapes = await api.overlay(text);
    drawShapes(shapes);
    el.messages.querySelectorAll(".turn").forEach((t) => t.classList.toggle("shown", t === turn && shapes.length > 0));
    return shapes.length;
  } catch (e) { showError(e); return 0; }
}

// ---- capture ---------------------------------------------------------------------------------

/// Shows a new capture as a new conversation.
export function showCapture(v: CaptureView, freeze: boolean) {
  if (freeze) frozenPng = v.png;
  showImage(v.png, v.geometry);
  threadId = v.thread?.id ?? null;
  el.messages.replaceChildren();
  refreshThreads();
  hooks.shown();
  el.question.focus();
}

// Region selection on the frozen frame.
let selecting = false;
let dragStart: [number, number] | null = null;
function imagePoint(ev: MouseEvent): [number, number] | null {
  if (!geometry) return null;
  const r = el.shot.getBoundingClientRect();
  return [((ev.clientX - r.left) / r.width) * geometry.image_width, ((ev.clientY - r.top) / r.height) * geometry.image_height];
}
export function startRegion() {
  if (!frozenPng || !geometry) return showError({ kind: "no_capture", message: "capture a screen first, then drag the region on it" });
  el.shot.src = frozenPng;
  selecting = true;
  el.region.textContent = "Drag on the screenshot…";
}
el.stage.onmousedown = (ev) => { if (selecting) dragStart = [ev.clientX, ev.clientY]; };
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
el.stage.onmouseleave = () => { el.hover.textContent = ""; };
el.stage.onmouseup = async (ev) => {
  if (!selecting || !dragStart || !geometry) return;
  const r = el.shot.getBoundingClientRect();
  const k = geometry.image_width / r.width;
  const x = (Math.min(dragStart[0], ev.clientX) - r.left) * k, y = (Math.min(dragStart[1], ev.clientY) - r.top) * k;
  const w = Math.abs(ev.clientX - dragStart[0]) * k, hgt = Math.abs(ev.clientY - dragStart[1]) * k;
  selecting = false; dragStart = null; el.selection.hidden = true; el.region.textContent = "Select region";
  try { showCapture(await api.captureRegion(x, y, w, hgt), false); } catch (e) { showError(e); }
};

// ---- questions and answers -------------------------------------------------------------------

/// One quiet line: vision (or the cache hit), time to first token, decode speed; details on hover.
export function timingsLine(t: TurnTimings): { text: string; title: string } {
  const x = t.timings;
  if (!t.cache) {
    const speed = x.decode_tokens_per_s > 0 ? ` · ${x.decode_tokens_per_s.toFixed(1)} tok/s` : "";
    return { text: `first text ${x.ttft_ms.toFixed(0)} ms${speed}`, title: `${x.prompt_tokens} prompt tokens, ${x.completion_tokens} answer tokens, ${x.total_ms.toFixed(0)} ms in all (the backend reports no cache counters)` };
  }
  const hit = x.images > 0 && x.vision_cache_hits === x.images;
  const vision = hit ? "vision cache hit" : `vision ${x.vision_ms.toFixed(0)} ms`;
  const cached = x.cached_prompt_tokens > 0 ? ` · ${x.cached_prompt_tokens}/${x.prompt_tokens} prompt tokens cached` : "";
  const c = t.cache;
  return {
    text: `${vision}${cached} · first token ${x.ttft_ms.toFixed(0)} ms · ${x.decode_tokens_per_s.toFixed(1)} tok/s`,
    title: `preprocess ${x.preprocess_ms.toFixed(0)} ms, prefill ${x.prefill_ms.toFixed(0)} ms, ${x.decode_tokens} tokens, ${x.total_ms.toFixed(0)} ms in all\n` +
      `vision cache: ${c.vision.hits} hits, ${c.vision.misses} misses, ${c.vision.entries} images · prefix cache: ${c.prefix.hits} hits, ${c.prefix.misses} misses, ${c.prefix_reused_tokens} tokens reused`,
  };
}

const atBottom = () => el.messages.scrollHeight - el.messages.scrollTop - el.messages.clientHeight < 48;
function keepBottom(wasAtBottom: boolean) { if (wasAtBottom) el.messages.scrollTop = el.messages.scrollHeight; }

function turnElement(question: string): { turn: HTMLElement; answer: HTMLElement; meta: HTMLElement } {
  const answer = h("div", { class: "answer md" });
  const meta = h("div", { class: "meta" });
  const turn = h("article", { class: "turn", "data-state": "running", "data-pieces": "0" },
    h("div", { class: "q" }, h("span", { class: "who sr-only" }, "You asked: "), h("p", {}, question)),
    h("div", { class: "a" }, h("span", { class: "who sr-only" }, "ScreenPilot answered: "), answer, meta));
  return { turn, answer, meta };
}

function finishTurn(parts: { turn: HTMLElement; answer: HTMLElement; meta: HTMLElement }, text: string, t: TurnTimings | null, state: string, subject = "") {
  const { turn, answer, meta } = parts;
  turn.dataset.state = state;
  renderMarkdown(answer, text || (state === "cancelled" ? "*(stopped)*" : ""));
  const children: (Node | string)[] = [];
  // What the model saw (a rewind answer's video or images) leads the quiet timings line.
  if (t || subject) {
    const line = t ? timingsLine(t) : { text: "", title: "" };
    children.push(h("span", { class: "timings", title: line.title }, [subject, line.text].filter(Boolean).join(" · ")));
  }
  const show = h("button", { type: "button", class: "quiet small show-shapes", title: "Draw this answer's boxes and points on the capture" }, "Show on capture");
  show.onclick = () => showShapesOf(text, turn);
  children.push(copyButton(() => splitThinking(text).answer, "Copy"), show);
  meta.replaceChildren(...children);
}

function renderTurns(turns: Turn[]) {
  el.messages.replaceChildren(...turns.map((t) => {
    const parts = turnElement(t.question);
    finishTurn(parts, t.answer, t.timings, t.cancelled ? "cancelled" : "done");
    return parts.turn;
  }));
  el.messages.scrollTop = el.messages.scrollHeight;
}

/// How a question is sent: the capture's Ask, or a rewind question (rewind.ts), whose answer
/// names what the model saw (`subject`, shown before the timings).
export type Send = (question: string, onToken: Channel<string>) => Promise<AskOutcome & { subject?: string }>;

/// Starts a new conversation that is not stored (a rewind question: the screen stays in memory).
export function startUnstored() {
  threadId = null;
  el.messages.replaceChildren();
  refreshThreads();
}

/// Asks the question in the box. A new question supersedes the running one (the backend cancels
/// it); pieces of a superseded answer are ignored.
export async function ask(send: Send = api.ask) {
  const question = el.question.value.trim();
  if (!question) return;
  clearError();
  hooks.beforeAsk();
  const seq = ++askSeq;
  el.question.value = "";
  el.overlay.querySelectorAll(".shape").forEach((s) => s.remove());
  // A new question goes to the bottom; its answer then keeps the reader where they are.
  const parts = turnElement(question);
  el.messages.append(parts.turn);
  keepBottom(true);
  const onToken = new Channel<string>();
  let text = "", pieces = 0, frame = 0;
  onToken.onmessage = (piece) => {
    if (seq !== askSeq) return;
    text += piece;
    parts.turn.dataset.pieces = String(++pieces);
    if (!frame) frame = requestAnimationFrame(() => {
      frame = 0;
      const bottom = atBottom();
      renderMarkdown(parts.answer, text);
      keepBottom(bottom);
    });
  };
  try {
    const out = await send(question, onToken);
    if (frame) cancelAnimationFrame(frame);
    if (seq !== askSeq && !out.cancelled) return;
    const bottom = atBottom();
    finishTurn(parts, out.text, { timings: out.timings, cache: out.cache }, out.cancelled ? "cancelled" : "done", out.subject);
    keepBottom(bottom);
    refreshThreads();
    if (!out.cancelled) {
      await showShapesOf(out.text, parts.turn);
      await hooks.afterAnswer(out.text);
    }
  } catch (e) {
    parts.turn.dataset.state = "error";
    renderMarkdown(parts.answer, text);
    if ((e as { kind?: string }).kind !== "cancelled") {
      showError(e);
      parts.answer.append(h("p", { class: "turn-error" }, (e as { message?: string }).message ?? String(e)));
    }
  }
}

export function cancelAsk() {
  askSeq++;
  const running = el.messages.querySelector<HTMLElement>(".turn[data-state='running']");
  if (running) running.dataset.state = "cancelled";
  api.askCancel();
}

// ---- stored conversations --------------------------------------------------------------------

/// Reloads the sidebar's list of conversations.
export async function refreshThreads() {
  let list: ThreadSummary[];
  try { list = await api.threads(); } catch (e) { showError(e); return; }
  el.threadsEmpty.hidden = list.length > 0;
  el.threadsClear.hidden = list.length === 0;
  el.threads.replaceChildren(...list.map((t) => {
    const open = h("button", { type: "button", class: "thread-open", "aria-current": t.id === threadId ? "true" : undefined,
      title: `${t.source} · ${t.turns} question${t.turns === 1 ? "" : "s"} · ${bytes(t.bytes)}` },
      h("span", { class: "thread-title" }, t.title), h("span", { class: "thread-when" }, when(t.updated_ms)));
    open.onclick = () => openThread(t.id);
    const del = h("button", { type: "button", class: "thread-delete quiet small", "aria-label": `Delete “${t.title}”`, title: "Delete" }, "×");
    del.onclick = async () => {
      try {
        await api.threadDelete(t.id);
        if (t.id === threadId) { threadId = null; el.messages.replaceChildren(); }
        refreshThreads();
      } catch (e) { showError(e); }
    };
    return h("li", { "data-id": t.id, class: t.id === threadId ? "current" : "" }, open, del);
  }));
}

/// Opens a stored conversation: its capture and its questions and answers; follow-ups go on it.
export async function openThread(id: string) {
  clearError();
  try {
    const v = await api.threadOpen(id);
    threadId = v.summary.id;
    frozenPng = v.png;
    showImage(v.png, v.geometry);
    renderTurns(v.turns);
    const last = [...v.turns].reverse().find((t) => !t.cancelled);
    const lastTurn = el.messages.lastElementChild as HTMLElement | null;
    if (last) await showShapesOf(last.answer, lastTurn);
    refreshThreads();
    hooks.shown();
  } catch (e) { showError(e); }
}

export function initConversation(h_: ConversationHooks) {
  hooks = h_;
  el.composer.onsubmit = (ev) => { ev.preventDefault(); ask(); };
  el.question.onkeydown = (ev) => { if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); ask(); } };
  el.cancel.onclick = cancelAsk;
  el.region.onclick = startRegion;
  // Two steps instead of a modal dialog: the first click arms the button for a few seconds.
  el.threadsClear.onclick = async () => {
    const b = el.threadsClear;
    if (b.dataset.armed !== "yes") {
      b.dataset.armed = "yes"; b.textContent = "Delete all?";
      window.setTimeout(() => { b.dataset.armed = ""; b.textContent = "Clear all"; }, 4000);
      return;
    }
    b.dataset.armed = ""; b.textContent = "Clear all";
    try { await api.threadsClear(); threadId = null; el.messages.replaceChildren(); refreshThreads(); } catch (e) { showError(e); }
  };
}
