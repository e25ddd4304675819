"""Which output files translate wrote, so that it overwrites only those: an existing
NAME.LANG.EXT written by hand, or edited by hand since, is never replaced without --overwrite.

A small JSON file in the state dir maps each output's real path to the sha256 of what was
written there. A lost update (two runs at once) only makes a later run ask for --overwrite.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

MAX_ENTRIES = 10_000


def _registry() -> Path:
    from ..paths import state_dir

    return state_dir() / "translate" / "written.json"


def _load() -> dict[str, str]:
    try:
        data = json.loads(_registry().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def _key(path: Path) -> str:
    return os.path.realpath(path)


def wrote(path: Path) -> bool:
    """True when `path` holds exactly what translate last wrote there."""
    want = _load().get(_key(path))
    if want is None:
        return False
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError:
        return False
    return h.hexdigest() == want


def may_write(path: Path) -> bool:
    """Nothing there yet, or what is there is ours."""
    return not os.path.lexists(path) or wrote(path)


def record(path: Path, data: bytes) -> None:
    from ..errors import OutputWriteError
    from ..files import atomic_write_bytes

    entries = _load()
    entries[_key(path)] = hashlib.sha256(data).hexdigest()
    if len(entries) > MAX_ENTRIES:
        entries = {k: v for k, v in entries.items() if os.path.exists(k)}
        entries = dict(list(entries.items())[-MAX_ENTRIES:])
    try:
        atomic_write_bytes(_registry(), [json.dumps(entries, indent=0).encode("utf-8")])
    except (OSError, OutputWriteError):  # (files.atomic_write_bytes raises the latter)
        pass  # bookkeeping only: the next run asks for --overwrite at worst
