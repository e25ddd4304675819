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
"""
from __future__ import annotations

import ast
import json
import keyword
from typing import Any, Mapping, Sequence

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
