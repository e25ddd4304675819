"""One conversation's decoding loop (run, chat): prompt ids in, streamed text out.

``Generation`` schedules the steps of a single sequence in the chat context (the prompt past
what ``KVCache`` kept, then one token, or one token and its prompt-lookup draft, per step);
what each sampled token means is ``sequence.SequenceState``'s, shared with the parallel
decoder. What an answer comes back as (``Completion``, ``Timings``) is completion.py's.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Generator, Iterator, Sequence

from ..errors import PromptTooLongError
from .completion import Completion, Timings
from .sampling import SamplingParams
from .sequence import AnswerFormat, SequenceState
from .speculation import SpecPolicy, SpecStats

if TYPE_CHECKING:  # pragma: no cover
    from .llama.context import LlamaContext
    from .promptcache import PromptCache


class KVCache:
    """What sequence 0 of a context holds, so a new prompt re-evaluates only what changed."""

    def __init__(self, ctx: "LlamaContext") -> None:
        self.ctx = ctx
        self.tokens: list[int] = []
        self.disk: "PromptCache | None" = None  # prefixes saved by earlier runs (promptcache.py)

    def reset(self) -> None:
        self.ctx.remove(0, 0, -1)
        self.tokens = []

    def prepare(self, prompt: Sequence[int]) -> int:
        """Keep the longest cached prefix of prompt (at least one token is always evaluated,
        for its logits), rounded down to a multiple of PROMPT_ALIGN so that the rest is cut
        into decode calls as it would be alone (same logits to the bit); return how many
        were kept."""
        from .prefixes import usable_prefix

        n = usable_prefix(self.tokens, prompt, len(prompt) - 1)
        if self.disk is not None:  # a longer prefix saved by an earlier process, if any
            n = self.disk.restore_single(self, prompt, n)
        if n < len(self.tokens):
            if not self.ctx.remove(0, n, -1):
                self.ctx.remove(0, 0, -1)
                n = 0
            del self.tokens[n:]
        return n


class Generation:
    """An iterator of text pieces; ``result`` holds the Completion once it is exhausted."""

    def __init__(self, cache: KVCache, prompt: Sequence[int], params: SamplingParams, *,
                 fmt: AnswerFormat, new_sampler: Any, speculate: int = 0,
                 spec_policy: SpecPolicy | None = None, stops: Sequence[str] = ()) -> None:
        n_ctx = cache.ctx.n_ctx
        if len(prompt) + 1 > n_ctx:
            raise PromptTooLongError(len(prompt), n_ctx)
        if not prompt:
            raise ValueError("empty prompt")
        self._cache = cache
        self.prompt = list(prompt)
        self.params = params
        self._new_sampler = new_sampler
        self.speculate = max(0, speculate)  # prompt-lookup draft tokens per step (0 = off)
        self._policy = spec_policy  # None: draft whenever the lookup finds something
        self.seq = SequenceState(fmt, self.prompt, params, n_ctx=n_ctx, stops=stops, speculate=self.speculate)
        self.spec = SpecStats()
        self.result: Completion | None = None
        self._iter = self._run()

    def __iter__(self) -> Iterator[str]:
        return self._iter

    def __next__(self) -> str:
        return next(self._iter)

    @property
    def metadata(self) -> str:
        """The current message's metadata line, known once its first text piece is out: a
        non-empty value means the model is writing a tool call (or interpreter code)."""
        return self.seq.metadata

    def close(self) -> None:
        """Stop early; ``result`` then holds the partial answer (finish_reason "interrupted")."""
        self._iter.close()

    def complete(self) -> Completion:
        for _ in self._iter:
            pass
        assert self.result is not None
        return self.result

    def _run(self) -> Generator[str, None, None]:
        cache, ctx, seq = self._cache, self._cache.ctx, self.seq
        timings = Timings()
        sampler = self._new_sampler(self.params)
        ok = False
        at_yield = False  # the KV cache holds cache.tokens (and maybe draft cells) at a yield
        row = 0  # the batch row of the last step whose logits gave the current token
        try:
            t0 = time.perf_counter()  # a prefix restored from disk counts as prompt time
            kept = cache.prepare(self.prompt)
            ctx.decode(self.prompt[kept:], kept)
            cache.tokens = list(self.prompt)
            seq.prompt_done()
            t1 = time.perf_counter()
            timings.prompt_tokens = len(self.prompt) - kept
            timings.prompt_ms = (t1 - t0) * 1000
            if self.params.repeat_penalty != 1.0:
                sampler.accept_prompt(self.prompt)
            tok = sampler.sample(ctx)
            timings.first_token_ms = (time.perf_counter() - t0) * 1000
            while True:
                reason = seq.take(tok)
                if seq.emitted:
                    at_yield = True
                    yield seq.emitted
                    at_yield = False
                if reason is not None:
                    break
                if seq.confirms(row, tok):
                    # Already evaluated in the last step: the next token is in the next row.
                    cache.tokens.append(tok)
                    row += 1
                    self.spec.accepted += 1
                    tok = sampler.sample(ctx, row)
                    continue
                if seq.draft:  # rejected (or used up): drop the cells of the unused draft tokens
                    ctx.remove(0, len(cache.tokens), -1)
                    if self._policy is not None:
                        self._policy.judged(len(seq.draft), row)
                    row = 0
                pos = len(cache.tokens)
                draft = seq.make_draft(self.speculate)
                if draft and self._policy is not None and not self._policy.want(1, 1, len(draft)):
                    draft = seq.draft = []
                ts = time.perf_counter()
                if draft:
                    self.spec.steps += 1
                    self.spec.drafted += len(draft)
                    ctx.decode_entries([(tok, pos, 0, True)] + [(d, pos + 1 + i, 0, True) for i, d in enumerate(draft)])
                else:
                    ctx.decode_one(tok, pos)
                if self._policy is not None:
                    self._policy.timed(1 + len(draft), time.perf_counter() - ts)
                cache.tokens.append(tok)
                tok = sampler.sample(ctx, 0 if draft else -1)
            ok = True
        finally:
            timings.generated_tokens = len(seq.generated)
            timings.generation_ms = (time.perf_counter() - t1) * 1000 if "t1" in locals() else 0.0
            sampler.close()
            if seq.draft and (ok or at_yield):
                ctx.remove(0, len(cache.tokens), -1)  # cells of draft tokens never confirmed
            if not ok:
                if not at_yield:
                    # Interrupted inside a llama.cpp call: what the KV cache holds is no longer
                    # known exactly, so the next prompt starts from scratch.
                    cache.reset()
                # Stopped early (Ctrl-C, the consumer closed us): keep what was produced.
                self.result = seq.completion(timings, len(self.prompt) - timings.prompt_tokens)
                self.result.finish_reason = "interrupted"
        seq.close()
        if seq.emitted:
            yield seq.emitted
        self.result = seq.completion(timings, len(self.prompt) - timings.prompt_tokens)
        if cache.disk is not None:  # kept for later processes (promptcache.py), after the timings
            cache.disk.save_single(cache)
