"""Resume: what finished chunks answered, kept as JSON lines until the output is complete.

Each line is one chunk, keyed by a hash of what decides its answer: the model (sha256 of the
file), the instructions without the glossary, the glossary terms that occur in the chunk, the
sampling parameters and the chunk's own text. A changed glossary or model therefore
invalidates only the chunks it affects. Lines are appended with one write() each, so a kill -9
leaves at most a half line, which is ignored when read back.

Checkpoints live in the user state dir (``CHATGLM3_STATE_DIR``), one per output, and are
removed once their output is written with nothing failed.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

VERSION = 1


def checkpoint_dir() -> Path:
    from ..paths import state_dir

    return state_dir() / "translate"


def checkpoint_path(name: str) -> Path:
    """The checkpoint of an output (a path, or a name for stdin runs)."""
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:24]
    return checkpoint_dir() / f"{digest}.jsonl"


def chunk_key(*, model: str, instructions: str, glossary: Sequence[tuple[str, str]],
              params: dict[str, Any], texts: Sequence[str]) -> str:
    blob = json.dumps([VERSION, model, instructions, list(map(list, glossary)), params, list(texts)],
                      ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class Checkpoint:
    """Answers of finished chunks (``ok``: the translations) and chunks known to fail as a whole
    (``split``: go straight to the smaller retries)."""

    def __init__(self, path: Path | None, *, label: str = "", warn: Optional[Callable[[str], None]] = None) -> None:
        self.path = path
        self.label = label  # the file whose answers these are, for the warning
        self.warn = warn
        self.failed = False  # a write failed: resume is off for this file
        self.entries: dict[str, dict[str, Any]] = {}
        self._fd: int | None = None
        if path is not None:
            self._read(path)

    def _read(self, path: Path) -> None:
        try:
            data = path.read_bytes()
        except OSError:
            return
        for raw in data.split(b"\n"):
            try:
                obj = json.loads(raw)
            except ValueError:
                continue  # a half-written last line after a kill
            if isinstance(obj, dict) and isinstance(obj.get("key"), str) and obj.get("status") in ("ok", "split"):
                if obj["status"] == "ok" and not (isinstance(obj.get("translations"), list)
                                                  and all(isinstance(t, str) for t in obj["translations"])):
                    continue
                self.entries[obj["key"]] = obj

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def add(self, key: str, status: str, translations: Sequence[str] | None = None) -> None:
        obj: dict[str, Any] = {"key": key, "status": status}
        if translations is not None:
            obj["translations"] = list(translations)
        self.entries[key] = obj
        if self.path is None:
            return
        line = (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                # a half line left by a kill must not swallow this one
                if self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n"):
                    os.write(self._fd, b"\n")
            os.write(self._fd, line)
        except OSError as e:
            # The run goes on (the translation itself is not at risk), but without resume: say so
            # once, so that no later hint promises to "retry only what failed".
            if self.warn is not None:
                self.warn(f"warning: cannot write the checkpoint {self.path} ({e.strerror or e}): resume is off "
                          f"for {self.label or 'this file'}; a rerun translates it from the start")
            self.path = None
            self.failed = True

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        self.close()
        if self.path is not None:
            try:
                self.path.unlink()
            except OSError:
                pass
