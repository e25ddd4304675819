"""OpenAI's request and response shapes: validation of request bodies (a 400 naming the field
for a wrong type; unknown fields ignored), and the JSON of answers, stream chunks and errors.

Nothing here touches the model: a validated request says which messages, prompt, sampling,
grammar, stop strings and tools it wants; app.py turns that into token ids and a Job.
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..engine.sampling import SamplingParams

ROLES = ("system", "developer", "user", "assistant", "tool")


class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(param: str, message: str, code: str | None = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


# field readers ------------------------------------------------------------------------------

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               list: "an array", dict: "an object"}


def _get(body: Mapping[str, Any], name: str, kind: type, *, param: str | None = None) -> Any:
    """body[name] if present and not null, checked to be of ``kind`` (a bool is no number)."""
    value = body.get(name)
    if value is None:
        return None
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        raise bad(param or name, f"'{param or name}' must be {_TYPE_NAMES[kind]}", "invalid_type")
    return float(value) if kind is float else value


def _number(body: Mapping[str, Any], name: str, lo: float, hi: float) -> float | None:
    value = _get(body, name, float)
    if value is not None and not lo <= value <= hi:
        raise bad(name, f"'{name}' must be between {lo:g} and {hi:g}, got {value:g}")
    return value


# requests -----------------------------------------------------------------------------------

@dataclass
class Limits:
    max_tokens: int  # the most tokens one request may ask for
    default_params: SamplingParams = field(default_factory=SamplingParams)


@dataclass
class GenerationRequest:
    """What both endpoints share once validated."""

    params: SamplingParams
    stream: bool = False
    include_usage: bool = False
    stops: list[str] = field(default_factory=list)
    model: str | None = None
    return_token_ids: bool = False  # vLLM's extension: the answer's token ids in its choice


@dataclass
class ChatRequest(GenerationRequest):
    messages: list[Mapping[str, Any]] = field(default_factory=list)
    tools: list[Mapping[str, Any]] | None = None
    schema: dict[str, Any] | None = None  # response_format json_schema / json_object


@dataclass
class CompletionRequest(GenerationRequest):
    prompt: str = ""


def _common(body: Mapping[str, Any], limits: Limits, default_max: int | None) -> GenerationRequest:
    model = _get(body, "model", str)
    n = _get(body, "n", int)
    if n is not None and n != 1:
        raise bad("n", "only n=1 is supported: send the request again for another answer", "unsupported_value")
    if _get(body, "logprobs", bool) or _get(body, "echo", bool):
        name = "logprobs" if body.get("logprobs") else "echo"
        raise bad(name, f"'{name}' is not supported", "unsupported_parameter")
    stream = bool(_get(body, "stream", bool))
    opts = _get(body, "stream_options", dict) or {}
    include_usage = bool(_get(opts, "include_usage", bool, param="stream_options.include_usage"))
    max_tokens = _get(body, "max_completion_tokens", int)
    if max_tokens is None:
        max_tokens = _get(body, "max_tokens", int)
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    if max_tokens is not None and max_tokens < 1:
        raise bad(name, f"'{name}' must be at least 1")
    if max_tokens is not None and max_tokens > limits.max_tokens:
        raise bad(name, f"'{name}' is too large: {max_tokens}; this server allows at most {limits.max_tokens}")
    if max_tokens is None:
        max_tokens = default_max
    temperature = _number(body, "temperature", 0.0, 2.0)
    top_p = _number(body, "top_p", 0.0, 1.0)
    seed = _get(body, "seed", int)
    if top_p == 0.0:  # only the most likely token: greedy
        temperature, top_p = 0.0, None
    params = limits.default_params.with_(temperature=temperature, top_p=top_p, seed=seed)
    params = SamplingParams(**{**params.to_dict(), "max_tokens": max_tokens})
    stop = body.get("stop")
    if stop is None:
        stops: list[str] = []
    elif isinstance(stop, str):
        stops = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        if len(stop) > 4:
            raise bad("stop", "'stop' takes at most 4 strings")
        stops = list(stop)
    else:
        raise bad("stop", "'stop' must be a string or an array of strings", "invalid_type")
    return GenerationRequest(params=params, stream=stream, include_usage=include_usage,
                             stops=[s for s in stops if s], model=model,
                             return_token_ids=bool(_get(body, "return_token_ids", bool)))


def _content(value: Any, where: str) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, list):
        parts = []
        for i, part in enumerate(value):
            if not isinstance(part, Mapping) or not isinstance(part.get("text"), str) or \
                    part.get("type", "text") != "text":
                raise bad(f"{where}.content[{i}]", "only text content parts are supported "
                          '({"type": "text", "text": "..."})', "unsupported_value")
            parts.append(part["text"])
        return "".join(parts)
    raise bad(f"{where}.content", f"'{where}.content' must be a string or an array of text parts", "invalid_type")


def parse_chat(body: Mapping[str, Any], limits: Limits, *, check_schema: Any, check_tools: Any) -> ChatRequest:
    """Validate a /v1/chat/completions body. ``check_schema``/``check_tools`` say why a JSON
    Schema / tools value cannot be used (batch/tasks.py's checks), or None."""
    common = _common(body, limits, limits.default_params.max_tokens)
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise bad("messages", "'messages' must be a non-empty array of messages",
                  "invalid_type" if not isinstance(raw, list) else "invalid_value")
    messages: list[Mapping[str, Any]] = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, Mapping):
            raise bad(where, f"'{where}' must be an object", "invalid_type")
        role = m.get("role")
        if role not in ROLES:
            raise bad(f"{where}.role", f"'{where}.role' must be one of {', '.join(ROLES)}")
        msg: dict[str, Any] = {"role": role, "content": _content(m.get("content"), where)}
        if role == "assistant" and m.get("tool_calls") is not None:
            calls = m["tool_calls"]
            if not isinstance(calls, list) or not all(isinstance(c, Mapping) for c in calls):
                raise bad(f"{where}.tool_calls", f"'{where}.tool_calls' must be an array of objects", "invalid_type")
            msg["tool_calls"] = calls
        if role == "tool":
            msg["tool_call_id"] = m.get("tool_call_id")
        messages.append(msg)
    tools = body.get("tools")
    if tools is not None:
        why = check_tools(tools)
        if why:
            raise bad("tools", f"'tools' {why}")
    choice = body.get("tool_choice")
    if choice is not None and choice not in ("auto", "none"):
        raise bad("tool_choice", "'tool_choice' supports \"auto\" and \"none\" only", "unsupported_value")
    if choice == "none" or not tools:
        tools = None
    schema = None
    fmt = _get(body, "response_format", dict)
    if fmt is not None:
        kind = fmt.get("type")
        if kind == "json_object":
            schema = {"type": "object"}
        elif kind == "json_schema":
            spec = fmt.get("json_schema")
            if not isinstance(spec, Mapping) or not isinstance(spec.get("schema"), dict):
                raise bad("response_format.json_schema.schema",
                          "'response_format.json_schema.schema' must be a JSON Schema object", "invalid_type")
            schema = spec["schema"]
            why = check_schema(schema)
            if why:
                raise bad("response_format.json_schema.schema", f"the JSON Schema {why}")
        elif kind != "text":
            raise bad("response_format.type", "'response_format.type' must be text, json_object or json_schema")
    return ChatRequest(**vars(common), messages=messages, tools=tools, schema=schema)


