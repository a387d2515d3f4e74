// Answers as Markdown (paragraphs, lists, code, tables) that can never run anything: raw HTML
// in an answer is shown as text, links are not followed and remote images are not fetched
// (they become text), and what marked produces is sanitised by DOMPurify against a short list of
// tags before it reaches the page. The page's CSP forbids inline script besides.
import { Marked, type Tokens } from "marked";
import DOMPurify from "dompurify";
import { copyButton, h } from "./dom";

const escape = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");

const marked = new Marked({
  gfm: true,
  breaks: false,
  async: false,
  renderer: {
    html: ({ text }: Tokens.HTML | Tokens.Tag) => escape(text),
    link({ text, href, tokens }: Tokens.Link) {
      const inner = this.parser.parseInline(tokens);
      return text === href ? `<span class="link">${inner}</span>` : `<span class="link">${inner}</span> <span class="href">(${escape(href)})</span>`;
    },
    image: ({ text, href }: Tokens.Image) => `<span class="image-ref">[image: ${escape(text || href)}]</span>`,
  },
});

const ALLOWED_TAGS = ["p", "br", "hr", "em", "strong", "del", "code", "pre", "blockquote", "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6",
  "table", "thead", "tbody", "tr", "th", "td", "span", "input"];

/// The sanitised HTML of `text`.
export function toSafeHtml(text: string): string {
  const raw = marked.parse(text) as string;
  return DOMPurify.sanitize(raw, {
    ALLOWED_TAGS, ALLOWED_ATTR: ["class", "align", "type", "checked", "disabled", "start"],
    ALLOW_DATA_ATTR: false,
  });
}

/// A Thinking model's answer: its reasoning (`<think>…</think>`, the opening tag may be in the
/// prompt) and the answer after it; null reasoning for other answers.
export function splitThinking(text: string): { reasoning: string | null; answer: string } {
  const end = text.indexOf("</think>");
  if (end < 0) {
    // Still thinking: everything so far is reasoning.
    return text.trimStart().startsWith("<think>") ? { reasoning: text.trimStart().slice(7), answer: "" } : { reasoning: null, answer: text };
  }
  return { reasoning: text.slice(0, end).replace(/^\s*<think>/, "").trim(), answer: text.slice(end + 8).trimStart() };
}

/// Renders `text` into `target` (replacing what was there), with a copy button on every code
/// block; a Thinking model's reasoning goes into a collapsed "Reasoning" block above the answer.
export function renderMarkdown(target: HTMLElement, text: string) {
  const { reasoning, answer } = splitThinking(text);
  if (reasoning !== null) {
    const body = h("div", { class: "md reasoning-body" });
    renderInto(body, reasoning);
    const details = h("details", { class: "reasoning" }, h("summary", {}, answer ? "Reasoning" : "Reasoning…"), body);
    const rest = h("div", {});
    renderInto(rest, answer);
    const wasOpen = target.querySelector("details.reasoning")?.hasAttribute("open");
    if (wasOpen) details.setAttribute("open", "");
    target.replaceChildren(details, ...rest.childNodes);
    return;
  }
  renderInto(target, text);
}

function renderInto(target: HTMLElement, text: string) {
  target.innerHTML = toSafeHtml(text);
  for (const pre of target.querySelectorAll("pre")) {
    const code = pre.textContent ?? "";
    const wrap = h("div", { class: "code-block" });
    pre.replaceWith(wrap);
    wrap.append(copyButton(() => code, "Copy code"), pre);
  }
  for (const box of target.querySelectorAll<HTMLInputElement>("input")) {
    if (box.type !== "checkbox") box.remove(); else box.disabled = true;
  }
}
