"""Ollama's API beside OpenAI's: /api/version, /api/tags, /api/show, /api/ps, /api/chat and
/api/generate, for the apps that speak only Ollama (Open WebUI, Continue, the ``ollama`` clients).

Nothing here generates by itself: each request is rewritten as an OpenAI body and answered by
app.py's own path (message conversion, grammar, tool-call shaping, the scheduler's limits and
queue), and the OpenAI answer is reshaped into Ollama's (NDJSON lines while streaming, which is
Ollama's default). Errors come back as Ollama's ``{"error": "..."}`` with the same status.
"""
from __future__ import annotations

import json
import math
import time
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from ..engine.sampling import SamplingParams
from . import protocol as P
from .app import ServerState, SSEResponse, _authorize, _read_json, chat_answer, completion_answer

# The Ollama API version we answer /api/version with: clients gate features on it, and what
# this module implements is that release's shape of the endpoints above.
OLLAMA_API_VERSION = "0.12.0"
NDJSON = "application/x-ndjson"
_KEPT_UNTIL = datetime(2099, 1, 1, tzinfo=timezone.utc)  # the model stays loaded while serving


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _ollama_errors(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
    """Errors in Ollama's shape: {"error": "message"}, same status and headers."""
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except P.APIError as e:
            return JSONResponse({"error": e.message}, status_code=e.status, headers=e.headers)

    return wrapped


def _authorized(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    _authorize(state, request)
    return state


async def _begin(request: Request) -> tuple[ServerState, dict[str, Any], "_Timing"]:
    """The key checked, the clock started, the body read (as the OpenAI endpoints read it)."""
    state = _authorized(request)
    timing = _Timing()
    return state, await _read_json(state, request), timing


# the model's card -----------------------------------------------------------------------------

def _details(state: ServerState) -> dict[str, Any]:
    info = state.model.info
    family = state.model.family or info.architecture
    n = sum(math.prod(t.shape) for t in info.tensors)
    size = f"{n / 1e9:.1f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else str(n)
    return {"parent_model": "", "format": "gguf", "family": family, "families": [family],
            "parameter_size": size, "quantization_level": info.quant or "unknown"}


def _names(state: ServerState) -> set[str]:
    return {state.model_id, f"{state.model_id}:latest"}


def _tag(state: ServerState) -> dict[str, Any]:
    info = state.model.info
    modified = datetime.fromtimestamp(info.path.stat().st_mtime, timezone.utc).isoformat().replace("+00:00", "Z")
    return {"name": state.model_id, "model": state.model_id, "modified_at": modified, "size": info.file_size,
            "digest": "", "details": _details(state)}


def _parameters(params: SamplingParams) -> str:
    """The server's sampling defaults as Ollama's Modelfile PARAMETER lines."""
    lines = [f"temperature {params.temperature:g}", f"top_p {params.top_p:g}"]
    if params.top_k:
        lines.append(f"top_k {params.top_k}")
    if params.repeat_penalty != 1.0:
        lines.append(f"repeat_penalty {params.repeat_penalty:g}")
    if params.max_tokens is not None:
        lines.append(f"num_predict {params.max_tokens}")
    return "\n".join(lines)


async def version(request: Request) -> Response:
    return JSONResponse({"version": OLLAMA_API_VERSION, "chatglm3": __version__})


@_ollama_errors
async def tags(request: Request) -> Response:
    state = _authorized(request)
    return JSONResponse({"models": [_tag(state)]})


@_ollama_errors
async def ps(request: Request) -> Response:
    state = _authorized(request)
    card = {**_tag(state), "expires_at": _KEPT_UNTIL.isoformat().replace("+00:00", "Z"), "size_vram": 0,
            "context_length": state.n_ctx}
    card.pop("modified_at")
    return JSONResponse({"models": [card]})


@_ollama_errors
async def show(request: Request) -> Response:
    state, body, _ = await _begin(request)
    name = body.get("model") or body.get("name")
    if name not in _names(state):
        raise P.APIError(404, f"model '{name}' not found")
    info = state.model.info
    arch = info.architecture or "unknown"
    model_info = {"general.architecture": arch, "general.name": state.model.name,
                  "general.parameter_count": sum(math.prod(t.shape) for t in info.tensors),
                  f"{arch}.context_length": state.n_ctx}
    capabilities = ["completion"] + (["tools"] if state.model.tool_style is not None else [])
    return JSONResponse({
        "license": str(info.get("general.license") or ""), "modelfile": f"FROM {info.path.name}\n",
        "parameters": _parameters(state.limits.default_params), "template": info.chat_template or "",
        "details": _details(state), "model_info": model_info, "capabilities": capabilities,
        "modified_at": _tag(state)["modified_at"],
        # ours: what the web page shows (Ollama clients ignore unknown fields)
        "chatglm3": {"model_id": state.model_id, "n_ctx": state.n_ctx, "max_tokens": state.limits.max_tokens,
                     "defaults": state.limits.default_params.to_dict()}})


# requests -------------------------------------------------------------------------------------

def _options(body: Mapping[str, Any]) -> tuple[dict[str, Any], Callable[[SamplingParams], SamplingParams]]:
    """Ollama's ``options`` as OpenAI fields (validated there) and the rest as a sampling tune."""
    opts = body.get("options") or {}
    if not isinstance(opts, Mapping):
        raise P.bad("options", "'options' must be an object", "invalid_type")
    fields: dict[str, Any] = {}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p"), ("seed", "seed"), ("stop", "stop")):
        if opts.get(theirs) is not None:
            fields[ours] = opts[theirs]
    n = opts.get("num_predict")
    if n is not None:
        if not isinstance(n, int) or isinstance(n, bool):
            raise P.bad("options.num_predict", "'options.num_predict' must be an integer", "invalid_type")
        if n > 0:  # -1 (until the turn ends) and -2 (fill the context) leave the server's default
            fields["max_tokens"] = n
    extra: dict[str, Any] = {}
    for name, kind, ok in (("top_k", int, lambda v: v >= 0), ("repeat_penalty", float, lambda v: v > 0)):
        v = opts.get(name)
        if v is None:
            continue
        if not isinstance(v, (int, float)) or isinstance(v, bool) or (kind is int and not isinstance(v, int)) \
                or not ok(v):
            raise P.bad(f"options.{name}", f"'options.{name}' has an invalid value: {v!r}")
        extra[name] = v
    return fields, (lambda p: p.with_(**extra))


def _format(body: Mapping[str, Any]) -> dict[str, Any] | None:
    fmt = body.get("format")
    if fmt in (None, ""):
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "format", "schema": fmt}}
    raise P.bad("format", "'format' must be \"json\" or a JSON Schema object")


