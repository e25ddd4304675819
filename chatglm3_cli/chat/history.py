"""Saved conversations (one JSON file each) and transcripts in the OpenAI messages shape."""
from __future__ import annotations

import json
import os
import secrets
import time
import unicodedata
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


_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
MAX_CONVERSATION_BYTES = 64 << 20  # a saved conversation bigger than this is not ours


def parse_conversation(text: str, where: str) -> Conversation:
    """A saved conversation from its JSON text; InputError (naming ``where``) for anything
    that is not one: bad JSON, nesting too deep, fields of the wrong type."""
    try:
        d = json.loads(text)
    except RecursionError:
        raise InputError(f"{where} is not a valid saved conversation (nested too deeply)") from None
    except ValueError as e:
        raise InputError(f"{where} is not a valid saved conversation ({e})") from None
    if not isinstance(d, dict):
        raise InputError(f"{where} is not a valid saved conversation (not a JSON object)")
    why = None
    msgs = d.get("messages")
    if not isinstance(d.get("id"), str):
        why = '"id" is not a string'
    elif not all(isinstance(d.get(k), (int, float)) and not isinstance(d.get(k), bool)
                 for k in ("created", "updated")):
        why = '"created" and "updated" must be numbers'
    elif not isinstance(msgs, list):
        why = '"messages" is not a list'
    elif not isinstance(d.get("model", ""), str):
        why = '"model" is not a string'
    else:
        for i, m in enumerate(msgs):
            role = m.get("role") if isinstance(m, dict) else None
            if not isinstance(m, dict) or (role if role != "tool" else "observation") not in ROLES \
                    or not isinstance(m.get("content", ""), str):
                why = f"message {i + 1} is not a {{role, content}} object"
                break
    if why:
        raise InputError(f"{where} is not a valid saved conversation ({why})")
    return Conversation(id=d["id"], created=float(d["created"]), updated=float(d["updated"]),
                        model=d.get("model", ""), messages=list(msgs or []))


class ConversationStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = (root or data_dir()) / "conversations"
        # Files list() and latest() passed over, with why: reported, never fatal.
        self.skipped: list[tuple[Path, str]] = []

    @staticmethod
    def new_id() -> str:
        return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)

    def path(self, conv_id: str) -> Path:
        # Ids are ours (see new_id): anything else, glob characters and paths included, is refused.
        if not conv_id or conv_id.startswith(".") or not set(conv_id) <= _ID_CHARS:
            raise InputError(f"not a conversation id: {conv_id!r}",
                             hint="see `chatglm3 history` for the ids")
        return self.root / f"{conv_id}.json"

    def save(self, conv: Conversation) -> Path:
        conv.updated = time.time()
        p = self.path(conv.id)
        atomic_write_text(p, conv.to_json())
        return p

    def delete(self, conv_id: str) -> Conversation:
        """Remove a saved conversation, and the evaluated prompts the prompt cache keeps of it."""
        from ..engine.promptcache import forget_conversation

        conv = self.load(conv_id)
        try:
            self.path(conv.id).unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise InputError(f"cannot delete {self.path(conv.id)}: {e.strerror or e}") from None
        forget_conversation(conv.id)
        return conv

    def load(self, conv_id: str) -> Conversation:
        p = self.path(conv_id)
        if not p.exists():
            matches = sorted(q for q in self.root.glob(f"{conv_id}*.json")) if self.root.is_dir() else []
            if len(matches) == 1:  # a unique prefix is enough, as with git
                p = matches[0]
            elif len(matches) > 1:
                shown = ", ".join(q.stem for q in matches[:5]) + (", …" if len(matches) > 5 else "")
                raise InputError(f"ambiguous id {conv_id!r}: {shown}",
                                 hint="give more of the id")
            else:
                raise InputError(f"no saved conversation {conv_id!r}",
                                 hint="see `chatglm3 history` for the ids")
        return self._read(p)

    def _read(self, p: Path) -> Conversation:
        try:
            if not p.is_file():
                raise InputError(f"{p} is not a valid saved conversation (not a regular file)")
            if p.stat().st_size > MAX_CONVERSATION_BYTES:
                raise InputError(f"{p} is not a valid saved conversation (over "
                                 f"{MAX_CONVERSATION_BYTES >> 20} MiB)")
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{p} is not a valid saved conversation (not UTF-8)") from None
        except OSError as e:
            raise InputError(f"cannot read {p}: {e.strerror or e}") from None
        return parse_conversation(text, str(p))

    def list(self) -> list[Conversation]:
        """Every readable conversation, newest first; unreadable files go to ``skipped``."""
        self.skipped = []
        try:
            paths = sorted(self.root.glob("*.json")) if self.root.is_dir() else []
        except OSError:
            return []
        out = []
        for p in paths:
            try:
                out.append(self._read(p))
            except InputError as e:
                self.skipped.append((p, e.message))  # a damaged file must not hide the others
        return sorted(out, key=lambda c: c.updated, reverse=True)

    def latest(self) -> Conversation | None:
        convs = self.list()
        return convs[0] if convs else None


