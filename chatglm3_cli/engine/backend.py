"""The only module that touches llama.cpp (through llama-cpp-python's low-level ctypes API).

We use the low-level API rather than the ``Llama`` class because we need control that class
does not give: our own token ids in, our own stop tokens, several sequences in one context
(later), llama.cpp's log fully silenced, and a load failure turned into a typed error instead
of a vague ValueError. ``llama_cpp`` is imported lazily so that ``chatglm3 --help`` stays fast.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections import deque
from typing import Any, Iterable, Sequence

from .. import env
from ..errors import GenerationError, GrammarError, ModelLoadError

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
            from .cpu import prepare_openmp

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
    from .cpu import default_threads as physical

    return physical()


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


class LlamaModel:
    """A loaded model (weights + vocabulary)."""

    def __init__(self, path: str, n_gpu_layers: int | None, tensors: Sequence[Any] = (), *,
                 vocab_only: bool = False) -> None:
        L = llama()
        params = L.llama_model_default_params()
        if vocab_only:  # the vocabulary alone (models info): no weights read, no GPU touched
            n_gpu_layers = 0
            params.vocab_only = True
        if n_gpu_layers is None or n_gpu_layers < 0:
            n_gpu_layers = 999 if supports_gpu_offload() else 0
        params.n_gpu_layers = n_gpu_layers
        self.n_gpu_layers = n_gpu_layers
        keep = cpu_weight_placement(params, tensors) if n_gpu_layers == 0 and not vocab_only else None
        self.mmap = use_mmap() or vocab_only
        set_load_mode(params, self.mmap)
        dropper = None
        if self.mmap and n_gpu_layers == 0 and not vocab_only and repacked_share(tensors) >= DROP_PAGES_MIN_REPACKED:
            from .pagedrop import PageDropper

            dropper = PageDropper(path)
            callback = L.llama_progress_callback(dropper.progress)
            params.progress_callback = callback
        _log_lines.clear()
        ptr = L.llama_model_load_from_file(os.fsencode(path), params)
        del keep
        if dropper is not None:
            dropper.drop()  # what the last tensors left, and the weights used in place
        self.dropped_pages = dropper is not None and dropper.drops > 0
        if not ptr:
            reason = last_log_error() or "llama.cpp could not load it"
            raise ModelLoadError(f"cannot load {path}: {reason}")
        self.ptr = ptr
        self.vocab = L.llama_model_get_vocab(ptr)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = L.llama_model_n_ctx_train(ptr)
        self._piece_cache: dict[int, bytes] = {}

    def close(self) -> None:
        if getattr(self, "ptr", None):
            _HELD.pop(_vocab_key(self.vocab), None)  # another vocabulary may come to live there
            llama().llama_model_free(self.ptr)
            self.ptr = None

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:
            pass

    # vocabulary ---------------------------------------------------------------------------

    def token_bytes(self, token: int) -> bytes:
        """The bytes a token stands for in generated text (control tokens give b"")."""
        cached = self._piece_cache.get(token)
        if cached is not None:
            return cached
        L = llama()
        buf = ctypes.create_string_buffer(64)
        n = L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        out = buf.raw[:n]
        self._piece_cache[token] = out
        return out

    def token_text(self, token: int) -> str:
        """The vocabulary entry of a token (for showing prompts; control tokens by name)."""
        raw = llama().llama_vocab_get_text(self.vocab, token)
        return raw.decode("utf-8", errors="replace") if raw else ""

    def tokenize(self, text: str, *, parse_special: bool, add_special: bool = False) -> list[int]:
        """llama.cpp's own tokenizer: used only for models that are not ChatGLM3."""
        L = llama()
        data = text.encode("utf-8")
        cap = len(data) + 8
        buf = (L.llama_token * cap)()
        n = L.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            cap = -n
            buf = (L.llama_token * cap)()
            n = L.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        return list(buf[:n])

    def eog_tokens(self) -> set[int]:
        L = llama()
        return {t for t in range(self.n_vocab) if L.llama_vocab_is_eog(self.vocab, t)}

    def chat_template(self) -> str | None:
        raw = llama().llama_model_chat_template(self.ptr, None)
        return raw.decode("utf-8") if raw else None

    def bos_token(self) -> int:
        return int(llama().llama_vocab_bos(self.vocab))

    def is_control(self, token: int) -> bool:
        return bool(llama().llama_vocab_is_control(self.vocab, token))

    def add_bos(self) -> bool:
        return bool(llama().llama_vocab_get_add_bos(self.vocab))


