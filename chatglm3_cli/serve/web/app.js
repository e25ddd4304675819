// The chat page: conversations in this browser, answers streamed from /v1/chat/completions.
// Model output is untrusted: Markdown is rendered by marked, then sanitized by DOMPurify before
// it reaches the page (and the server's Content-Security-Policy allows no inline script).

import { AuthError, modelCard, streamChat } from "./api.js";
import * as store from "./store.js";

const $ = (id) => document.getElementById(id);
const ui = {
  list: $("conversations"), messages: $("messages"), input: $("input"), send: $("send"), stop: $("stop"),
  search: $("search"), status: $("status"), settings: $("settings"), keyDialog: $("key-dialog"),
};

let conversations = store.loadConversations();
let current = null; // the open conversation
let card = null; // the model's card from the server
let running = null; // {controller} while an answer streams

// rendering -----------------------------------------------------------------------------------

marked.setOptions({ gfm: true, breaks: true });

function markdown(text) {
  const html = DOMPurify.sanitize(marked.parse(text || ""), { USE_PROFILES: { html: true } });
  const box = document.createElement("div");
  box.className = "md";
  box.innerHTML = html;
  for (const a of box.querySelectorAll("a")) {
    a.target = "_blank";
    a.rel = "noopener noreferrer";
  }
  for (const code of box.querySelectorAll("pre > code")) {
    hljs.highlightElement(code);
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy";
    copy.textContent = "Copy";
    copy.addEventListener("click", () => copyText(code.textContent, copy));
    code.parentElement.prepend(copy);
  }
  return box;
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const area = document.createElement("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = "Copy"; }, 1500);
}

function toolCallsBox(calls) {
  const box = document.createElement("div");
  box.className = "tool-calls";
  for (const c of calls) {
    const item = document.createElement("div");
    item.className = "tool-call";
    const head = document.createElement("div");
    head.className = "tool-name";
    head.textContent = `Tool call: ${c.function.name}`;
    const args = document.createElement("pre");
    let shown = c.function.arguments;
    try { shown = JSON.stringify(JSON.parse(shown), null, 2); } catch { /* still streaming */ }
    args.textContent = shown;
    item.append(head, args);
    box.append(item);
  }
  return box;
}

function statsLine(stats) {
  const parts = stats.tokens === undefined ? [] : [`${stats.tokens} tokens`];
  if (stats.tps) parts.push(`${stats.tps.toFixed(1)} tokens/s`);
  if (stats.context && card && card.nCtx) {
    parts.push(`context ${stats.context}/${card.nCtx} (${Math.round((100 * stats.context) / card.nCtx)}%)`);
  }
  if (stats.stopped) parts.push("stopped");
  else if (stats.finish === "length") parts.push("cut at max tokens");
  return parts.join(" · ");
}

function messageView(m, index) {
  const el = document.createElement("div");
  el.className = `msg ${m.role}`;
  el.dataset.index = index;
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = { user: "You", assistant: card ? card.name : "Assistant", tool: "Tool result",
    system: "System" }[m.role];
  const body = document.createElement("div");
  body.className = "body";
  if (m.role === "assistant") {
    if (m.content) body.append(markdown(m.content));
    if (m.tool_calls && m.tool_calls.length) body.append(toolCallsBox(m.tool_calls));
  } else {
    body.textContent = m.content;
  }
  if (m.error) {
    const err = document.createElement("div");
    err.className = "error";
    err.textContent = m.error;
    body.append(err);
  }
  el.append(who, body);
  const tools = document.createElement("div");
  tools.className = "msg-tools";
  if (m.stats) {
    const s = document.createElement("span");
    s.className = "stats";
    s.textContent = statsLine(m.stats);
    tools.append(s);
  }
  if (m.role === "user" || m.role === "tool") tools.append(button("Edit", () => startEdit(el, index), "edit"));
  if (m.role === "assistant" && m.content) tools.append(button("Copy", (e) => copyText(m.content, e.target), "copy-msg"));
  if (m.role === "assistant" && index === current.messages.length - 1) {
    tools.append(button("Regenerate", () => regenerate(index), "regenerate"));
  }
  el.append(tools);
  return el;
}

function button(label, onClick, cls) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  if (cls) b.className = cls;
  b.addEventListener("click", onClick);
  return b;
}

