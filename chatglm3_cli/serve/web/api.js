// The server's endpoints, called as any client calls them: the same paths, the same key.

import { apiKey } from "./store.js";

export class AuthError extends Error {}

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const key = apiKey();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function failure(resp) {
  let message = `${resp.status} ${resp.statusText}`;
  try {
    const body = await resp.json();
    message = (body.error && (body.error.message || body.error)) || message;
  } catch {
    // not JSON: keep the status line
  }
  return resp.status === 401 ? new AuthError(message) : new Error(message);
}

async function call(path, init = {}) {
  const resp = await fetch(path, { ...init, headers: headers(init.body !== undefined) });
  if (!resp.ok) throw await failure(resp);
  return resp.json();
}

// The model's card: its id, name, family, context and the server's sampling defaults.
export async function modelCard() {
  const models = await call("/v1/models");
  const id = models.data[0].id;
  const show = await call("/api/show", { method: "POST", body: JSON.stringify({ model: id }) });
  const ours = show.chatglm3 || {};
  return { id, name: show.model_info["general.name"] || id, family: show.details.family,
    quant: show.details.quantization_level, nCtx: ours.n_ctx, maxTokens: ours.max_tokens,
    defaults: ours.defaults || {} };
}

// Streams one chat answer. onDelta(kind, value) gets ("text", piece), ("tool_calls", calls so
// far), ("usage", usage). Resolves with the finish reason; rejects with an AbortError on Stop.
export async function streamChat(body, signal, onDelta) {
  const resp = await fetch("/v1/chat/completions", { method: "POST", headers: headers(true), signal,
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }) });
  if (!resp.ok) throw await failure(resp);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  const calls = [];
  let buffer = "";
  let finish = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("");
      if (!data || data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message || "the answer failed");
      if (chunk.usage) onDelta("usage", chunk.usage);
      for (const choice of chunk.choices || []) {
        const d = choice.delta || {};
        if (d.content) onDelta("text", d.content);
        for (const tc of d.tool_calls || []) {
          const into = calls[tc.index || 0] ||= { id: "", type: "function", function: { name: "", arguments: "" } };
          if (tc.id) into.id = tc.id;
          if (tc.function && tc.function.name) into.function.name += tc.function.name;
          if (tc.function && tc.function.arguments) into.function.arguments += tc.function.arguments;
          onDelta("tool_calls", calls);
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
  }
  return finish;
}
