"""Loading llama.cpp (through llama-cpp-python's low-level ctypes API), its log, and Ctrl-C.

We use the low-level API rather than the ``Llama`` class because we need control that class
does not give: our own token ids in, our own stop tokens, several sequences in one context,
llama.cpp's log fully silenced, and a load failure turned into a typed error instead of a
vague ValueError. ``llama_cpp`` is imported lazily so that ``chatglm3 --help`` stays fast.
"""
from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections import deque
from typing import Any, Iterable

_lock = threading.Lock()
_L: Any = None
_log_lines: deque[tuple[int, str]] = deque(maxlen=50)
_GGML_WARN, _GGML_ERROR = 3, 4  # enum ggml_log_level: NONE, DEBUG, INFO, WARN, ERROR, CONT
_verbose = False
_buffer_lines: deque[str] = deque(maxlen=50)
_log_cb: Any = None  # keep the ctypes callback alive for the life of the process

def llama() -> Any:
    """The ``llama_cpp.llama_cpp`` module, with the backend initialised and logging captured."""
    global _L, _log_cb
    if _L is not None:
        return _L
    with _lock:
        if _L is None:
            from ..cpu import prepare_openmp

            prepare_openmp()  # before the OpenMP runtime loads with llama.cpp
            import llama_cpp.llama_cpp as L

            @L.llama_log_callback
            def _on_log(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
                line = text.decode("utf-8", errors="replace")
                if level in (_GGML_WARN, _GGML_ERROR):  # kept to explain failures
                    _log_lines.append((level, line.strip()))
                elif "buffer size" in line:  # the sizes of a new context's buffers
                    _buffer_lines.append(line.strip())
                if _verbose:
                    sys.stderr.write(line)

            _log_cb = _on_log
            L.llama_log_set(_log_cb, ctypes.c_void_p(0))
            L.llama_backend_init()
            _L = L
    return _L


def _buffer_bytes(lines: Iterable[str]) -> dict[str, int]:
    """{"kv": bytes, "compute": bytes} summed from llama.cpp's "... buffer size = X MiB" lines."""
    import re

    out = {"kv": 0, "compute": 0}
    for line in lines:
        m = re.search(r"(KV|compute) buffer size\s*=\s*([0-9.]+)\s*MiB", line)
        if m:
            out["kv" if m.group(1) == "KV" else "compute"] += int(float(m.group(2)) * 2**20)
    return out


def set_verbose(verbose: bool) -> None:
    """Forward llama.cpp's own log to stderr (off by default)."""
    global _verbose
    _verbose = verbose


def last_log_error() -> str | None:
    """The root cause among llama.cpp's error lines since the last clear, without prefixes."""
    errors = [line for level, line in _log_lines if level == _GGML_ERROR and line]
    lines = errors or [line for _, line in _log_lines if line]
    if not lines:
        return None
    first = lines[0]
    for marker in ("error loading model: ", "error: "):
        if marker in first:
            return first.split(marker, 1)[1]
    return first


def supports_gpu_offload() -> bool:
    return bool(llama().llama_supports_gpu_offload())


def default_threads() -> int:
    from ..cpu import default_threads as physical

    return physical()


def llama_version() -> str:
    """llama-cpp-python's version (what a saved KV state is only valid for)."""
    try:
        import llama_cpp

        return str(getattr(llama_cpp, "__version__", "?"))
    except Exception:  # pragma: no cover - only reached with llama.cpp loaded
        return "?"


class Freed:
    """Frees its llama.cpp object when collected, if nobody called close() (best effort: at
    interpreter exit the library may already be gone)."""

    def close(self) -> None:  # pragma: no cover - each subclass frees its own object
        pass

    def __del__(self) -> None:  # pragma: no cover
        try:
            self.close()
        except Exception:
            pass


class _AbortFlag:
    """Lets Ctrl-C stop a long prompt evaluation inside llama_decode.

    While llama_decode runs, Python's own SIGINT handling is blocked in C. llama.cpp calls an
    abort callback between graph nodes; our SIGINT handler sets a flag that the callback reads.
    It is installed only around prompt batches: a Python call per graph node would cost
    single-token decoding a few percent.
    """

    def __init__(self) -> None:
        self.requested = False
        self.cb = llama().ggml_abort_callback(lambda _data: self.requested)


class _Captured:
    def __init__(self) -> None:
        self.data = b""

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


class _capture_stderr:
    """Collect what C code writes to file descriptor 2 (it bypasses llama_log_set)."""

    def __enter__(self) -> _Captured:
        import tempfile

        self.captured = _Captured()
        sys.stderr.flush()
        self.tmp = tempfile.TemporaryFile()
        self.saved = os.dup(2)
        os.dup2(self.tmp.fileno(), 2)
        return self.captured

    def __exit__(self, *exc: object) -> None:
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.tmp.seek(0)
        self.captured.data = self.tmp.read()
        self.tmp.close()
        if _verbose and self.captured.data:
            sys.stderr.write(self.captured.text())
