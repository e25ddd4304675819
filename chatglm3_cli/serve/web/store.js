// Conversations, settings and the API key, kept in this browser's localStorage.
// An export is {"format": "chatglm3-conversations", "version": 1, "conversations": [...]};
// an import accepts that (or one bare conversation) and checks every field before keeping it.

const CONVERSATIONS = "chatglm3.conversations";
const SETTINGS = "chatglm3.settings";
const KEY = "chatglm3.apiKey";
const THEME = "chatglm3.theme";
export const EXPORT_FORMAT = "chatglm3-conversations";
const ROLES = new Set(["system", "user", "assistant", "tool"]);

function readJSON(name, fallback) {
  try {
    const v = JSON.parse(localStorage.getItem(name));
    return v ?? fallback;
  } catch {
    return fallback;
  }
}

export function newId() {
  return Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
}

export function loadConversations() {
  const all = readJSON(CONVERSATIONS, []);
  return Array.isArray(all) ? all.filter(isConversation) : [];
}

export function saveConversations(all) {
  localStorage.setItem(CONVERSATIONS, JSON.stringify(all));
}

export function titleOf(conv) {
  if (conv.title) return conv.title;
  const first = conv.messages.find((m) => m.role === "user");
  const text = (first ? first.content : "").trim().replace(/\s+/g, " ");
  return text ? text.slice(0, 48) : "New chat";
}

export function matches(conv, query) {
  const q = query.trim().toLowerCase();
  if (!q) return true;
  if (titleOf(conv).toLowerCase().includes(q)) return true;
  return conv.messages.some((m) => (m.content || "").toLowerCase().includes(q));
}

function isMessage(m) {
  if (!m || typeof m !== "object" || !ROLES.has(m.role)) return false;
  if (m.content !== null && typeof m.content !== "string") return false;
  if (m.tool_calls !== undefined && !Array.isArray(m.tool_calls)) return false;
  return true;
}

function isConversation(c) {
  return !!c && typeof c === "object" && typeof c.id === "string" && Array.isArray(c.messages) &&
    c.messages.every(isMessage) && (c.title === undefined || typeof c.title === "string");
}

export function exportJSON(conversations) {
  return JSON.stringify({ format: EXPORT_FORMAT, version: 1, exported: new Date().toISOString(),
    conversations }, null, 2);
}

// The conversations in an export (or one conversation), each checked and given a fresh id
// where it would replace one already kept. Throws an Error saying what is wrong.
export function parseImport(text, existing) {
  let data;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new Error(`not JSON: ${e.message}`);
  }
  const list = data && data.format === EXPORT_FORMAT ? data.conversations : [data];
  if (!Array.isArray(list)) throw new Error("no conversations in the file");
  const taken = new Set(existing.map((c) => c.id));
  return list.map((c, i) => {
    if (!isConversation(c)) throw new Error(`conversation ${i + 1} is not one this page wrote`);
    const conv = { id: taken.has(c.id) ? newId() : c.id, title: c.title, created: Number(c.created) || Date.now(),
      updated: Number(c.updated) || Date.now(), system: typeof c.system === "string" ? c.system : undefined,
      messages: c.messages.map((m) => ({ ...m })) };
    taken.add(conv.id);
    return conv;
  });
}

export function loadSettings() {
  const s = readJSON(SETTINGS, {});
  return s && typeof s === "object" ? s : {};
}

export function saveSettings(s) {
  localStorage.setItem(SETTINGS, JSON.stringify(s));
}

export function apiKey() {
  return localStorage.getItem(KEY) || "";
}

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY, key);
  else localStorage.removeItem(KEY);
}

export function theme() {
  return localStorage.getItem(THEME);
}

export function setTheme(t) {
  localStorage.setItem(THEME, t);
}