function renderMessages() {
  ui.messages.replaceChildren();
  if (!current || !current.messages.length) {
    const empty = document.createElement("div");
    empty.className = "empty";
    empty.textContent = card ? `Ask ${card.name} anything.` : "";
    ui.messages.append(empty);
    return;
  }
  current.messages.forEach((m, i) => ui.messages.append(messageView(m, i)));
  ui.messages.scrollTop = ui.messages.scrollHeight;
  const last = current.messages[current.messages.length - 1];
  ui.input.placeholder = last.tool_calls && last.tool_calls.length
    ? "The tool's result (sent as a tool message)"
    : "Message (Enter sends, Shift+Enter for a new line)";
}

function renderList() {
  ui.list.replaceChildren();
  const shown = conversations.filter((c) => store.matches(c, ui.search.value))
    .sort((a, b) => b.updated - a.updated);
  for (const c of shown) {
    const li = document.createElement("li");
    li.className = c === current ? "conv active" : "conv";
    li.dataset.id = c.id;
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = store.titleOf(c);
    title.addEventListener("click", () => open(c));
    li.append(title,
      button("✎", () => rename(c), "rename"),
      button("⤓", () => download([c], `${store.titleOf(c)}.json`), "export"),
      button("✕", () => remove(c), "delete"));
    li.querySelector(".rename").title = "Rename";
    li.querySelector(".export").title = "Export";
    li.querySelector(".delete").title = "Delete";
    ui.list.append(li);
  }
}

function save() {
  if (current) current.updated = Date.now();
  try {
    store.saveConversations(conversations);
  } catch (e) { // the browser's storage is full (a few MB per site)
    setStatus(`Cannot keep the conversations in this browser (${e.name}): export some and delete them.`);
  }
  renderList();
}

let statusTimer = null;

function setStatus(text, seconds = 0) {
  clearTimeout(statusTimer);
  ui.status.hidden = !text;
  ui.status.textContent = text || "";
  if (text && seconds) statusTimer = setTimeout(() => setStatus(""), seconds * 1000);
}

// conversations -------------------------------------------------------------------------------

function open(conv) {
  current = conv;
  renderMessages();
  renderList();
  document.body.classList.remove("sidebar-open");
}

function newChat() {
  if (running) return;
  const empty = conversations.find((c) => !c.messages.length);
  open(empty || { id: store.newId(), created: Date.now(), updated: Date.now(), messages: [] });
  ui.input.focus();
}

function rename(conv) {
  const title = prompt("Rename the conversation", store.titleOf(conv));
  if (title === null) return;
  conv.title = title.trim() || undefined;
  save();
}

function remove(conv) {
  if (!confirm(`Delete "${store.titleOf(conv)}"?`)) return;
  if (running && conv === current) running.controller.abort();
  conversations = conversations.filter((c) => c !== conv);
  if (conv === current) current = null;
  save();
  if (!current) newChat();
}

