"""ChatGLM3's tool-calling conventions, and their OpenAI equivalents.

ChatGLM3 learns tools from a system message that carries their definitions (``Message.tools``).
It calls one by answering with the tool's name as the metadata line, then a Python call
``tool_call(arg=value, ...)`` (usually inside a ```python fence), and ends the turn with
``<|observation|>``; the tool's result comes back as an ``observation`` message. The official
``process_response`` reads the call with ``eval``; we read it with ``ast`` and accept only
literal arguments, so model output is never executed.

GLM-4-9B-chat learns its tools from the ``# 可用工具`` block of its template (see prompt.py)
and calls one as ``name`` (metadata line) + the arguments as a JSON object; ``read_call``
reads either format.

A model prompted through a chat template that reads ``tools`` (style "template") writes its
calls in its answer's text: ``read_template_calls`` reads the Hermes / Qwen2.5 form (one or
more ``<tool_call>`` JSON ``</tool_call>`` blocks, text allowed before the first) and a bare
JSON object as the whole answer (Llama 3.1).
"""
from __future__ import annotations

import ast
import json
import keyword
from typing import Any, Collection, Mapping, Sequence

from .prompt import Message

# The system prompt of ChatGLM3's own tool demos (openai_api_demo, composite_demo).
TOOLS_SYSTEM_PROMPT = ("Answer the following questions as best as you can. "
                       "You have access to the following tools:")

_NAMES = {"true": True, "false": False, "null": None, "none": None}


def function_specs(tools: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Tool definitions as ChatGLM3 reads them: OpenAI's ``{"type": "function", "function":
    {...}}`` entries are unwrapped; bare ``{"name", "description", "parameters"}`` pass through."""
    out = []
    for t in tools:
        fn = t.get("function") if t.get("type") == "function" else t
        if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ValueError('each tool needs a "name" (or {"type": "function", "function": {"name": ...}})')
        out.append(dict(fn))
    return out


def tools_message(tools: Sequence[Mapping[str, Any]]) -> Message:
    return Message("system", TOOLS_SYSTEM_PROMPT, tools=function_specs(tools))


def format_call(arguments: Mapping[str, Any]) -> str:
    """An assistant tool call's content, as ChatGLM3 writes it."""
    if all(k.isascii() and k.isidentifier() and not keyword.iskeyword(k) for k in arguments):
        args = ", ".join(f"{k}={_py_literal(v)}" for k, v in arguments.items())
    else:  # names Python cannot take as keywords ("from", "max-results")
        args = "**" + _py_literal(dict(arguments))
    return f"```python\ntool_call({args})\n```"


def _py_literal(value: Any) -> str:
    # JSON values as Python literals (repr gives True/False/None and quoted, escaped strings).
    return repr(value)


def _literal(node: ast.expr) -> Any:
    if isinstance(node, ast.Name) and node.id.lower() in _NAMES:  # JSON's true/false/null
        return _NAMES[node.id.lower()]
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise ValueError("** in a dict")
        return {_key(k): _literal(v) for k, v in zip(node.keys, node.values, strict=True)}  # type: ignore[arg-type]
    value = ast.literal_eval(node)
    if isinstance(value, (set, frozenset, complex, bytes)):
        raise ValueError("not a JSON value")
    return value


def _key(node: ast.expr) -> str:
    key = _literal(node)
    return key if isinstance(key, str) else json.dumps(key)


def parse_call(text: str) -> dict[str, Any] | None:
    """The keyword arguments of the ``tool_call(...)`` in a tool-call answer, or None when the
    answer holds no call with literal keyword arguments."""
    start = text.find("tool_call(")
    if start < 0:
        return None
    # The call is the shortest text from "tool_call(" to a ")" that parses as an expression.
    end = text.find(")", start)
    while end >= 0:
        try:
            tree = ast.parse(text[start:end + 1], mode="eval")
        except SyntaxError:
            end = text.find(")", end + 1)
            continue
        call = tree.body
        if not isinstance(call, ast.Call) or call.args:
            return None
        out: dict[str, Any] = {}
        try:
            for kw in call.keywords:
                if kw.arg is not None:
                    out[kw.arg] = _literal(kw.value)
                elif isinstance(kw.value, ast.Dict):  # tool_call(**{"from": ...}), a literal dict only
                    out.update(_literal(kw.value))
                else:
                    return None
        except (ValueError, SyntaxError, TypeError):
            return None
        return out
    return None