def parse_completion(body: Mapping[str, Any], limits: Limits) -> CompletionRequest:
    # OpenAI's legacy completions default to 16 tokens.
    common = _common(body, limits, min(16, limits.max_tokens))
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise bad("prompt", "'prompt' must be a string (one prompt per request)", "invalid_type")
    if not prompt:
        raise bad("prompt", "'prompt' must not be empty")
    return CompletionRequest(**vars(common), prompt=prompt)


# responses ----------------------------------------------------------------------------------

def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens}}


def tool_call(name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}


def chat_completion(rid: str, model: str, message: dict[str, Any], finish_reason: str,
                    use: dict[str, Any]) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
            "usage": use}


def chat_chunk(rid: str, model: str, created: int, delta: dict[str, Any] | None,
               finish_reason: str | None = None, *, usage_field: bool = False,
               use: dict[str, Any] | None = None) -> dict[str, Any]:
    """One chat.completion.chunk; delta None gives the usage-only chunk (no choices)."""
    out: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                           "system_fingerprint": None}
    out["choices"] = [] if delta is None else [
        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    if usage_field:
        out["usage"] = use
    return out


def text_completion(rid: str, model: str, created: int, text: str, finish_reason: str | None,
                    use: dict[str, Any] | None, *, chunk: bool = False, usage_field: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"id": rid, "object": "text_completion", "created": created, "model": model,
                           "system_fingerprint": None,
                           "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}]}
    if usage_field:
        out["usage"] = use
    if chunk and use is not None and not text and finish_reason is None:
        out["choices"] = []
    return out


def sse(data: Any) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()
