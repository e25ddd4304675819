"""A llama.cpp context: the KV cache, decode calls, Ctrl-C during them, and saving and
restoring one sequence's cells (the prompt cache)."""
from __future__ import annotations

import ctypes
import signal
import threading
from typing import Any, Sequence

from ...errors import GenerationError, ModelLoadError
from .model import LlamaModel
from .placement import _FA_OFF, cache_type_id, flash_attn_type
from .runtime import Freed, _AbortFlag, _buffer_bytes, _buffer_lines, _log_lines, default_threads, last_log_error, llama

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


class LlamaContext(Freed):
    """A llama.cpp context: the KV cache, one batch buffer, and decode calls."""

    def __init__(self, model: LlamaModel, *, n_ctx: int, n_batch: int = 512, n_threads: int | None = None,
                 n_seq_max: int = 1, kv_unified: bool = False, cache_type: str = "f16") -> None:
        L = self._L = llama()  # the decode calls' hot path reads it from here
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

    def seq_pos_max(self, seq: int) -> int:
        """The last position sequence ``seq`` holds in the KV cache (-1 when it holds none)."""
        return int(llama().llama_memory_seq_pos_max(self.memory, seq))

    def seq_state(self, seq: int) -> memoryview | None:
        """The cells of sequence ``seq`` as llama.cpp serializes them (None when it gives none);
        a view of the buffer they were written to, so that the caller writes and hashes in place."""
        L = llama()
        size = int(L.llama_state_seq_get_size(self.ptr, seq))
        buf = (ctypes.c_uint8 * size)()
        n = int(L.llama_state_seq_get_data(self.ptr, buf, size, seq))
        if n <= 0:
            return None
        return memoryview(buf)[:n]

    def set_seq_state(self, seq: int, data: bytearray) -> bool:
        """Put cells serialized by seq_state into sequence ``seq``; False when llama.cpp did not
        take all of them (no room beside other sequences' cells)."""
        buf = (ctypes.c_uint8 * len(data)).from_buffer(data)
        return int(llama().llama_state_seq_set_data(self.ptr, buf, len(data), seq)) == len(data)

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
            rc = self._L.llama_decode(self.ptr, b)
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
        rc = self._L.llama_decode(self.ptr, b)
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