def call_message(name: str, arguments: Mapping[str, Any]) -> Message:
    """An assistant tool-call turn, for a conversation replayed from OpenAI messages (each
    family's prompt writes it in its own format from ``arguments``)."""
    return Message("assistant", format_call(arguments), metadata=name, arguments=dict(arguments))


def parse_json_call(text: str) -> dict[str, Any] | None:
    """GLM-4's call: the answer after the metadata line is one JSON object (possibly fenced)."""
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`").strip()
        if body.startswith("json"):
            body = body[4:]
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def read_call(text: str, style: str) -> dict[str, Any] | None:
    """The arguments of a tool-call answer written in a family's style ("chatglm3" writes
    ``tool_call(...)``, "glm4" writes JSON); each also accepts the other's spelling."""
    if style == "glm4":
        args = parse_json_call(text)
        return args if args is not None else parse_call(text)
    args = parse_call(text)
    return args if args is not None else parse_json_call(text)


CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
MAX_TEMPLATE_CALLS = 32  # calls read from one answer; more: the text is not a call
# The keys a written call may have: the name, its arguments (Llama 3.1 says "parameters"), and
# the "type"/"id" some models copy from OpenAI's shape. Any other key: an answer, not a call.
_CALL_KEYS = {"name", "arguments", "parameters", "type", "id"}


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        return None


def _written_call(value: Any) -> tuple[str, dict[str, Any]] | None:
    """(name, arguments) of a call written as a JSON object, or None."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"] \
            or not set(value) <= _CALL_KEYS or ("arguments" in value and "parameters" in value):
        return None
    args = value.get("arguments", value.get("parameters", {}))
    if isinstance(args, str):  # some models write the arguments as a JSON string, as OpenAI sends them
        args = _json_value(args) if args.strip() else {}
    return (value["name"], args) if isinstance(args, dict) else None


def read_template_calls(text: str, offered: Collection[str]) -> tuple[str, list[tuple[str, dict[str, Any]]]] | None:
    """The text before the calls and the calls, (name, arguments) each, of an answer written
    by a model whose chat template took the tools; None when the answer is not a call to an
    offered tool (no call, unreadable JSON, a name not offered, text after the calls): the
    whole text is then the answer's content."""
    if not offered:
        return None
    start = text.find(CALL_OPEN)
    if start < 0:  # Llama 3.1: the whole answer is one JSON object
        body = text.strip()
        if body.startswith("```"):
            body = body.strip("`").strip()
            body = (body[4:] if body.startswith("json") else body).strip()
        call = _written_call(_json_value(body)) if body.startswith("{") else None
        return ("", [call]) if call is not None and call[0] in offered else None
    if CALL_CLOSE in text[:start]:  # a call closed before any opened: malformed
        return None
    calls: list[tuple[str, dict[str, Any]]] = []
    rest = text[start:]
    while rest:
        if not rest.startswith(CALL_OPEN) or len(calls) >= MAX_TEMPLATE_CALLS:
            return None
        end = rest.find(CALL_CLOSE, len(CALL_OPEN))
        if end < 0:  # the last call may stop at the end of the turn without its closing tag
            body, rest = rest[len(CALL_OPEN):], ""
        else:
            body, rest = rest[len(CALL_OPEN):end], rest[end + len(CALL_CLOSE):].lstrip()
        call = _written_call(_json_value(body.strip()))
        if call is None or call[0] not in offered:
            return None
        calls.append(call)
    return text[:start].strip(), calls


def call_marker_start(text: str) -> int:
    """Where a tool call may begin in a template model's text streamed so far: the position of
    ``<tool_call>`` or of a trailing prefix of it, 0 when the text (stripped) opens a JSON
    object, else len(text). Text before it may be sent; the rest waits until the answer ends."""
    if not text.strip() or text.lstrip().startswith(("{", "`")):
        return 0
    at = text.find(CALL_OPEN)
    if at >= 0:
        return at
    for n in range(min(len(CALL_OPEN) - 1, len(text)), 0, -1):
        if text.endswith(CALL_OPEN[:n]):
            return len(text) - n
    return len(text)
