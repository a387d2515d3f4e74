// Small DOM helpers shared by the views: element lookup, element building, the one error line,
// byte and time formatting.
import type { CmdError } from "./api";

export const $ = <T extends HTMLElement = HTMLElement>(id: string) => {
  const e = document.getElementById(id);
  if (!e) throw new Error(`#${id} is missing from index.html`);
  return e as T;
};

type Attrs = Record<string, string | number | boolean | undefined | ((ev: Event) => void)>;
/// `h("button", { class: "x", onclick: f }, "Label")`: attributes, `on*` handlers, children.
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: (Node | string)[]): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (typeof v === "function") (e as unknown as Record<string, unknown>)[k] = v;
    else if (k === "class") e.className = String(v);
    else if (k.startsWith("data-")) e.dataset[k.slice(5).replace(/-(\w)/g, (_, c: string) => c.toUpperCase())] = String(v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  e.append(...children);
  return e;
}

const errorLine = () => $("error");
export function showError(e: unknown) {
  const err = e as CmdError;
  errorLine().textContent = err && typeof err === "object" && "message" in err ? err.message : String(e);
}
export function clearError() { errorLine().textContent = ""; }

export function bytes(b: number): string {
  if (b >= 1e9) return (b / 1e9).toFixed(b >= 1e10 ? 0 : 1) + " GB";
  if (b >= 1e6) return (b / 1e6).toFixed(0) + " MB";
  if (b >= 1e3) return (b / 1e3).toFixed(0) + " kB";
  return b + " B";
}

/// Memory as people read it on their machine (binary units: "8 GiB", "5.5 GiB").
export function memory(b: number): string {
  const g = b / 2 ** 30;
  return (g >= 10 || Math.abs(g - Math.round(g)) < 0.05 ? Math.round(g).toString() : g.toFixed(1)) + " GiB";
}

export function duration(s: number): string {
  if (!isFinite(s) || s < 0) return "…";
  if (s < 60) return `${Math.ceil(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.round((s % 3600) / 60)} min`;
}

export function when(ms: number): string {
  const d = new Date(ms);
  const today = new Date();
  const sameDay = d.toDateString() === today.toDateString();
  return sameDay ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

/// Copies text (the async clipboard API where the web view allows it, else a selection copy).
export async function copyText(text: string): Promise<boolean> {
  try { await navigator.clipboard.writeText(text); return true; } catch { /* fall back */ }
  const t = h("textarea", { "aria-hidden": "true", class: "offscreen" });
  t.value = text;
  document.body.append(t);
  t.select();
  const ok = document.execCommand("copy");
  t.remove();
  return ok;
}

/// A button that copies `get()` and says so for a moment.
export function copyButton(get: () => string, label = "Copy"): HTMLButtonElement {
  const b = h("button", { type: "button", class: "copy quiet small", "aria-label": label }, label);
  b.onclick = async () => {
    const ok = await copyText(get());
    b.textContent = ok ? "Copied" : "Copy failed";
    b.dataset.copied = ok ? "yes" : "no";
    window.setTimeout(() => { b.textContent = label; }, 1500);
  };
  return b;
}
