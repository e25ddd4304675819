"""Memory before allocation: what a llama.cpp context will take, checked against what is free.

llama.cpp allocates a context's KV cache and compute buffers in one go; when they do not fit,
the kernel's OOM killer ends the process (and maybe others) instead of an error we can report.
``--parallel 256 --ctx 4096`` on ChatGLM3-6B asks for 257 x 4096 KV cells, about 28 GiB. So
the engine estimates first, from the GGUF header alone, and refuses with the numbers.

The estimate is deliberately simple and a little generous:
- weights: the tensor sizes from the header (already loaded when a context is made);
- KV cache: layers x cells x (K + V width of the KV heads) x the cache type's bytes per value;
- compute buffers: without flash attention (the CPU default) the attention scores of one
  micro-batch against every cell (heads x n_ubatch x cells x 4 bytes, plus the mask) or the
  logits of a micro-batch, whichever is larger (llama.cpp reuses the memory), plus the
  activations of a micro-batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import env
from ..errors import InsufficientMemoryError

if TYPE_CHECKING:  # pragma: no cover
    from .gguf_file import GGUFInfo

# Bytes per value of a KV cache type (block types: bytes per block / values per block).
KV_TYPE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q5_1": 24 / 32,
                 "q5_0": 22 / 32, "q4_1": 20 / 32, "q4_0": 18 / 32, "iq4_nl": 18 / 32}
GiB = 1 << 30
# Room left for everything else in the process (Python, the tokenizer, llama.cpp's own
# bookkeeping): a context is refused when it would leave less than this.
HEADROOM = 256 << 20


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv: int
    compute: int

    @property
    def context(self) -> int:
        """What creating the context allocates (the weights are loaded already)."""
        return self.kv + self.compute

    @property
    def total(self) -> int:
        return self.weights + self.kv + self.compute


def _dims(info: "GGUFInfo") -> tuple[int, int, int, int, int, int, int]:
    n_layer = int(info.arch_get("block_count", 0) or 0)
    n_embd = int(info.arch_get("embedding_length", 0) or 0)
    n_head = int(info.arch_get("attention.head_count", 1) or 1)
    n_head_kv = int(info.arch_get("attention.head_count_kv", n_head) or n_head)
    head_dim = n_embd // n_head if n_head else 0
    k_len = int(info.arch_get("attention.key_length", head_dim) or head_dim)
    v_len = int(info.arch_get("attention.value_length", head_dim) or head_dim)
    n_ff = info.arch_get("feed_forward_length", 4 * n_embd) or 4 * n_embd
    if isinstance(n_ff, (list, tuple)):  # per-layer widths in some architectures
        n_ff = max(n_ff) if n_ff else 4 * n_embd
    return n_layer, n_embd, n_head, n_head_kv, k_len, v_len, int(n_ff)


def weights_bytes(info: "GGUFInfo") -> int:
    sizes = [t.nbytes() for t in info.tensors]
    known = sum(s for s in sizes if s is not None)
    return known if all(s is not None for s in sizes) else max(known, info.file_size - info.data_offset)


def kv_bytes(info: "GGUFInfo", n_cells: int, cache_type: str = "f16") -> int:
    """The KV cache of ``n_cells`` cells (all sequences together) in ``cache_type``
    ("f16", "q8_0", "q4_0", ...; K and V alike)."""
    try:
        per_value = KV_TYPE_BYTES[cache_type.lower()]
    except KeyError:
        raise ValueError(f"unknown KV cache type {cache_type!r} "
                         f"(one of: {', '.join(KV_TYPE_BYTES)})") from None
    n_layer, _, _, n_head_kv, k_len, v_len, _ = _dims(info)
    return int(n_layer * n_cells * n_head_kv * (k_len + v_len) * per_value)


def compute_bytes(info: "GGUFInfo", n_cells: int, n_batch: int, *, flash_attn: bool = False) -> int:
    _, n_embd, n_head, _, _, _, n_ff = _dims(info)
    n_vocab = len(info.get("tokenizer.ggml.tokens") or []) or 32000
    ub = max(1, min(n_batch, n_cells))
    scores = 0 if flash_attn else n_head * ub * n_cells * 4
    mask = ub * n_cells * 4
    activations = ub * (6 * n_embd + 3 * n_ff) * 4
    logits = n_vocab * ub * 4
    # llama.cpp's allocator reuses memory between the attention and the output stage: the
    # peak is the larger of the two (checked against its "compute buffer size" log on the
    # tiny fixture: 127 MiB at 8K cells, 320 at 32K, 640 at 64K; this gives 128, 321, 641).
    return max(scores + mask, logits) + activations


def estimate(info: "GGUFInfo", n_cells: int, *, n_batch: int = 512, cache_type: str = "f16",
             flash_attn: bool = False) -> MemoryEstimate:
    """Weights + KV cache + compute buffers of a context of ``n_cells`` cells."""
    return MemoryEstimate(weights=weights_bytes(info), kv=kv_bytes(info, n_cells, cache_type),
                          compute=compute_bytes(info, n_cells, n_batch, flash_attn=flash_attn))


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def available_bytes() -> int | None:
    """Memory this process can still take: MemAvailable, or less under a cgroup limit. None
    where it cannot be told (then nothing is refused)."""
    found: list[int] = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < (1 << 60):
            found.append(max(0, limit - usage))
            break
    return min(found) if found else None


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB / 10 else f"{n / (1 << 20):.0f} MiB"


def check_context(info: "GGUFInfo", *, n_cells: int, n_batch: int, what: str | None = None,
                  lower: str = "--ctx", cache_type: str = "f16", flash_attn: bool = False,
                  on_cpu: bool = True, available: int | None = None) -> MemoryEstimate:
    """Refuse (InsufficientMemoryError) a context that would not fit in free memory.

    ``what`` describes the context for the message ("4 sequences of 4096 tokens"), ``lower``
    the options that shrink it. ``available``: free bytes (default: read from the system).
    CHATGLM3_NO_MEMORY_CHECK=1 skips the refusal (swap, overcommit: the user knows better).
    ``on_cpu=False`` (layers offloaded to a GPU): the KV cache lives in GPU memory, which
    llama.cpp itself refuses cleanly, so host memory is not checked."""
    est = estimate(info, n_cells, n_batch=n_batch, cache_type=cache_type, flash_attn=flash_attn)
    if not on_cpu or env.flag("CHATGLM3_NO_MEMORY_CHECK"):
        return est
    free = available_bytes() if available is None else available
    if free is None or est.context + HEADROOM <= free:
        return est
    what = what or f"{n_cells} tokens"
    raise InsufficientMemoryError(
        f"not enough memory for a context of {what}: it needs about {_gib(est.context)} "
        f"(KV cache {_gib(est.kv)}, compute {_gib(est.compute)}; weights {_gib(est.weights)} "
        f"loaded already) but {_gib(free)} is available",
        hint=f"lower {lower} (CHATGLM3_NO_MEMORY_CHECK=1 tries anyway)")
