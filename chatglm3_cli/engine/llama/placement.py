"""Where a model's weights go and how its contexts attend: flash attention, the KV cache type,
CPU_REPACK instead of AMX, and mapping or reading the file."""
from __future__ import annotations

import ctypes
import os
from typing import Any, Sequence

from ... import env
from .runtime import llama

_Q4_0, _Q4_K = 2, 12
# Weight types llama.cpp's CPU_REPACK buffer takes (interleaved blocks for its AVX2/AVX-512
# GEMM kernels) and that ChatGLM3 files use: Q4_0, and Q4_K of the default Q4_K_M download.
_REPACKED = (_Q4_0, _Q4_K)

# llama_flash_attn_type
_FA_AUTO, _FA_OFF, _FA_ON = -1, 0, 1


# Above this many KV cells a CPU context uses flash attention. Without it, the attention scores
# of one batch take n_head x n_batch x cells x 4 bytes: on ChatGLM3-6B's shapes the compute
# buffer measured 289 MiB at 4,096 cells, 1.3 GiB at 20,000 and 2.1 GiB at 32,768, against
# 143-151 MiB with it. Up to here parity (below) is worth that memory; past it (the 128k
# model, long documents) the memory decides.
FA_CPU_MAX_CELLS_OFF = 32768


def flash_attn_type(on_gpu: bool, n_cells: int = 0, cache_type: str = "f16") -> int:
    """Whether a context uses flash attention: on a GPU llama.cpp's choice; on a CPU off, except
    with a quantized KV cache (llama.cpp quantizes V only with it) or past FA_CPU_MAX_CELLS_OFF.

    llama.cpp's CPU flash-attention kernel takes a different path for a few query rows than for
    many, so a prompt's logits depend on how it is cut into decode calls (measured: up to 0.04
    on the tiny random model and 0.008 on the 6B-shaped file for 140+22 tokens against 162 in one
    call). Batch decoding cuts prompts differently from a single sequence (shared prefixes, other
    sequences' tokens in the same call), so greedy answers could change with --parallel. Without
    it the same cuts differ by at most ~1e-5, and on 2 CPU cores it measured no slower at 128 and
    1536 tokens of context. CHATGLM3_FLASH_ATTN=on|off|auto overrides."""
    want = env.mode("CHATGLM3_FLASH_ATTN")
    if want is not None:
        return {"on": _FA_ON, "off": _FA_OFF, "auto": _FA_AUTO}[want]
    if on_gpu:
        return _FA_AUTO
    return _FA_ON if cache_type != "f16" or n_cells > FA_CPU_MAX_CELLS_OFF else _FA_OFF


def uses_flash_attn(on_gpu: bool, n_cells: int, cache_type: str = "f16") -> bool:
    """flash_attn_type as a yes/no, for the memory estimate (llama.cpp's "auto" turns it on
    wherever the device supports it)."""
    return flash_attn_type(on_gpu, n_cells, cache_type) != _FA_OFF


# --cache-type: the KV cache's element type (ggml_type ids) and its bytes per element.
CACHE_TYPES = {"f16": (1, 2.0), "q8_0": (8, 34 / 32), "q4_0": (2, 18 / 32)}


def cache_type_id(name: str) -> int:
    try:
        return CACHE_TYPES[name][0]
    except KeyError:
        raise ValueError(f"unknown KV cache type {name!r} (one of {', '.join(CACHE_TYPES)})") from None


class _BuftOverride(ctypes.Structure):
    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def _cpu_extra_buffer_types() -> dict[str, int]:
    """Names -> handles of the CPU backend's extra weight buffer types (AMX, CPU_REPACK...)."""
    L = llama()
    libdir = os.path.join(os.path.dirname(L.__file__), "lib")
    try:
        ggml = ctypes.CDLL(os.path.join(libdir, "libggml.so"))
        base = ctypes.CDLL(os.path.join(libdir, "libggml-base.so"))
    except OSError:
        return {}
    ggml.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    ggml.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    ggml.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
    ggml.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
    ggml.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    ggml.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    base.ggml_backend_buft_name.restype = ctypes.c_char_p
    base.ggml_backend_buft_name.argtypes = [ctypes.c_void_p]
    dev = ggml.ggml_backend_dev_by_type(0)  # GGML_BACKEND_DEVICE_TYPE_CPU
    if not dev:
        return {}
    fn_ptr = ggml.ggml_backend_reg_get_proc_address(ggml.ggml_backend_dev_backend_reg(dev),
                                                    b"ggml_backend_dev_get_extra_bufts")
    if not fn_ptr:
        return {}
    arr = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(fn_ptr)(dev)
    out: dict[str, int] = {}
    i = 0
    while arr and arr[i]:
        out[base.ggml_backend_buft_name(arr[i]).decode()] = arr[i]
        i += 1
    return out


