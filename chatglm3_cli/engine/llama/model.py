"""A loaded llama.cpp model: weights and vocabulary, and llama.cpp's built-in chat templates."""
from __future__ import annotations

import ctypes
import os
from typing import Any, Sequence

from ...errors import ModelLoadError
from . import placement
from .runtime import Freed, _log_lines, last_log_error, llama, supports_gpu_offload


class LlamaModel(Freed):
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
        keep = placement.cpu_weight_placement(params, tensors) if n_gpu_layers == 0 and not vocab_only else None
        self.mmap = placement.use_mmap() or vocab_only
        placement.set_load_mode(params, self.mmap)
        dropper = None
        if (self.mmap and n_gpu_layers == 0 and not vocab_only
                and placement.repacked_share(tensors) >= placement.DROP_PAGES_MIN_REPACKED):
            from ..pagedrop import PageDropper

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
