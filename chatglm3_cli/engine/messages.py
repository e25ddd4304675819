"""OpenAI-style chat messages to the engine's ``Message`` list, shared by batch jobs and the server.

Roles are mapped the way ChatGLM3 names them (``tool`` is an observation), and an assistant
message's ``tool_calls`` become the model's own tool-call turns.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from .prompt import Message
from .toolcalls import call_message, function_specs, tools_message

ROLE_ALIASES = {"developer": "system", "tool": "observation"}


def chat_messages(items: list[Mapping[str, Any]], system: str | None = None,
                  tools: list[Mapping[str, Any]] | None = None) -> list[Message]:
    """OpenAI-style messages to ours (ValueError for an unknown role or a malformed tool call).

    An assistant message's ``tool_calls`` become ChatGLM3 tool-call turns (metadata = the
    tool's name, content = ``tool_call(...)``), each placed just before the ``tool`` message
    that answers it, as ChatGLM3 alternates a call and its observation."""
    out: list[Message] = []
    if tools:
        out.append(tools_message(tools))
    if system:
        out.append(Message("system", system))
    waiting: list[tuple[Any, Message]] = []  # calls not answered yet: (tool_call_id, message)
    for d in items:
        d = dict(d)
        role = ROLE_ALIASES.get(d.get("role", "user"), d.get("role", "user"))
        d["role"] = role
        if role == "observation" and waiting:
            i = next((k for k, (cid, _) in enumerate(waiting) if cid == d.get("tool_call_id")), 0)
            out.append(waiting.pop(i)[1])
        elif waiting:
            out += [m for _, m in waiting]
            waiting = []
        calls = d.get("tool_calls") if role == "assistant" else None
        if calls:
            if d.get("content"):
                out.append(Message.from_dict(d))
            waiting = [(c.get("id") if isinstance(c, Mapping) else None, _call_message(c)) for c in calls]
            continue
        if d.get("content") is None:
            d["content"] = ""
        out.append(Message.from_dict(d))
    out += [m for _, m in waiting]
    return out


def _call_message(call: Any) -> Message:
    fn = call.get("function") if isinstance(call, Mapping) else None
    if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise ValueError('a tool call needs "function": {"name", "arguments"}')
    args = fn.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            raise ValueError(f'the arguments of tool call {fn["name"]!r} are not JSON') from None
    if not isinstance(args, Mapping):
        raise ValueError(f'the arguments of tool call {fn["name"]!r} must be a JSON object')
    return call_message(fn["name"], args)



def check_tools(tools: Any) -> str | None:
    """Why a "tools" value cannot be used, or None."""
    if not isinstance(tools, list) or not all(isinstance(t, Mapping) for t in tools):
        return "must be an array of tool definitions"
    try:
        function_specs(tools)
    except ValueError as e:
        return str(e)
    return None