function download(list, name) {
  const blob = new Blob([store.exportJSON(list)], { type: "application/json" });
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = name.replace(/[\\/:*?"<>|]+/g, "_");
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

async function importFile(file) {
  try {
    const added = store.parseImport(await file.text(), conversations);
    conversations.push(...added);
    save();
    if (added.length) open(added[added.length - 1]);
    setStatus(`Imported ${added.length} conversation${added.length === 1 ? "" : "s"}.`, 4);
  } catch (e) {
    setStatus(`Cannot import ${file.name}: ${e.message}`);
  }
}

// answering -----------------------------------------------------------------------------------

function requestBody() {
  const s = store.loadSettings();
  const messages = [];
  if (s.system) messages.push({ role: "system", content: s.system });
  let lastCall = null;
  for (const m of current.messages) {
    if (m.role === "assistant") {
      const out = { role: "assistant", content: m.content || null };
      if (m.tool_calls && m.tool_calls.length) {
        out.tool_calls = m.tool_calls;
        lastCall = m.tool_calls[0];
      }
      messages.push(out);
    } else if (m.role === "tool") {
      messages.push({ role: "tool", content: m.content, tool_call_id: lastCall ? lastCall.id : undefined });
    } else {
      messages.push({ role: m.role, content: m.content });
    }
  }
  const body = { model: card ? card.id : "default", messages };
  if (s.temperature !== undefined && s.temperature !== "") body.temperature = Number(s.temperature);
  if (s.top_p !== undefined && s.top_p !== "") body.top_p = Number(s.top_p);
  if (s.max_tokens !== undefined && s.max_tokens !== "") body.max_tokens = Number(s.max_tokens);
  if (s.tools) body.tools = JSON.parse(s.tools);
  return body;
}

async function answer() {
  const conv = current;
  let body;
  try {
    body = requestBody();
  } catch (e) {
    setStatus(`The tools in the settings are not JSON: ${e.message}`);
    return;
  }
  // What the answer was asked with goes with it into exports: the time, the model, the settings.
  const asked = { model: body.model, time: new Date().toISOString() };
  for (const k of ["temperature", "top_p", "max_tokens"]) if (body[k] !== undefined) asked[k] = body[k];
  const reply = { role: "assistant", content: "", asked };
  conv.messages.push(reply);
  save();
  renderMessages();
  const view = ui.messages.lastElementChild;
  const bodyEl = view.querySelector(".body");
  const controller = new AbortController();
  running = { controller };
  document.body.classList.add("running");
  ui.stop.hidden = false;
  ui.send.hidden = true;
  setStatus("");
  const started = performance.now();
  let first = null;
  let usage = null;
  let painted = false;
  const paint = () => {
    painted = false;
    bodyEl.replaceChildren();
    if (reply.content) bodyEl.append(markdown(reply.content));
    if (reply.tool_calls) bodyEl.append(toolCallsBox(reply.tool_calls));
    if (conv === current) ui.messages.scrollTop = ui.messages.scrollHeight;
  };
  let finish = null;
  try {
    finish = await streamChat(body, controller.signal, (kind, value) => {
      if (kind === "usage") { usage = value; return; }
      first ??= performance.now();
      if (kind === "text") reply.content += value;
      else reply.tool_calls = value.map((c) => ({ ...c, function: { ...c.function } }));
      if (!painted) { painted = true; requestAnimationFrame(paint); }
    });
  } catch (e) {
    if (e.name === "AbortError") {
      reply.stats = { stopped: true }; // the counts come with the end of the stream
    } else {
      reply.error = e.message;
      if (e instanceof AuthError) askKey(e.message);
    }
  } finally {
    running = null;
    document.body.classList.remove("running");
    ui.stop.hidden = true;
    ui.send.hidden = false;
  }
  if (usage) {
    const seconds = (performance.now() - (first ?? started)) / 1000;
    const tokens = usage.completion_tokens;
    reply.stats = { tokens, tps: tokens > 1 && seconds > 0 ? (tokens - 1) / seconds : 0,
      context: usage.prompt_tokens + tokens, finish };
  }
  save();
  if (conv === current) renderMessages();
}

function send() {
  const text = ui.input.value;
  if (running || !text.trim()) return;
  if (!current) newChat();
  if (!conversations.includes(current)) conversations.push(current);
  const last = current.messages[current.messages.length - 1];
  const role = last && last.tool_calls && last.tool_calls.length ? "tool" : "user";
  current.messages.push({ role, content: text });
  ui.input.value = "";
  answer();
}

function regenerate(index) {
  if (running) return;
  current.messages.splice(index);
  answer();
}

function startEdit(el, index) {
  if (running) return;
  const m = current.messages[index];
  const body = el.querySelector(".body");
  const area = document.createElement("textarea");
  area.className = "edit-area";
  area.value = m.content;
  const row = document.createElement("div");
  row.className = "row end";
  row.append(button("Cancel", () => renderMessages(), "cancel-edit"),
    button("Save & regenerate", () => {
      if (!area.value.trim()) return;
      current.messages.splice(index);
      current.messages.push({ role: m.role, content: area.value });
      answer();
    }, "primary save-edit"));
  body.replaceChildren(area, row);
  el.querySelector(".msg-tools").replaceChildren();
  area.focus();
}

// settings, key, theme ------------------------------------------------------------------------

function fillSettings() {
  const s = store.loadSettings();
  const d = (card && card.defaults) || {};
  $("set-system").value = s.system ?? "";
  $("set-temperature").value = s.temperature ?? "";
  $("set-temperature").placeholder = d.temperature ?? "";
  $("set-top-p").value = s.top_p ?? "";
  $("set-top-p").placeholder = d.top_p ?? "";
  $("set-max-tokens").value = s.max_tokens ?? "";
  $("set-max-tokens").placeholder = d.max_tokens ?? (card ? `up to ${card.maxTokens}` : "");
  $("set-tools").value = s.tools ?? "";
  $("settings-error").hidden = true;
}

function saveSettings() {
  const tools = $("set-tools").value.trim();
  if (tools) {
    try {
      if (!Array.isArray(JSON.parse(tools))) throw new Error("it must be an array");
    } catch (e) {
      $("settings-error").textContent = `Tools: ${e.message}`;
      $("settings-error").hidden = false;
      return;
    }
  }
  store.saveSettings({ system: $("set-system").value || undefined, temperature: $("set-temperature").value,
    top_p: $("set-top-p").value, max_tokens: $("set-max-tokens").value, tools: tools || undefined });
  ui.settings.close();
}

function askKey(message) {
  $("key-error").textContent = message || "";
  $("key-error").hidden = !message;
  $("key-input").value = "";
  if (!ui.keyDialog.open) ui.keyDialog.showModal();
  $("key-input").focus();
}

async function connect() {
  try {
    card = await modelCard();
  } catch (e) {
    if (e instanceof AuthError) {
      askKey(store.apiKey() ? e.message : "");
      return;
    }
    setStatus(`Cannot reach the server: ${e.message}`);
    return;
  }
  $("model-name").textContent = card.name;
  $("model-family").textContent = [card.family, card.quant].filter((v) => v && v !== "unknown").join(" · ");
  $("model-name").title = `${card.id}, ${card.nCtx} tokens of context`;
  document.title = `${card.name} — ChatGLM3`;
  setStatus("");
  renderMessages();
}

function applyTheme(t) {
  const dark = t ? t === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
  document.documentElement.dataset.theme = dark ? "dark" : "light";
  $("hljs-dark").disabled = !dark;
  $("hljs-light").disabled = dark;
}

// wiring --------------------------------------------------------------------------------------

$("composer").addEventListener("submit", (e) => { e.preventDefault(); send(); });
ui.input.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { // not while an IME composes
    e.preventDefault();
    send();
  }
});
ui.stop.addEventListener("click", () => running && running.controller.abort());
$("new-chat").addEventListener("click", newChat);
ui.search.addEventListener("input", renderList);
$("export-all").addEventListener("click", () => download(conversations, "chatglm3-conversations.json"));
$("import-file").addEventListener("change", (e) => {
  if (e.target.files[0]) importFile(e.target.files[0]);
  e.target.value = "";
});
$("toggle-sidebar").addEventListener("click", () => document.body.classList.toggle("sidebar-open"));
$("backdrop").addEventListener("click", () => document.body.classList.remove("sidebar-open"));
$("theme").addEventListener("click", () => {
  const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  store.setTheme(next);
  applyTheme(next);
});
$("open-settings").addEventListener("click", () => { fillSettings(); ui.settings.showModal(); });
$("save-settings").addEventListener("click", saveSettings);
$("reset-settings").addEventListener("click", () => {
  store.saveSettings({});
  fillSettings();
});
$("forget-key").addEventListener("click", () => {
  store.setApiKey("");
  ui.settings.close();
  connect();
});
$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  store.setApiKey($("key-input").value.trim());
  ui.keyDialog.close();
  connect();
});

applyTheme(store.theme());
newChat();
renderList();
connect();
