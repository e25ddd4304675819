"""Saved conversations (one JSON file each) and transcripts in the OpenAI messages shape."""
from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine.prompt import ROLES, Message
from ..errors import InputError
from ..files import atomic_write_text
from ..paths import data_dir
from ..textio import read_text_file


@dataclass
class Conversation:
    id: str
    created: float
    updated: float
    model: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def title(self) -> str:
        for m in self.messages:
            if m.get("role") == "user":
                line = " ".join(str(m.get("content", "")).split())
                return line[:60] + ("…" if len(line) > 60 else "")
        return "(empty)"

    @property
    def turns(self) -> int:
        return sum(1 for m in self.messages if m.get("role") == "user")

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "created": self.created, "updated": self.updated,
                           "model": self.model, "messages": self.messages},
                          ensure_ascii=False, indent=1)


class ConversationStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or data_dir()) / "conversations"

    @staticmethod
    def new_id() -> str:
        return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)

    def path(self, conv_id: str) -> Path:
        if not conv_id or "/" in conv_id or "\\" in conv_id or conv_id.startswith("."):
            raise InputError(f"not a conversation id: {conv_id!r}")
        return self.root / f"{conv_id}.json"

    def save(self, conv: Conversation) -> Path:
        conv.updated = time.time()
        p = self.path(conv.id)
        atomic_write_text(p, conv.to_json())
        return p

    def load(self, conv_id: str) -> Conversation:
        p = self.path(conv_id)
        if not p.exists():
            matches = sorted(self.root.glob(f"{conv_id}*.json")) if self.root.exists() else []
            if len(matches) == 1:  # a unique prefix is enough, as with git
                p = matches[0]
            else:
                raise InputError(f"no saved conversation {conv_id!r}",
                                 hint="see `chatglm3 history` for the ids")
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
            return Conversation(id=d["id"], created=d["created"], updated=d["updated"],
                                model=d.get("model", ""), messages=list(d["messages"]))
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"{p} is not a valid saved conversation ({e})") from e

    def list(self) -> list[Conversation]:
        if not self.root.exists():
            return []
        out = []
        for p in self.root.glob("*.json"):
            try:
                out.append(self.load(p.stem))
            except InputError:
                continue  # a damaged file must not hide the others
        return sorted(out, key=lambda c: c.updated, reverse=True)

    def latest(self) -> Conversation | None:
        convs = self.list()
        return convs[0] if convs else None


def messages_to_json(messages: list[Message]) -> str:
    return json.dumps([m.to_dict() for m in messages], ensure_ascii=False, indent=2)


def load_transcript(path: str | os.PathLike[str]) -> list[Message]:
    """A transcript in the OpenAI messages shape: a list (or {"messages": [...]}) of
    {"role", "content"} objects."""
    text = read_text_file(path)
    try:
        data = json.loads(text)
    except ValueError as e:
        raise InputError(f"{path} is not valid JSON (line {getattr(e, 'lineno', '?')})") from e
    if isinstance(data, dict) and isinstance(data.get("messages"), list):
        data = data["messages"]
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a list of messages")
    out = []
    for i, d in enumerate(data):
        if not isinstance(d, dict) or not isinstance(d.get("content", ""), (str, list)):
            raise InputError(f"{path}: message {i + 1} is not a {{role, content}} object")
        role = d.get("role")
        if role == "tool":
            role = "observation"
        if role not in ROLES:
            raise InputError(f"{path}: message {i + 1} has an unknown role {d.get('role')!r}")
        out.append(Message.from_dict({**d, "role": role}))
    return out


def to_markdown(conv: Conversation) -> str:
    lines = [f"# Conversation {conv.id}", ""]
    if conv.model:
        lines += [f"Model: `{conv.model}`", ""]
    for m in conv.messages:
        role = str(m.get("role", "")).capitalize()
        suffix = " (interrupted)" if m.get("interrupted") else ""
        lines += [f"## {role}{suffix}", "", str(m.get("content", "")), ""]
    return "\n".join(lines)