def _no_images(items: Any, where: str) -> None:
    if items:
        raise P.bad(where, "images are not supported by this model", "unsupported_value")


def _tool_calls_in(calls: Any, where: str) -> list[dict[str, Any]]:
    """Ollama's tool calls (arguments as an object) in OpenAI's shape."""
    if not isinstance(calls, list):
        raise P.bad(where, f"'{where}' must be an array", "invalid_type")
    out = []
    for c in calls:
        fn = c.get("function") if isinstance(c, Mapping) else None
        if not isinstance(fn, Mapping):
            raise P.bad(where, 'a tool call needs "function": {"name", "arguments"}')
        args = fn.get("arguments", {})
        out.append({"type": "function", "function": {
            "name": fn.get("name"), "arguments": args if isinstance(args, str) else json.dumps(args)}})
    return out


def _messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = body.get("messages")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise P.bad("messages", "'messages' must be an array of messages", "invalid_type")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, Mapping):
            raise P.bad(f"messages[{i}]", f"'messages[{i}]' must be an object", "invalid_type")
        _no_images(m.get("images"), f"messages[{i}].images")
        msg: dict[str, Any] = {"role": m.get("role"), "content": m.get("content") or ""}
        if m.get("tool_calls"):
            msg["tool_calls"] = _tool_calls_in(m["tool_calls"], f"messages[{i}].tool_calls")
        out.append(msg)
    return out


def _common(body: Mapping[str, Any]) -> tuple[dict[str, Any], Callable[[SamplingParams], SamplingParams]]:
    stream = body.get("stream", True)  # Ollama streams unless told not to
    if not isinstance(stream, bool):
        raise P.bad("stream", "'stream' must be a boolean", "invalid_type")
    fields, tune = _options(body)
    out = {**fields, "stream": stream, "model": body.get("model")}
    if stream:
        out["stream_options"] = {"include_usage": True}
    return out, tune


def _loaded(state: ServerState, body: Mapping[str, Any], field: str) -> Response:
    """Ollama's answer to a request with nothing to say: it loads (or, keep_alive 0, unloads) the
    model. Ours is always loaded."""
    reason = "unload" if body.get("keep_alive") in (0, "0", "0s") else "load"
    out = {"model": state.model_id, "created_at": _now(), "done": True, "done_reason": reason}
    out[field] = {"role": "assistant", "content": ""} if field == "message" else ""
    return JSONResponse(out)


# answers --------------------------------------------------------------------------------------

class _Timing:
    """Ollama's durations (nanoseconds): the prompt until the first token, then the answer."""

    def __init__(self) -> None:
        self.start = self.first = time.perf_counter_ns()

    def first_token(self) -> None:
        self.first = time.perf_counter_ns()

    def fields(self, usage: Mapping[str, Any] | None) -> dict[str, Any]:
        end = time.perf_counter_ns()
        use = usage or {}
        return {"total_duration": end - self.start, "load_duration": 0,
                "prompt_eval_count": use.get("prompt_tokens", 0), "prompt_eval_duration": self.first - self.start,
                "eval_count": use.get("completion_tokens", 0), "eval_duration": end - self.first}


def _done_reason(finish: str | None) -> str:
    return "length" if finish == "length" else "stop"


