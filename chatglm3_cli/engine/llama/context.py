"""A llama.cpp context: the KV cache, decode calls, Ctrl-C during them, and saving and
restoring one sequence's cells (the prompt cache)."""
from __future__ import annotations

import ctypes
import signal
import sys
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


# llama_state_seq_get_data's layout: a magic number and the sequence id, then the KV cache's
# stream count and, per stream, its cell count followed (where not 0) by those cells.
_U32 = 4
_SEQ_HEAD = 2 * _U32


def _one_stream(state: memoryview, n_streams: int) -> memoryview | None:
    """A sequence's cells as serialized by a context of ``n_streams`` streams, in the form a
    one-stream context writes (what the prompt cache keeps). A sequence's cells sit in one
    stream, the others are empty (a 0 each). Rewritten in place; None if the layout is not that."""
    h = _SEQ_HEAD
    if len(state) < h + _U32 * (n_streams + 1) or int.from_bytes(state[h:h + _U32], sys.byteorder) != n_streams:
        return None
    k = 0  # the stream that holds the cells: the first with a cell count other than 0
    while k < n_streams and not any(state[h + _U32 * (1 + k):h + _U32 * (2 + k)]):
        k += 1
    tail = n_streams - k - 1  # the empty streams after it: one 0 each, at the end
    if k == n_streams or any(state[len(state) - _U32 * tail:]):
        return None
    # drop the k leading zeros (moving the head up to them) and the tail's
    head = bytes(state[:h])
    out = state[_U32 * k:len(state) - _U32 * tail]
    out[:h] = head
    out[h:h + _U32] = (1).to_bytes(_U32, sys.byteorder)
    return out


def _in_streams(state: bytearray, n_streams: int) -> bytearray | None:
    """The inverse of _one_stream, for a context of ``n_streams`` streams: llama.cpp puts the
    cells in the stream of the sequence they are given to, whichever stream held them."""
    h = _SEQ_HEAD
    if len(state) < h + 2 * _U32 or int.from_bytes(state[h:h + _U32], sys.byteorder) != 1:
        return None
    return (state[:h] + n_streams.to_bytes(_U32, sys.byteorder) + state[h + _U32:]
            + bytes(_U32 * (n_streams - 1)))


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
        # kv_unified: one KV pool shared by all sequences (copying a prefix shares its cells).
        # Otherwise, with several sequences, each has a stream of its own (n_ctx / n_seq_max
        # cells): a row's attention then covers only its own sequence's cells, and a sequence's
        # cells sit where they would in a context of its own (parallel decoding: decoder.py).
        params.kv_unified = kv_unified
        self.streams = 1 if kv_unified or n_seq_max <= 1 else n_seq_max
        # Stream copies llama.cpp has queued for the next decode call (dst -> src): until then
        # the destination's cells are listed but its data is not there yet.
        self._pending_copies: dict[int, int] = {}
        threads = n_threads or default_threads()
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        # a quantized KV cache turns it on: llama.cpp quantizes V only with flash attention
        params.flash_attn_type = flash_attn_type(model.n_gpu_layers > 0, n_ctx // self.streams, cache_type)
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
                self._copies_done()
                off = end
        finally:
            if interruptible:
                self._remove_abort()

    def copy_seq(self, src: int, dst: int, start: int, end: int) -> None:
        """Give sequence dst the cells [start, end) of src: shared on a unified KV cache; with a
        stream per sequence, llama.cpp copies src's whole stream (into the same cell indices) at
        the next decode call and dst then keeps [0, end) only (start must be 0)."""
        L = llama()
        if self.streams == 1 or src == dst:
            L.llama_memory_seq_cp(self.memory, src, dst, start, end)
            return
        if start != 0:
            raise ValueError("a stream copy starts at position 0")
        L.llama_memory_seq_cp(self.memory, src, dst, -1, -1)
        L.llama_memory_seq_rm(self.memory, dst, end, -1)
        self._pending_copies[dst] = src

    def _copies_done(self) -> None:
        """After a decode call: llama.cpp has made the queued stream copies."""
        if self._pending_copies:
            self._pending_copies.clear()

    def _copy_pending(self, seq: int) -> bool:
        """Whether a queued stream copy reads or writes sequence ``seq``'s data."""
        return seq in self._pending_copies or seq in self._pending_copies.values()

    def seq_pos_max(self, seq: int) -> int:
        """The last position sequence ``seq`` holds in the KV cache (-1 when it holds none)."""
        return int(llama().llama_memory_seq_pos_max(self.memory, seq))

    def seq_state(self, seq: int) -> memoryview | None:
        """The cells of sequence ``seq`` as llama.cpp serializes them (None when it gives none);
        a view of the buffer they were written to, so that the caller writes and hashes in place."""
        L = llama()
        if seq in self._pending_copies:  # its data arrives with the next decode call
            return None
        size = int(L.llama_state_seq_get_size(self.ptr, seq))
        buf = (ctypes.c_uint8 * size)()
        n = int(L.llama_state_seq_get_data(self.ptr, buf, size, seq))
        if n <= 0:
            return None
        if self.streams == 1:
            return memoryview(buf)[:n]
        return _one_stream(memoryview(buf).cast("B")[:n], self.streams)

    def set_seq_state(self, seq: int, data: bytearray) -> bool:
        """Put cells serialized by seq_state into sequence ``seq``; False when llama.cpp did not
        take all of them (no room beside other sequences' cells), or while a queued stream copy
        reads or writes that sequence (the copy, made later, would overwrite what is put now)."""
        if self._copy_pending(seq):
            return False
        if self.streams > 1:
            spread = _in_streams(data, self.streams)
            if spread is None:
                return False
            data = spread
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
            self._copies_done()
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
        self._copies_done()

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