# An answer longer than this many tokens was not generated in any context we make.
MAX_SAVED_IDS = 1 << 20


def message_record(m: Message) -> dict[str, Any]:
    """A message as saved (conversations, /save): its dict and, for an answer the model
    generated, the token ids it generated. A resumed conversation's prompt then holds the same
    tokens as the KV cells the prompt cache saved after that answer (encoding the answer's text
    again can give other tokens, and the cached prefix would end there)."""
    d = m.to_dict()
    if m.role == "assistant" and m.token_ids:
        d["token_ids"] = list(m.token_ids)
    return d


def message_from_record(d: dict[str, Any]) -> Message:
    """The inverse of message_record. Token ids are taken only as a list of small non-negative
    ints; whether they spell this message in the model at hand is checked when a session loads
    it (ChatSession.load), since a file can come from another model or be edited."""
    m = Message.from_dict(d)
    ids = d.get("token_ids")
    if (m.role == "assistant" and isinstance(ids, list) and 0 < len(ids) <= MAX_SAVED_IDS
            and all(type(i) is int and 0 <= i < 1 << 24 for i in ids)):
        m.token_ids = ids
    return m


def messages_to_json(messages: list[Message], model: str = "") -> str:
    """A transcript as /save writes it: {"model": REF, "messages": [...]} (OpenAI's messages
    shape; the model as `chat -m` takes it, so that /load can switch back to it), or a bare
    messages array when no model is known."""
    records = [message_record(m) for m in messages]
    data: Any = {"model": model, "messages": records} if model else records
    return json.dumps(data, ensure_ascii=False, indent=2)


@dataclass
class Transcript:
    """A transcript file's messages, and the model it names ("" when it names none)."""

    messages: list[Message]
    model: str = ""


MAX_MODEL_REF = 1024  # a model reference (alias, hub ref, path) longer than this is not one


def check_model_ref(value: Any, where: str) -> str:
    """A model reference read from a file (untrusted): a short string without control
    characters. It is only ever resolved as -m would resolve it, never written to."""
    if not isinstance(value, str):
        raise InputError(f'{where}: "model" is not a string')
    if len(value) > MAX_MODEL_REF:
        raise InputError(f'{where}: "model" is longer than {MAX_MODEL_REF} characters')
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in value):  # Cs: no path takes it
        raise InputError(f'{where}: "model" holds control characters')
    return value.strip()


def read_transcript(path: str | os.PathLike[str]) -> Transcript:
    """A transcript in the OpenAI messages shape: a list, or {"messages": [...]} with an
    optional "model" (what /save writes), of {"role", "content"} objects."""
    text = read_text_file(path)
    try:
        data = json.loads(text)
    except RecursionError:
        raise InputError(f"{path} is not a usable transcript (JSON nested too deeply)") from None
    except ValueError as e:
        raise InputError(f"{path} is not valid JSON (line {getattr(e, 'lineno', '?')})") from e
    model = ""
    if isinstance(data, dict) and isinstance(data.get("messages"), list):
        if data.get("model") is not None:
            model = check_model_ref(data["model"], str(path))
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
        out.append(message_from_record({**d, "role": role}))
    return Transcript(out, model)


def load_transcript(path: str | os.PathLike[str]) -> list[Message]:
    """A transcript's messages (see read_transcript)."""
    return read_transcript(path).messages


def to_markdown(conv: Conversation) -> str:
    lines = [f"# Conversation {conv.id}", ""]
    if conv.model:
        lines += [f"Model: `{conv.model}`", ""]
    for m in conv.messages:
        role = str(m.get("role", "")).capitalize()
        suffix = " (interrupted)" if m.get("interrupted") else ""
        lines += [f"## {role}{suffix}", "", str(m.get("content", "")), ""]
    return "\n".join(lines)
