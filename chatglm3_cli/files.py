"""Files done safely: reading with one-line errors, writing through a temp file and a rename
(a crash never leaves half a file where a good one belongs), and a cached sha256 of big files."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable

from .errors import InputError


def read_bytes(path: str | os.PathLike[str], label: str | None = None) -> bytes:
    p = Path(path)
    name = label or str(p)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"file not found: {name}") from None
    except IsADirectoryError:
        raise InputError(f"{name} is a directory, not a file") from None
    except PermissionError:
        raise InputError(f"permission denied: {name}") from None
    except OSError as e:
        raise InputError(f"cannot read {name}: {e.strerror}") from None


def atomic_write_bytes(path: Path, chunks: Iterable[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, [text.encode("utf-8")])


def _sha_cache_file() -> Path:
    from .paths import state_dir

    return state_dir() / "sha256-cache.json"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a (multi-GB) model file, computed once and cached by path, size and mtime."""
    p = Path(path).resolve()
    st = p.stat()
    key = str(p)
    cache_file = _sha_cache_file()
    try:
        cache = json.loads(cache_file.read_text(encoding="utf-8"))
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    hit = cache.get(key)
    if isinstance(hit, dict) and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns \
            and isinstance(hit.get("sha256"), str):
        return hit["sha256"]
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    digest = h.hexdigest()
    cache[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    try:
        atomic_write_bytes(cache_file, [json.dumps(cache, indent=1).encode("utf-8")])
    except OSError:
        pass  # a cache that cannot be written only costs time
    return digest
