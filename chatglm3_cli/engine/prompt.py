"""Messages to prompt token ids.

ChatGLM3 files take the official ``build_chat_input`` path, as token ids:
``[gMASK] sop`` + per message ``<|role|>`` + encode(metadata + "\\n") + encode(content), then
``<|assistant|>``. GLM-4-9B-chat files take GLM-4's official template the same way
(``[gMASK]<sop>``, its ``# 可用工具`` system block for tools). Content is encoded on its own, so
user text can never smuggle in a control token. Other models render the file's chat template.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .jinja_render import render_template

ROLES = ("system", "user", "assistant", "observation")


@dataclass
class Message:
    role: str
    content: str
    metadata: str = ""
    # For a system message: the tool definitions, appended as ChatGLM3's demo does.
    tools: list[dict[str, Any]] | None = field(default=None)
    # For an assistant message this model generated: the ids it generated (metadata line and
    # content, without the stop token). Reusing them keeps the KV cache valid across turns,
    # as the official stream_chat does with its past_key_values. Not saved with the message.
    token_ids: list[int] | None = field(default=None, repr=False, compare=False)
    interrupted: bool = False
    # For an assistant tool call built from structured data (OpenAI tool_calls): its arguments,
    # so that each model family can write the call in its own format (ChatGLM3: tool_call(...),
    # GLM-4: JSON). ``content`` holds ChatGLM3's spelling.
    arguments: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r} (expected one of {', '.join(ROLES)})")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Message":
        content = d.get("content", "")
        if isinstance(content, list):  # OpenAI content parts: keep the text parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
        role = d.get("role", "user")
        if role == "tool":  # OpenAI's name for an observation
            role = "observation"
        return cls(role=role, content=str(content), metadata=str(d.get("metadata") or ""),
                   tools=d.get("tools"), interrupted=bool(d.get("interrupted", False)))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.metadata:
            out["metadata"] = self.metadata
        if self.tools is not None:
            out["tools"] = self.tools
        if self.interrupted:
            out["interrupted"] = True
        return out


def _last_ids(tokens: Sequence[str], wanted: set[str]) -> dict[str, int] | None:
    """The id of each wanted text, or None if one is missing. Special tokens sit after the
    ordinary pieces (SentencePiece or BPE): searching from the end means a normal piece spelled
    the same way can never be picked up."""
    index: dict[str, int] = {}
    for i in range(len(tokens) - 1, -1, -1):
        t = tokens[i]
        if t in wanted and t not in index:
            index[t] = i
            if len(index) == len(wanted):
                return index
    return None


@dataclass(frozen=True)
class ChatGLM3Specials:
    gmask: int
    sop: int
    roles: dict[str, int]

    @classmethod
    def from_tokens(cls, tokens: Sequence[str]) -> "ChatGLM3Specials | None":
        index = _last_ids(tokens, {"[gMASK]", "sop", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"})
        if index is None:
            return None
        return cls(gmask=index["[gMASK]"], sop=index["sop"],
                   roles={r: index[f"<|{r}|>"] for r in ROLES})


@dataclass(frozen=True)
class GLM4Specials:
    gmask: int
    sop: int
    endoftext: int
    roles: dict[str, int]

    @classmethod
    def from_tokens(cls, tokens: Sequence[str]) -> "GLM4Specials | None":
        index = _last_ids(tokens, {"[gMASK]", "<sop>", "<|endoftext|>", "<|system|>", "<|user|>",
                                   "<|assistant|>", "<|observation|>"})
        if index is None:
            return None
        return cls(gmask=index["[gMASK]"], sop=index["<sop>"], endoftext=index["<|endoftext|>"],
                   roles={r: index[f"<|{r}|>"] for r in ROLES})


# GLM-4-9B-chat's official chat template writes this block for a message that carries tools
# (tokenizer_config.json of THUDM/glm-4-9b-chat; functions only: the built-in python /
# simple_browser / cogview tools belong to Zhipu's own demo).
GLM4_TOOLS_SYSTEM = ("你是一个名为 GLM-4 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，"
                     "你的任务是针对用户的问题和要求提供适当的答复和支持。\n\n# 可用工具")
GLM4_TOOL_SUFFIX = "\n在调用上述函数时，请使用 Json 格式表示调用的参数。"


def glm4_tools_text(tools: Sequence[Mapping[str, Any]]) -> str:
    """The text after ``<|system|>`` of GLM-4's tools block, as transformers renders the
    template: ``trim_blocks`` eats the first of the two newlines after ``{% if ... %}`` (so one
    newline before ``## name``), and ``tojson(indent=4)`` keeps non-ASCII text and key order."""
    text = "\n" + GLM4_TOOLS_SYSTEM
    for fn in tools:
        text += f"\n## {fn['name']}\n\n" + json.dumps(dict(fn), indent=4, ensure_ascii=False) + GLM4_TOOL_SUFFIX
    return text


def glm4_prompt_ids(messages: Sequence[Message], encode: Callable[[str], list[int]],
                    specials: GLM4Specials, *, skip_content: Callable[[Message], bool] = lambda m: False) -> list[int]:
    """Token ids of GLM-4-9B-chat's official template:
    ``[gMASK]<sop>`` + (for a message with tools: ``<|system|>`` + the tools block) + for every
    message with content ``<|role|>`` + encode(metadata + "\\n") + encode(content), then
    ``<|assistant|>``; the answer begins with its metadata line, as ChatGLM3's does.
    The template skips messages whose content is empty; ``skip_content`` names others whose
    content belongs to another family's format (ChatGLM3's tool preamble)."""
    ids = [specials.gmask, specials.sop]
    for m in messages:
        if m.role == "system" and m.tools is not None:
            ids.append(specials.roles["system"])
            ids += encode(glm4_tools_text(m.tools))
        if m.role == "assistant" and m.token_ids is not None:
            ids.append(specials.roles["assistant"])
            ids += m.token_ids
            continue
        content = m.content
        if m.role == "assistant" and m.arguments is not None and m.metadata:
            content = json.dumps(m.arguments, ensure_ascii=False)  # GLM-4 writes a call as JSON
        if not content or skip_content(m):
            continue
        ids.append(specials.roles[m.role])
        ids += encode(f"{m.metadata}\n")
        ids += encode(content)
    ids.append(specials.roles["assistant"])
    return ids


def chatglm3_prompt_ids(messages: Sequence[Message], encode: Callable[[str], list[int]],
                        specials: ChatGLM3Specials) -> list[int]:
    """Token ids identical to the official ``tokenizer.build_chat_input``."""
    ids = [specials.gmask, specials.sop]
    for m in messages:
        content = m.content
        if m.role == "system" and m.tools is not None:
            content = content + "\n" + json.dumps(m.tools, indent=4, ensure_ascii=False)
        ids.append(specials.roles[m.role])
        if m.role == "assistant" and m.token_ids is not None:
            ids += m.token_ids
            continue
        ids += encode(f"{m.metadata}\n")
        ids += encode(content)
    ids.append(specials.roles["assistant"])
    return ids


def template_prompt_ids(messages: Sequence[Message], template: str, *, bos_token: str, eos_token: str,
                        tokenize: Callable[[str, bool], list[int]],
                        tools: Sequence[Mapping[str, Any]] | None = None) -> list[int]:
    """Render the template with a sentinel in place of each content, so that the template's
    own text is parsed for special tokens and the users' text is not. An empty content keeps
    no sentinel: templates test it (``{% if message.content %}``); nor does a tool call made
    from structured data (the template writes it from its arguments)."""
    marks = [f"\x00\x01{i}\x01\x00" if m.content and m.arguments is None else ""
             for i, m in enumerate(messages)]
    text = render_template(template, messages, bos_token=bos_token, eos_token=eos_token,
                           sentinel=lambda i: marks[i], tools=tools)
    if not all(text.count(m) == 1 for m in marks if m):
        # The template transformed the content (trim, split...): fall back to the plain render.
        return tokenize(render_template(template, messages, bos_token=bos_token,
                                        eos_token=eos_token, tools=tools), True)
    ids: list[int] = []
    rest = text
    for i, m in enumerate(marks):
        if not m:
            continue
        before, rest = rest.split(m, 1)
        if before:
            ids += tokenize(before, True)
        ids += tokenize(messages[i].content, False)
    if rest:
        ids += tokenize(rest, True)
    return ids
