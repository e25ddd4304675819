"""Messages to prompt token ids.

ChatGLM3 files take the official ``build_chat_input`` path, as token ids:
``[gMASK] sop`` + per message ``<|role|>`` + encode(metadata + "\\n") + encode(content), then
``<|assistant|>``. Content is encoded on its own with the exact tokenizer, so user text can
never smuggle in a control token. Other models render the chat template stored in the file.
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


@dataclass(frozen=True)
class ChatGLM3Specials:
    gmask: int
    sop: int
    roles: dict[str, int]

    @classmethod
    def from_tokens(cls, tokens: Sequence[str]) -> "ChatGLM3Specials | None":
        index: dict[str, int] = {}
        wanted = {"[gMASK]", "sop", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"}
        # The control tokens sit after the SentencePiece pieces: search from the end so that a
        # normal piece spelled the same way can never be picked up.
        for i in range(len(tokens) - 1, -1, -1):
            t = tokens[i]
            if t in wanted and t not in index:
                index[t] = i
                if len(index) == len(wanted):
                    break
        if len(index) != len(wanted):
            return None
        return cls(gmask=index["[gMASK]"], sop=index["sop"],
                   roles={r: index[f"<|{r}|>"] for r in ROLES})


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
                        tokenize: Callable[[str, bool], list[int]]) -> list[int]:
    """Render the template with a sentinel in place of each content, so that the template's
    own text is parsed for special tokens and the users' text is not."""
    marks = [f"\x00\x01{i}\x01\x00" for i in range(len(messages))]
    text = render_template(template, messages, bos_token=bos_token, eos_token=eos_token,
                           sentinel=lambda i: marks[i])
    if not all(text.count(m) == 1 for m in marks):
        # The template transformed the content (trim, split...): fall back to the plain render.
        return tokenize(render_template(template, messages, bos_token=bos_token,
                                        eos_token=eos_token), True)
    ids: list[int] = []
    rest = text
    for i, m in enumerate(marks):
        before, rest = rest.split(m, 1)
        if before:
            ids += tokenize(before, True)
        ids += tokenize(messages[i].content, False)
    if rest:
        ids += tokenize(rest, True)
    return ids