def repack_names(tensors: Sequence[Any]) -> list[str]:
    """The matmul weights to put in CPU_REPACK: Q4_0/Q4_K matrices with rows in groups of 8
    (the embedding table is only looked up, never multiplied)."""
    return [t.name for t in tensors
            if t.ggml_type in _REPACKED and len(t.shape) == 2 and t.shape[1] % 8 == 0
            and t.name.endswith(".weight") and t.name != "token_embd.weight"]


def cpu_weight_placement(params: Any, tensors: Sequence[Any]) -> Any:
    """Work around llama.cpp's AMX kernels, which crash on ChatGLM3's shapes.

    On CPUs with Intel AMX, llama.cpp puts Q4_0/Q4_K/... weights in its AMX buffer type, and
    its AMX matmul segfaults on these files (seen on Sapphire Rapids with ChatGLM3-6B shapes,
    Q4_0 and Q4_K_M alike, even for a single token). We switch the extra buffer types off and
    put the Q4_0 and Q4_K matmul weights in CPU_REPACK ourselves, which keeps the fast
    repacked AVX-512 kernels (measured on a 6B-shaped Q4_K_M file: one token 249 ms instead of
    330 ms in the plain CPU buffer, four sequences 339 ms instead of 500 ms per step).
    CHATGLM3_CPU_EXTRA_BUFTS=1 restores llama.cpp's own choice. Returns what must be kept
    alive while the model loads.
    """
    if env.flag("CHATGLM3_CPU_EXTRA_BUFTS"):
        return None
    bufts = _cpu_extra_buffer_types()
    if "AMX" not in bufts:
        return None
    params.use_extra_bufts = False
    repack = bufts.get("CPU_REPACK")
    names = repack_names(tensors)
    if not repack or not names:
        return None
    pattern = ("^(" + "|".join(n.replace(".", "\\.") for n in names) + ")$").encode()
    overrides = (_BuftOverride * 2)()
    overrides[0].pattern = pattern
    overrides[0].buft = repack
    params.tensor_buft_overrides = ctypes.cast(overrides, ctypes.c_void_p)
    return overrides


def repacked_share(tensors: Sequence[Any]) -> float:
    """The share of the file's tensor bytes that llama.cpp's CPU_REPACK buffer takes."""
    names = set(repack_names(tensors))
    total = sum(t.nbytes() or 0 for t in tensors)
    return sum(t.nbytes() or 0 for t in tensors if t.name in names) / total if total else 0.0


# Drop a mapped file's pages while loading when at least this share of it is repacked (a file
# used in place, F16 or mostly embeddings, would only fault its pages back in).
DROP_PAGES_MIN_REPACKED = 0.5


def use_mmap() -> bool:
    """Whether to map the file rather than read it: mapped, unless CHATGLM3_MMAP=0.

    Repacking copies most weights into an anonymous buffer in another layout; the mapped pages
    they came from are dropped while loading (engine/pagedrop.py), which keeps a mapped load's
    speed with a read load's memory (6B Q4_0 here: 3.4 s and 3.33 GiB against 8.5 s read, and
    6.35 GiB mapped without dropping)."""
    return env.switch("CHATGLM3_MMAP") is not False


def set_load_mode(params: Any, mmap: bool) -> None:
    """Map the file, or read it. llama.cpp replaced the ``use_mmap`` flag by ``load_mode``; a
    ctypes structure takes any attribute silently, so setting a field it lacks would do
    nothing (it did: the file stayed mapped and resident beside its repacked copy)."""
    fields = {f[0] for f in type(params)._fields_}
    if "load_mode" in fields:
        L = llama()
        # AUTO (the default) maps the file on a CPU; NONE reads each tensor once.
        params.load_mode = L.LLAMA_LOAD_MODE_AUTO if mmap else L.LLAMA_LOAD_MODE_NONE
    elif "use_mmap" in fields:  # llama.cpp before load_mode
        params.use_mmap = mmap
    else:  # pragma: no cover - a llama.cpp we have not seen
        raise RuntimeError("llama_model_params has neither load_mode nor use_mmap")
