"""Files done safely: reading with one-line errors and a size cap, writing through a temp file
and a rename (a crash never leaves half a file where a good one belongs), and a cached sha256
of big files.

Reads take regular files and pipes only: a device (/dev/zero, a terminal) or a socket is
refused, and a read stops with a clear error past its cap, so no input can exhaust memory.

Writes never destroy what a user's path names: a symlink is written through (its target is
replaced, atomically, where it is), a directory, device, FIFO or socket is refused, an existing
file keeps its permissions and a new one gets the usual umask mode.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
from pathlib import Path
from typing import BinaryIO, Iterable

from .errors import InputError, OutputWriteError

MiB = 1 << 20
MAX_TEXT_INPUT = 64 * MiB  # run -f, /read, translate inputs, system and prompt files, stdin text
MAX_JOBS_INPUT = 256 * MiB  # a batch input (JSONL) file or stdin
STDOUT_NAMES = ("-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1")


def _size(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB else f"{n:,} bytes"


def read_capped(f: BinaryIO, limit: int, name: str) -> bytes:
    """Read `f` to its end, refusing more than `limit` bytes."""
    data = f.read(limit + 1)
    if len(data) > limit:
        raise InputError(f"{name} is larger than {_size(limit)}, the most this command reads",
                         hint="split it into smaller files")
    return data


def read_bytes(path: str | os.PathLike[str], label: str | None = None, *,
               limit: int = MAX_TEXT_INPUT) -> bytes:
    """The bytes of a regular file or a pipe (/dev/stdin, <(cmd)), at most `limit` of them."""
    p = Path(path)
    name = label or str(p)
    try:
        st = os.stat(p)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
            raise InputError(f"{name} is not a regular file or a pipe (a device or a socket?)",
                             hint="pass a file, or pipe the data in")
        with open(p, "rb") as f:
            return read_capped(f, limit, name)
    except FileNotFoundError:
        raise InputError(f"file not found: {name}") from None
    except IsADirectoryError:
        raise InputError(f"{name} is a directory, not a file") from None
    except PermissionError:
        raise InputError(f"permission denied: {name}") from None
    except OSError as e:
        raise InputError(f"cannot read {name}: {e.strerror}") from None


def is_stdout_name(name: str | os.PathLike[str] | None) -> bool:
    """`-o -`, and the names of stdout itself (/dev/stdout ...), mean stdout."""
    return name is not None and str(name) in STDOUT_NAMES


def write_target(path: str | os.PathLike[str]) -> Path:
    """The file a write to `path` replaces: `path`, or what its symlinks lead to. Raises
    OutputWriteError for a directory, a device, a FIFO or a socket (never replaced by a file)."""
    p = Path(path)
    real = Path(os.path.realpath(p))
    try:
        st = os.stat(real)
    except FileNotFoundError:
        return real  # a new file (for a dangling link: created where the link points)
    except OSError as e:
        raise OutputWriteError(f"cannot write {p}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise OutputWriteError(f"cannot write {p}: it is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise OutputWriteError(f"cannot write {p}: it is not a regular file (a device, FIFO or socket)",
                               hint="write to a regular file (`-o -` writes to stdout)")
    return real


def atomic_write_bytes(path: Path, chunks: Iterable[bytes | memoryview], *,
                       new_file_mode: int | None = None) -> Path:
    """Write `chunks` to `path` through a temp file beside its target and a rename; returns the
    file written. A file that exists keeps its mode; a new one gets `new_file_mode` (else 0666
    less the umask). OSError propagates; OutputWriteError refuses a non-regular file."""
    target = write_target(path)
    if not os.path.lexists(path):
        target.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode: int | None = stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        mode = new_file_mode  # None: 0666 less the umask, as the kernel applies it to O_CREAT
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            for c in chunks:
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return target


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, [text.encode("utf-8")])


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
    except (OSError, OutputWriteError):
        pass  # a cache that cannot be written only costs time
    return digest