def builtin_chat_templates() -> list[str]:
    """The names of the chat formats llama.cpp implements itself (chatml, llama3, gemma...)."""
    L = llama()
    n = L.llama_chat_builtin_templates(None, 0)
    arr = (ctypes.c_char_p * max(1, n))()
    n = L.llama_chat_builtin_templates(arr, n)
    return sorted(arr[i].decode("utf-8") for i in range(max(0, n)))


def apply_builtin_template(name: str, messages: Sequence[tuple[str, str]], *, add_assistant: bool) -> str:
    """Render (role, content) pairs with one of llama.cpp's built-in chat formats.

    C strings: content must not contain NUL (the caller checks). ValueError for a name that
    llama.cpp does not know."""
    L = llama()
    keep = [(r.encode("utf-8"), c.encode("utf-8")) for r, c in messages]
    chat = (L.llama_chat_message * max(1, len(keep)))()
    for i, (r, c) in enumerate(keep):
        chat[i].role = r
        chat[i].content = c
    tmpl = name.encode("utf-8")
    size = sum(len(r) + len(c) for r, c in keep) * 2 + 1024
    buf = ctypes.create_string_buffer(size)
    n = L.llama_chat_apply_template(tmpl, chat, len(keep), add_assistant, buf, size)
    if n < 0:
        raise ValueError(f"llama.cpp has no built-in chat template {name!r}")
    if n >= size:
        size = n + 1
        buf = ctypes.create_string_buffer(size)
        n = L.llama_chat_apply_template(tmpl, chat, len(keep), add_assistant, buf, size)
    return buf.raw[:n].decode("utf-8", errors="replace")


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


# Prompts are cut into decode calls only at absolute positions that are multiples of
# PROMPT_ALIGN, and a prefix taken from the KV cache or shared between sequences is rounded
# down to a multiple of it. llama.cpp's repacked CPU kernels multiply the rows of a call four
# at a time from its first row and the leftover rows one at a time, with results that differ
# in the last bits; with every cut at such a position, each prompt token lands in the same
# kind of group whether the prompt is evaluated alone or after a reused prefix, so its logits
# are bit-identical either way (tested on F32, F16, Q4_0 and Q4_K files).
PROMPT_ALIGN = 8


def align_down(n: int) -> int:
    """The largest multiple of PROMPT_ALIGN not above n."""
    return n - n % PROMPT_ALIGN


