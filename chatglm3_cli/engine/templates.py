"""Which chat format a model's prompts use when the file's own is missing or not wanted.

``--chat-template`` takes a Jinja file (rendered like a GGUF's own template, through the same
sandboxed render path in ``jinja_render.render_template``) or the name of one of llama.cpp's built-in
formats (``chatml``, ``llama3``, ``gemma``...), which llama.cpp renders in C++. Either way the
users' text is tokenized on its own, never parsed for control tokens.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..errors import InputError, UnsupportedModelError
from .prompt import Message

# A chat template is a few KB (the longest real ones, with tool handling, ~20 KB).
MAX_TEMPLATE_BYTES = 256 * 1024
# Built-in names are checked against llama.cpp's own list; these are the ones to suggest.
SUGGESTED = ("chatml", "llama3", "gemma", "mistral-v7", "phi3", "zephyr")


@dataclass(frozen=True)
class ChatTemplate:
    """A chat format: ``text`` (Jinja) for a file's template, ``builtin`` for llama.cpp's."""

    source: str  # how messages name it: "the file's template", "built-in chatml", "t.jinja"
    text: str | None = None
    builtin: str | None = None


def load_chat_template(value: str, builtin_names: Sequence[str]) -> ChatTemplate:
    """``--chat-template`` FILE or NAME. A value that names an existing file is read as Jinja;
    otherwise it must be a built-in name. InputError otherwise, listing the names."""
    v = value.strip()
    if not v:
        raise InputError("--chat-template is empty: give a Jinja file or a built-in name")
    looks_like_path = os.sep in v or "/" in v or v.endswith((".jinja", ".jinja2", ".j2", ".txt"))
    if not looks_like_path and v in builtin_names:
        return ChatTemplate(source=f"built-in {v}", builtin=v)
    p = Path(os.path.expanduser(v))
    if p.is_file():
        from ..textio import read_text_file

        if p.stat().st_size > MAX_TEMPLATE_BYTES:
            raise InputError(f"{v}: a chat template of {p.stat().st_size:,} bytes is too large "
                             f"(at most {MAX_TEMPLATE_BYTES // 1024} KiB)")
        text = read_text_file(str(p))
        if not text.strip():
            raise InputError(f"{v}: the chat template file is empty")
        return ChatTemplate(source=p.name, text=text)
    if looks_like_path:
        raise InputError(f"--chat-template {v}: no such file")
    first = [n for n in SUGGESTED if n in builtin_names]
    names = ", ".join(first + [n for n in builtin_names if n not in first])
    raise InputError(f"--chat-template {v!r} is neither a file nor a built-in template name",
                     hint=f"give a Jinja file, or one of llama.cpp's names: {names}")


def builtin_prompt_text(name: str, messages: Sequence[Message], contents: Sequence[str]) -> str:
    from .llama.model import apply_builtin_template

    pairs = [("tool" if m.role == "observation" else m.role, c)
             for m, c in zip(messages, contents, strict=True)]
    return apply_builtin_template(name, pairs, add_assistant=True)


def builtin_prompt_ids(messages: Sequence[Message], name: str, *,
                       tokenize: Callable[[str, bool], list[int]]) -> list[int]:
    """Render with a llama.cpp format, a marker in place of each content (as
    ``prompt.template_prompt_ids`` does for Jinja), so only the format's own text is parsed
    for special tokens. C strings end at NUL, so the markers avoid it and contents may not
    carry one."""
    for m in messages:
        if "\x00" in m.content:
            raise InputError("the text contains a NUL character, which a built-in chat template cannot carry")
    marks = [f"\x01\x02{i}\x02\x01" for i in range(len(messages))]
    text = builtin_prompt_text(name, messages, marks)
    if not all(text.count(m) == 1 for m in marks):
        # The format changed the content (trimmed it, say): tokenize the plain render.
        return tokenize(builtin_prompt_text(name, messages, [m.content for m in messages]), True)
    ids: list[int] = []
    rest = text
    for mark, message in zip(marks, messages, strict=True):
        before, rest = rest.split(mark, 1)
        if before:
            ids += tokenize(before, True)
        ids += tokenize(message.content, False)
    if rest:
        ids += tokenize(rest, True)
    return ids


def turn_end_token(render: Callable[[Sequence[Message]], str], tokenize: Callable[[str, bool], list[int]],
                   is_control: Callable[[int], bool]) -> int | None:
    """The control token a format writes right after an assistant's answer (``<|im_end|>``),
    found by rendering a short exchange. A format applied to a file it was not made for may
    end turns with a token the file does not list as end-of-generation; generation must stop
    there all the same."""
    mark = "\x01\x02answer\x02\x01"
    try:
        text = render([Message("user", "hi"), Message("assistant", mark), Message("user", "ok")])
    except (UnsupportedModelError, InputError, ValueError):
        return None
    if text.count(mark) != 1:
        return None
    after = text.split(mark, 1)[1]
    ids = tokenize(after, True)
    if ids and is_control(ids[0]):
        return ids[0]
    return None
