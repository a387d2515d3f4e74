// Settings → MCP server: the fields (filled and read with the rest of the settings form), where
// the server listens, and the calls clients made (the `mcp` event, newest first). The sidebar
// chip says when the server is on and what a client called last.
import { listen } from "@tauri-apps/api/event";
import { api, type McpCall, type McpStatus, type Settings } from "./api";
import { $ } from "./dom";

/// Every tool, as crates/desktop/src/mcp/tools.rs names them.
export const MCP_TOOLS = [
  "list_monitors", "list_windows", "ask_screen", "describe_screen", "find", "screenshot", "wait_for_change",
  "click", "type", "key", "scroll", "do_task",
];
const ACTS = new Set(["click", "type", "key", "scroll", "do_task"]);

const el = {
  enabled: $<HTMLInputElement>("mcp-enabled"), port: $<HTMLInputElement>("mcp-port"), token: $<HTMLInputElement>("mcp-token"),
  share: $<HTMLInputElement>("mcp-share"), actions: $<HTMLInputElement>("mcp-actions"), tools: $("mcp-tools"),
  state: $("mcp-state"), calls: $("mcp-calls"), chip: $<HTMLButtonElement>("mcp-chip"), chipInfo: $("mcp-info"),
};

let calls: McpCall[] = [];
let url: string | null = null;
let error: string | null = null;

for (const name of MCP_TOOLS) {
  const label = document.createElement("label");
  label.className = "switch";
  const box = document.createElement("input");
  box.type = "checkbox";
  box.value = name;
  box.id = `mcp-tool-${name}`;
  const text = document.createElement("span");
  text.textContent = ACTS.has(name) ? `${name} (acts)` : name;
  label.append(box, " ", text);
  el.tools.append(label);
}
const toolBoxes = () => [...el.tools.querySelectorAll<HTMLInputElement>("input[type=checkbox]")];

/// Puts the MCP settings into the form.
export function fillMcp(s: Settings) {
  el.enabled.checked = s.mcp_enabled;
  el.port.value = String(s.mcp_port);
  el.token.value = s.mcp_token ?? "";
  el.share.checked = s.mcp_share_screenshots;
  el.actions.checked = s.mcp_allow_actions;
  for (const b of toolBoxes()) b.checked = s.mcp_tools.includes(b.value);
  fieldsState();
}

/// The form's MCP settings; a port that is not a whole number keeps the saved one and is
/// reported with the other number fields' errors.
export function readMcp(s: Settings): { port: number } {
  s.mcp_enabled = el.enabled.checked;
  s.mcp_token = el.token.value.trim() || null;
  s.mcp_share_screenshots = el.share.checked;
  s.mcp_allow_actions = el.actions.checked;
  s.mcp_tools = toolBoxes().filter((b) => b.checked).map((b) => b.value);
  return { port: el.port.value.trim() === "" ? NaN : Number(el.port.value) };
}

function fieldsState() {
  for (const i of [el.port, el.token, el.share, el.actions, ...toolBoxes()]) i.disabled = !el.enabled.checked;
}

function ago(call: McpCall): string {
  const s = Math.max(0, Math.round((Date.now() - call.at_ms) / 1000));
  return s < 60 ? `${s} s ago` : `${Math.round(s / 60)} min ago`;
}

function render() {
  el.state.textContent = url
    ? `Listening on ${url}. Point your MCP client there (README "Use from other agents").`
    : error ? `Not serving: ${error}` : "Off.";
  el.calls.replaceChildren(
    ...calls.slice(0, 20).map((c) => {
      const li = document.createElement("li");
      li.dataset.result = c.result;
      const head = document.createElement("strong");
      head.textContent = `${c.client} · ${c.tool}`;
      const what = document.createElement("span");
      what.textContent = ` ${c.result} (${Math.round(c.ms)} ms) ${ago(c)}`;
      const detail = document.createElement("div");
      detail.className = "muted small";
      detail.textContent = c.detail;
      li.append(head, what, detail);
      return li;
    }),
  );
  if (calls.length === 0) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "No client has called yet.";
    el.calls.replaceChildren(li);
  }
  el.chip.hidden = !url && calls.length === 0;
  el.chipInfo.dataset.on = url ? "yes" : "no";
  const last = calls[0];
  el.chipInfo.textContent = last ? `MCP · ${last.client}: ${last.tool}` : url ? "MCP on, no client yet" : "MCP off";
}

/// Asks where the server listens and what was called.
export async function refreshMcp() {
  try {
    const s: McpStatus = await api.mcpStatus();
    url = s.url;
    error = s.error;
    calls = s.calls;
    render();
  } catch {
    // The list is informative only.
  }
}

export function initMcp(openSettings: () => void) {
  el.enabled.onchange = fieldsState;
  el.chip.onclick = openSettings;
  listen<McpCall>("mcp", (e) => {
    calls = [e.payload, ...calls].slice(0, 50);
    render();
  });
  render();
}
