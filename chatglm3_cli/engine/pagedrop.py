"""Give back the pages of a mapped model file that repacking left dead.

On a CPU, llama.cpp copies most weights of a Q4_0/Q4_K file into its CPU_REPACK buffer (an
anonymous allocation in another layout) and never reads their mapped pages again, but they
stay resident: a 3.5 GB file took 6.4 GB. Reading the file instead of mapping it avoids that
but loaded 2.2x slower here. So the file stays mapped, and while llama.cpp loads (at each of
its progress callbacks) and once after, the mapping's pages are dropped with
``madvise(MADV_DONTNEED)``. That is safe for a read-only file mapping: a page still needed (a
weight used in place: the embeddings, the norms, the output matrix) is faulted back in from
the page cache on its next read. Linux only; elsewhere nothing is dropped.
"""
from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

MADV_DONTNEED = 4
# Drop after each 5% of the file: the peak stays near the file's size (repacked weights plus the
# last 5% mapped) at a load-time cost of a few percent (6B Q4_0 here, every callback: +10%).
STEP = 0.05


def file_mappings(path: str | os.PathLike[str], maps: str = "/proc/self/maps") -> list[tuple[int, int]]:
    """The address ranges of this process that map ``path``."""
    try:
        st = os.stat(path)
        want = os.path.realpath(path)
        with open(maps, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) < 6 or parts[4] != str(st.st_ino) or parts[5].strip() != want:
            continue
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        out.append((lo, hi))
    return out


class PageDropper:
    """A llama.cpp load progress callback that drops the file's resident pages as it goes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path
        self.enabled = sys.platform.startswith("linux")
        self._madvise: Any = None
        if self.enabled:
            libc = ctypes.CDLL(None, use_errno=True)
            self._madvise = libc.madvise
            self._madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            self._madvise.restype = ctypes.c_int
        self.drops = 0
        self._last = 0.0

    def drop(self) -> None:
        if not self.enabled:
            return
        # Looked up each time: llama.cpp unmaps unused fragments at the end of a load, and an
        # address range we remembered could by then belong to something else.
        for lo, hi in file_mappings(self.path):
            if self._madvise(lo, hi - lo, MADV_DONTNEED) == 0:
                self.drops += 1

    def progress(self, progress: float, _user_data: Any) -> bool:
        """llama_progress_callback: drop every STEP of the load, and go on loading."""
        if progress - self._last < STEP:
            return True
        self._last = progress
        try:
            self.drop()
        except Exception:  # never stop a load over memory bookkeeping
            self.enabled = False
        return True