class LlamaContext:
    """A llama.cpp context: the KV cache, one batch buffer, and decode calls."""

    def __init__(self, model: LlamaModel, *, n_ctx: int, n_batch: int = 512, n_threads: int | None = None,
                 n_seq_max: int = 1, kv_unified: bool = False, cache_type: str = "f16") -> None:
        L = llama()
        self.model = model
        n_batch = max(PROMPT_ALIGN, align_down(n_batch))  # chunks end at aligned positions
        params = L.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = n_seq_max
        # One KV pool shared by all sequences, so that copying a prefix to another sequence
        # shares its cells instead of duplicating them.
        params.kv_unified = kv_unified
        threads = n_threads or default_threads()
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        # a quantized KV cache turns it on: llama.cpp quantizes V only with flash attention
        params.flash_attn_type = flash_attn_type(model.n_gpu_layers > 0, n_ctx, cache_type)
        self.flash_attn = params.flash_attn_type != _FA_OFF
        self.cache_type = cache_type
        if cache_type != "f16":
            params.type_k = params.type_v = cache_type_id(cache_type)
        _log_lines.clear()
        _buffer_lines.clear()
        ptr = L.llama_init_from_model(model.ptr, params)
        # What llama.cpp allocated for this context (bench reports it beside the RSS).
        self.buffer_bytes = _buffer_bytes(list(_buffer_lines))
        if not ptr:
            reason = last_log_error() or "llama.cpp could not create a context"
            raise ModelLoadError(f"cannot create a context of {n_ctx} tokens: {reason}")
        self.ptr = ptr
        self.n_ctx = int(L.llama_n_ctx(ptr))
        # What llama.cpp made, not what we asked for: it caps the batch at the context it was
        # asked for (a -c below 512) and rounds the context up; a decode call over its batch
        # size is a GGML_ASSERT that kills the process.
        self.n_batch = max(1, min(n_batch, int(L.llama_n_batch(ptr))))
        self.n_threads = threads
        self.memory = L.llama_get_memory(ptr)
        self._batch = L.llama_batch_init(self.n_batch, 0, n_seq_max)
        self._abort = _AbortFlag()

    def close(self) -> None:
        L = llama()
        if getattr(self, "ptr", None):
            L.llama_batch_free(self._batch)
            L.llama_free(self.ptr)
            self.ptr = None

    def __del__(self) -> None:  # pragma: no cover
        try:
            self.close()
        except Exception:
            pass

    def clear(self) -> None:
        if self.ptr:
            llama().llama_memory_clear(self.memory, True)

    def remove(self, seq: int, start: int, end: int = -1) -> bool:
        """Drop cells [start, end) of a sequence from the KV cache (a no-op once closed)."""
        if not self.ptr:
            return False
        return bool(llama().llama_memory_seq_rm(self.memory, seq, start, end))

    def decode(self, tokens: Sequence[int], start_pos: int, seq: int = 0) -> None:
        """Evaluate tokens at positions start_pos.. for one sequence; logits of the last one kept.

        Long inputs are cut where the absolute position is a multiple of n_batch (itself a
        multiple of PROMPT_ALIGN), so that a prompt whose reused prefix ends at an aligned
        position is cut exactly as when it is evaluated alone. Ctrl-C during a chunk aborts it
        and raises KeyboardInterrupt once llama.cpp has returned.
        """
        L = llama()
        n_total = len(tokens)
        interruptible = n_total > 1
        if interruptible:
            self._install_abort()
        try:
            off = 0
            while off < n_total:
                pos = start_pos + off
                end = min(n_total, (pos // self.n_batch + 1) * self.n_batch - start_pos)
                chunk = tokens[off:end]
                b = self._batch
                for i, tok in enumerate(chunk):
                    b.token[i] = tok
                    b.pos[i] = pos + i
                    b.n_seq_id[i] = 1
                    b.seq_id[i][0] = seq
                    b.logits[i] = 0
                b.logits[len(chunk) - 1] = 1 if end == n_total else 0
                b.n_tokens = len(chunk)
                _log_lines.clear()
                rc = L.llama_decode(self.ptr, b)
                if rc != 0:
                    self._raise_decode(rc)
                off = end
        finally:
            if interruptible:
                self._remove_abort()

    def copy_seq(self, src: int, dst: int, start: int, end: int) -> None:
        """Give sequence dst the cells [start, end) of src (shared, on a unified KV cache)."""
        llama().llama_memory_seq_cp(self.memory, src, dst, start, end)

    def decode_entries(self, entries: Sequence[tuple[int, int, int, bool]], *,
                       interruptible: bool = False) -> None:
        """One llama_decode over (token, position, sequence, wants_logits) entries, at most
        n_batch of them. Logits of row i are then read with Sampler.sample(ctx, i).

        ``interruptible``: Ctrl-C aborts the call (for steps that carry prompt chunks) and
        raises KeyboardInterrupt once llama.cpp has returned."""
        b = self._batch
        for i, (tok, pos, seq, logits) in enumerate(entries):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = 1 if logits else 0
        b.n_tokens = len(entries)
        _log_lines.clear()  # a failure is explained by its own log lines, not an older one's
        if interruptible:
            self._install_abort()
        try:
            rc = _L.llama_decode(self.ptr, b)
            if rc != 0:
                self._raise_decode(rc)
        finally:
            if interruptible:
                self._remove_abort()

    def decode_one(self, token: int, pos: int, seq: int = 0) -> None:
        """The per-token hot path: one token, logits kept."""
        b = self._batch
        b.token[0] = token
        b.pos[0] = pos
        b.n_seq_id[0] = 1
        b.seq_id[0][0] = seq
        b.logits[0] = 1
        b.n_tokens = 1
        _log_lines.clear()
        rc = _L.llama_decode(self.ptr, b)
        if rc != 0:
            self._raise_decode(rc)

    def _raise_decode(self, rc: int) -> None:
        if rc == 2 and self._abort.requested:
            raise KeyboardInterrupt
        if rc == 1:
            raise GenerationError("the context is full (no free KV cache slot)")
        raise GenerationError(f"llama_decode failed ({rc}): {last_log_error() or 'no details'}")

    def _install_abort(self) -> None:
        self._abort.requested = False
        self._prev_handler = None
        if threading.current_thread() is threading.main_thread():
            try:
                self._prev_handler = signal.getsignal(signal.SIGINT)

                def on_sigint(_sig: int, _frame: Any) -> None:
                    self._abort.requested = True

                signal.signal(signal.SIGINT, on_sigint)
            except (ValueError, TypeError):  # pragma: no cover - exotic embedding
                self._prev_handler = None
        llama().llama_set_abort_callback(self.ptr, self._abort.cb, None)

    def _remove_abort(self) -> None:
        llama().llama_set_abort_callback(self.ptr, llama().ggml_abort_callback(0), None)
        if self._prev_handler is not None:
            signal.signal(signal.SIGINT, self._prev_handler)
            self._prev_handler = None
        if self._abort.requested:
            self._abort.requested = False
            raise KeyboardInterrupt


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


_HELD: dict[int, tuple[Any, frozenset[int], int | None]] = {}


def _vocab_key(vocab: Any) -> int:
    return ctypes.cast(vocab, ctypes.c_void_p).value or 0


def _held_tokens(vocab: Any) -> tuple[Any, frozenset[int], int | None]:
    """(control tokens that are not end-of-generation, the same as a set, an end-of-generation
    token or None) of a vocabulary; computed once per vocabulary."""
    import numpy as np

    L = llama()
    key = _vocab_key(vocab)
    if key not in _HELD:
        n = L.llama_vocab_n_tokens(vocab)
        held = [t for t in range(n) if L.llama_vocab_is_control(vocab, t) and not L.llama_vocab_is_eog(vocab, t)]
        eog = next((t for t in range(n) if L.llama_vocab_is_eog(vocab, t)), None)
        _HELD[key] = (np.array(held, dtype=np.int64), frozenset(held), eog)
    return _HELD[key]


class Sampler:
    """A llama.cpp sampler chain built from SamplingParams (HF order: temperature, top-k, top-p).

    A grammar is kept out of the chain: checking all 65,024 tokens against it costs ~80 ms per
    token on the tiny model (0.2 ms without). Like llama.cpp's own common sampler, we sample
    without it, keep the token when the grammar accepts it, and only when it does not, sample
    again among the allowed tokens. At temperature 0 this picks exactly what masking first
    picks: an allowed overall argmax is the argmax of the allowed set, and after a rejection we
    check the best tokens in order (64, 1024, 8192, then all) and take the first allowed one.
    With plain temperature sampling it draws from exactly the masked distribution too: token t
    comes out with p(t) + P(rejected) * p(t)/P(allowed) = p(t)/P(allowed). With top-k/top-p,
    the first draw's nucleus is taken over all tokens (as in llama.cpp), so the distribution
    differs slightly from masking first.
    """

    def __init__(self, *, temperature: float, top_p: float, top_k: int, repeat_penalty: float,
                 seed: int | None, n_vocab: int, repeat_last_n: int = 64,
                 grammar: str | None = None, vocab: Any = None) -> None:
        L = llama()
        self.grammar: Any = None
        self.n_vocab = n_vocab
        self.greedy = temperature <= 0
        self.resampled = 0  # tokens the grammar rejected (the slow path ran)
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        self.ptr = chain
        if grammar is not None:
            _log_lines.clear()
            with _capture_stderr() as captured:  # the grammar parser prints to fd 2 itself
                g = L.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
            if not g:
                self.close()
                detail = " ".join(captured.text().split()) or last_log_error() or "llama.cpp refused it"
                raise GrammarError(f"invalid grammar: {detail}")
            self.grammar = g
            self._vocab = vocab
        if repeat_penalty != 1.0:
            L.llama_sampler_chain_add(
                # This binding takes n_vocab first (checked: the second argument is last_n).
                chain, L.llama_sampler_init_penalties(n_vocab, repeat_last_n, repeat_penalty, 0.0, 0.0))
        if temperature <= 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        else:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(temperature))
            if top_k > 0:
                L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(top_k))
            if 0 < top_p < 1:
                L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(top_p, 1))
            s = 0xFFFFFFFF if seed is None else seed & 0xFFFFFFFF  # LLAMA_DEFAULT_SEED = random
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(s))

    grammar_first = False  # True: mask all tokens with the grammar before sampling (the reference)

    def accept_prompt(self, tokens: Iterable[int]) -> None:
        """Let the repeat penalty see the prompt, as llama.cpp's own tools do."""
        L = llama()
        for t in tokens:
            L.llama_sampler_accept(self.ptr, t)

    def sample(self, ctx: LlamaContext, idx: int = -1) -> int:
        """Sample from the logits of batch row idx and accept the token (into the grammar too)."""
        if self.grammar is None:
            return int(_L.llama_sampler_sample(self.ptr, ctx.ptr, idx))
        L = _L
        if self.grammar_first:  # the slow reference: mask all tokens first
            tok = self._apply(ctx, idx, with_grammar=True)
        else:
            tok = self._apply(ctx, idx, with_grammar=False)
            if not self._allowed([tok])[0]:  # rejected: sample again among allowed tokens
                self.resampled += 1
                best = self._greedy_allowed() if self.greedy else None
                tok = best if best is not None else self._apply(ctx, idx, with_grammar=True)
        if tok not in self._held_set():  # a held token ends the answer: nothing follows it
            L.llama_sampler_accept(self.grammar, tok)
        L.llama_sampler_accept(self.ptr, tok)
        return tok

    def _held(self) -> Any:
        """Control tokens that are not end-of-generation (ChatGLM3's <|user|>, <|observation|>):
        llama.cpp's grammar reads them as their text ("<|user|>" is fine inside a JSON string),
        but they end the answer. Allowed only where the grammar allows the end."""
        return _held_tokens(self._vocab)[0]

    def _held_set(self) -> frozenset[int]:
        return _held_tokens(self._vocab)[1]

    def _end_allowed(self) -> bool:
        eog = _held_tokens(self._vocab)[2]
        return eog is not None and bool(self._grammar_allows([eog])[0])

    def _allowed(self, ids: Any) -> Any:
        """Which of these tokens the grammar allows next (a numpy bool array)."""
        import numpy as np

        ok = self._grammar_allows(ids)
        held = np.isin(np.asarray(ids), self._held())
        if held.any() and not self._end_allowed():
            ok &= ~held
        return ok

    def _grammar_allows(self, ids: Any) -> Any:
        import numpy as np

        L = _L
        sub = np.zeros(len(ids), dtype=self._cand.dtype)
        sub["id"] = ids
        arr = L.llama_token_data_array()
        arr.data = sub.ctypes.data_as(ctypes.POINTER(L.llama_token_data))
        arr.size, arr.selected, arr.sorted = len(sub), -1, False
        L.llama_sampler_apply(self.grammar, ctypes.byref(arr))
        return sub["logit"] != -np.inf

    def _greedy_allowed(self) -> int | None:
        """At temperature 0, the allowed token that masking first would pick: the first allowed
        one in order of (chain-adjusted) logit, highest first, lower id first on ties, as
        llama.cpp's greedy sampler breaks them. Checks the best 64 tokens, then 1024, 8192
        and all, instead of all 65,024 at once."""
        import numpy as np

        cand = self._cand
        if self._arr.size != len(cand) or ctypes.addressof(self._arr.data.contents) != cand.ctypes.data:
            return None  # the chain rearranged the candidates: take the general path
        logits = cand["logit"]
        n = len(logits)
        for top in (64, 1024, 8192, n):
            if top < n:
                threshold = np.partition(logits, n - top)[n - top]
                ids = np.flatnonzero(logits >= threshold)  # every token at least as good
            else:
                ids = np.arange(n)
            ids = ids[np.lexsort((ids, -logits[ids]))]
            ok = np.flatnonzero(self._allowed(ids))
            if len(ok):
                return int(ids[ok[0]])
        return None

    def _apply(self, ctx: LlamaContext, idx: int, *, with_grammar: bool) -> int:
        """What llama_sampler_sample does, without accepting: candidates from the logits of row
        idx, through the grammar (optionally) and the chain; the selected token."""
        import numpy as np

        L = _L
        n = self.n_vocab
        if getattr(self, "_cand", None) is None:
            self._ids = np.arange(n, dtype=np.int32)
            self._cand = np.zeros(n, dtype=np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")]))
            self._arr = L.llama_token_data_array()
        cand = self._cand
        logits = L.llama_get_logits_ith(ctx.ptr, idx)
        if not logits:
            raise GenerationError(f"no logits for batch row {idx}")
        cand["id"] = self._ids
        cand["logit"] = np.ctypeslib.as_array(logits, shape=(n,))
        cand["p"] = 0.0
        arr = self._arr
        arr.data = cand.ctypes.data_as(ctypes.POINTER(L.llama_token_data))
        arr.size, arr.selected, arr.sorted = n, -1, False
        if with_grammar:
            L.llama_sampler_apply(self.grammar, ctypes.byref(arr))
            if not self._end_allowed():
                cand["logit"][self._held()] = -np.inf  # candidates are still in id order here
        L.llama_sampler_apply(self.ptr, ctypes.byref(arr))
        if not 0 <= arr.selected < arr.size:
            raise GenerationError("the sampler selected no token")
        return int(arr.data[arr.selected].id)

    def close(self) -> None:
        if getattr(self, "ptr", None):
            llama().llama_sampler_free(self.ptr)
            self.ptr = None
        if getattr(self, "grammar", None):
            llama().llama_sampler_free(self.grammar)
            self.grammar = None

    def __del__(self) -> None:  # pragma: no cover
        try:
            self.close()
        except Exception:
            pass