def _tool_calls_out(calls: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for c in calls:
        fn = c.get("function") or {}
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except json.JSONDecodeError:
            args = {}
        out.append({"function": {"name": fn.get("name", ""), "arguments": args}})
    return out


def _whole(state: ServerState, whole: Mapping[str, Any], field: str, timing: _Timing) -> dict[str, Any]:
    choice = whole["choices"][0]
    out: dict[str, Any] = {"model": state.model_id, "created_at": _now()}
    if field == "message":
        msg = choice["message"]
        out["message"] = {"role": "assistant", "content": msg.get("content") or ""}
        if msg.get("tool_calls"):
            out["message"]["tool_calls"] = _tool_calls_out(msg["tool_calls"])
    else:
        out["response"] = choice["text"] if "text" in choice else choice["message"].get("content") or ""
    return {**out, "done": True, "done_reason": _done_reason(choice.get("finish_reason")),
            **timing.fields(whole.get("usage"))}


def _line(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


async def _ndjson(state: ServerState, chunks: AsyncIterator[dict], field: str, timing: _Timing) -> AsyncIterator[bytes]:
    """OpenAI chunk objects as Ollama's NDJSON lines: each piece of text, the tool calls once
    whole, then the closing line with the counts and durations."""
    calls: dict[int, dict[str, Any]] = {}
    finish, usage, started = None, None, False
    try:
        async for c in chunks:
            if "error" in c:
                yield _line({"error": c["error"].get("message", "generation failed")})
                return
            if c.get("usage"):
                usage = c["usage"]
            for choice in c.get("choices") or []:
                finish = choice.get("finish_reason") or finish
                text = choice["text"] if "text" in choice else (choice.get("delta") or {}).get("content")
                for tc in (choice.get("delta") or {}).get("tool_calls") or []:
                    into = calls.setdefault(tc.get("index", 0), {"function": {"name": "", "arguments": ""}})
                    fn = tc.get("function") or {}
                    into["function"]["name"] += fn.get("name") or ""
                    into["function"]["arguments"] += fn.get("arguments") or ""
                if text:
                    if not started:
                        timing.first_token()
                        started = True
                    piece = {"role": "assistant", "content": text} if field == "message" else text
                    yield _line({"model": state.model_id, "created_at": _now(), field: piece, "done": False})
        if calls:
            msg = {"role": "assistant", "content": "", "tool_calls": _tool_calls_out(list(calls.values()))}
            yield _line({"model": state.model_id, "created_at": _now(), "message": msg, "done": False})
        last: dict[str, Any] = {"model": state.model_id, "created_at": _now(),
                                field: {"role": "assistant", "content": ""} if field == "message" else ""}
        yield _line({**last, "done": True, "done_reason": _done_reason(finish), **timing.fields(usage)})
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


async def _respond(state: ServerState, answer: Any, field: str, timing: _Timing) -> Response:
    if answer.chunks is not None:
        return SSEResponse(_ndjson(state, answer.chunks, field, timing), answer.job, media_type=NDJSON)
    return JSONResponse(_whole(state, answer.whole, field, timing))


@_ollama_errors
async def chat(request: Request) -> Response:
    state, body, timing = await _begin(request)
    messages = _messages(body)
    if not messages:
        return _loaded(state, body, "message")
    common, tune = _common(body)
    openai = {**common, "messages": messages}
    if body.get("tools"):
        openai["tools"] = body["tools"]
    fmt = _format(body)
    if fmt is not None:
        openai["response_format"] = fmt
    return await _respond(state, await chat_answer(state, request, openai, tune), "message", timing)


@_ollama_errors
async def generate(request: Request) -> Response:
    state, body, timing = await _begin(request)
    prompt = body.get("prompt") or ""
    if not isinstance(prompt, str):
        raise P.bad("prompt", "'prompt' must be a string", "invalid_type")
    _no_images(body.get("images"), "images")
    if body.get("suffix"):
        raise P.bad("suffix", "'suffix' (fill-in-the-middle) is not supported by this model", "unsupported_value")
    if not prompt:
        return _loaded(state, body, "response")
    common, tune = _common(body)
    fmt = _format(body)
    if body.get("raw"):  # the prompt as it is, without the chat template
        if fmt is not None:
            raise P.bad("format", "'format' needs the chat template: it cannot be used with 'raw'")
        return await _respond(state, await completion_answer(state, request, {**common, "prompt": prompt}, tune),
                              "response", timing)
    system = body.get("system")
    messages = ([{"role": "system", "content": system}] if isinstance(system, str) and system else []) + \
        [{"role": "user", "content": prompt}]
    openai = {**common, "messages": messages, **({"response_format": fmt} if fmt is not None else {})}
    return await _respond(state, await chat_answer(state, request, openai, tune), "response", timing)


def ollama_routes() -> list[Route]:
    return [
        Route("/api/version", version, methods=["GET"]),
        Route("/api/tags", tags, methods=["GET"]),
        Route("/api/ps", ps, methods=["GET"]),
        Route("/api/show", show, methods=["POST"]),
        Route("/api/chat", chat, methods=["POST"]),
        Route("/api/generate", generate, methods=["POST"]),
    ]

