"""Measurements the bench report is made of that are not a generation: memory and bandwidth."""
from __future__ import annotations

import os
import resource
import sys
import time
from typing import Any


def current_rss_bytes() -> int:
    """Resident set size now (0 where /proc is absent)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def measure_bandwidth(threads: int, size_mb: int = 512) -> float:
    """Memory read bandwidth in GB/s: `threads` threads each summing their part of a large
    array (numpy releases the GIL), best of five."""
    import concurrent.futures

    import numpy as np

    a = np.ones(size_mb * (1 << 20) // 8, dtype=np.float64)
    parts = np.array_split(a, threads)
    best = float("inf")
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for _ in range(5):
            t = time.perf_counter()
            list(pool.map(np.sum, parts))
            best = min(best, time.perf_counter() - t)
    return a.nbytes / best / 1e9


def bytes_per_token(info: Any) -> int:
    """Weight bytes read to generate one token: every tensor but the embedding table, of
    which only one row is read."""
    total = 0
    for t in info.tensors:
        n = t.nbytes() or 0
        if t.name == "token_embd.weight" and len(t.shape) == 2 and t.shape[1]:
            n //= t.shape[1]
        total += n
    return total


def peak_rss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def decode_tps(c: Any) -> float | None:
    """Decode tokens/s of one completion (None when it generated too little to tell)."""
    t = c.timings
    return t.generated_tokens / t.generation_ms * 1000 if t.generation_ms > 0 and t.generated_tokens > 1 else None
