"""A llama.cpp sampler chain, with a grammar checked after sampling rather than before."""
from __future__ import annotations

import ctypes
from typing import Any, Iterable

from ...errors import GenerationError, GrammarError
from .context import LlamaContext
from .model import _held_tokens
from .runtime import Freed, _capture_stderr, _log_lines, last_log_error, llama


class Sampler(Freed):
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
        L = self._L = llama()  # the per-token path reads it from here
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
            return int(self._L.llama_sampler_sample(self.ptr, ctx.ptr, idx))
        L = self._L
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

        L = self._L
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

        L = self._L
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
