"""One sequence: prompt ids in, streamed text out.

Everything that produces text for a single conversation goes through ``Generation``, so that
ChatGLM3's stop tokens, its metadata line and UTF-8 safety live in one place.
"""
from __future__ import annotations

import codecs
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generator, Iterator, Sequence

from ..errors import PromptTooLongError
from .lookup import PromptLookup, SpecPolicy
from .sampling import SamplingParams

if TYPE_CHECKING:  # pragma: no cover
    from .backend import LlamaContext, LlamaModel
    from .promptcache import PromptCache

# Longer than any tool name (OpenAI caps function names at 64): a first line this long without
# "\n" is content, not metadata, and streaming need not wait for more of it.
_MAX_METADATA_CHARS = 64


class Utf8Stream:
    """Joins token bytes into text without ever splitting a multi-byte character.

    ChatGLM3 spells rare characters and emoji as byte tokens (<0xF0> <0x9F> ...), so one
    character can arrive over several tokens. Invalid bytes become U+FFFD, as in the
    official decode.
    """

    def __init__(self) -> None:
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return self._dec.decode(data)

    def finish(self) -> str:
        return self._dec.decode(b"", final=True)


class AnswerShaper:
    """Turns the raw generated text into the answer, incrementally.

    ChatGLM3 begins its answer with a metadata line: empty for a plain answer, the tool's name
    for a tool call. The official ``process_response`` splits on the first "\\n", and strips
    the content of a plain answer. We do the same while streaming: the metadata line is held
    back, leading whitespace dropped, and trailing whitespace held until more text follows, so
    the streamed pieces join to exactly the final answer.
    """

    def __init__(self, *, metadata_line: bool) -> None:
        self.metadata: str = ""
        # Other models: only the leading space of an SPM vocabulary's first piece is dropped.
        self._state = "meta" if metadata_line else "lead_raw"
        self._meta_buf = ""
        self._pending_ws = ""
        self._emitted = False
        self._separate = False

    def new_segment(self) -> None:
        """The model wrote ``<|assistant|>`` inside its answer: a new message begins, with its
        own metadata line (ChatGLM3 does this to start a tool call or interpreter cell after
        some text; the official process_response splits on it). The segments' text is joined
        by a blank line; ``metadata`` becomes the new segment's."""
        self._state = "meta"
        self._meta_buf = ""
        self._pending_ws = ""
        self.metadata = ""
        self._separate = self._emitted

    def feed(self, text: str) -> str:
        out = self._feed(text)
        if out:
            if self._separate:
                out = "\n\n" + out
                self._separate = False
            self._emitted = True
        return out

    def _feed(self, text: str) -> str:
        if not text:
            return ""
        if self._state == "meta":
            self._meta_buf += text
            if "\n" in self._meta_buf:
                meta, rest = self._meta_buf.split("\n", 1)
                self._meta_buf = ""
                self.metadata = meta.strip()
                self._state = "lead" if not self.metadata else "raw"
                return self._feed(rest)
            if len(self._meta_buf) > _MAX_METADATA_CHARS:
                rest, self._meta_buf = self._meta_buf, ""
                self._state = "lead"
                return self._feed(rest)
            return ""
        if self._state == "raw":
            return text
        if self._state == "lead_raw":
            text = text.lstrip()
            if text:
                self._state = "raw"
            return text
        if self._state == "lead":
            text = text.lstrip()
            if not text:
                return ""
            self._state = "body"
        # body: hold trailing whitespace until we know it is not the end
        text = self._pending_ws + text
        stripped = text.rstrip()
        self._pending_ws = text[len(stripped):]
        return stripped

    def finish(self) -> str:
        if self._state == "meta":  # never saw the metadata line's end: it was all content
            rest, self._meta_buf = self._meta_buf, ""
            self._state = "lead"
            return self.feed(rest)
        self._pending_ws = ""
        return ""


@dataclass
class Timings:
    prompt_tokens: int = 0  # evaluated now (not taken from the cache)
    prompt_ms: float = 0.0
    first_token_ms: float = 0.0  # from the start until the first token was sampled
    generated_tokens: int = 0
    generation_ms: float = 0.0

    @property
    def prompt_tps(self) -> float | None:
        return self.prompt_tokens / self.prompt_ms * 1000 if self.prompt_ms > 0 and self.prompt_tokens else None

    @property
    def generation_tps(self) -> float | None:
        # The first token comes from the prompt's logits; the rest each cost one decode.
        n = self.generated_tokens
        return n / self.generation_ms * 1000 if self.generation_ms > 0 and n else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens, "prompt_ms": round(self.prompt_ms, 3),
            "first_token_ms": round(self.first_token_ms, 3),
            "prompt_per_second": _r(self.prompt_tps),
            "generated_tokens": self.generated_tokens, "generation_ms": round(self.generation_ms, 3),
            "generation_per_second": _r(self.generation_tps),
        }


def _r(x: float | None) -> float | None:
    return round(x, 3) if x is not None else None


@dataclass
class Completion:
    text: str
    metadata: str
    finish_reason: str  # "stop", "tool_calls" (ended by <|observation|>), "length", "interrupted"
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    timings: Timings
    tokens: list[int] = field(default_factory=list)
    stop_token: int | None = None

    @property
    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "cached_tokens": self.cached_tokens}


@dataclass
class SpecStats:
    """What prompt-lookup speculation did: steps with a draft, drafted and accepted tokens."""

    steps: int = 0
    drafted: int = 0
    accepted: int = 0

    @property
    def acceptance(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None

    def add(self, other: "SpecStats") -> None:
        self.steps += other.steps
        self.drafted += other.drafted
        self.accepted += other.accepted


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

    def __init__(self, model: "LlamaModel", cache: KVCache, prompt: Sequence[int],
                 params: SamplingParams, *, stop_tokens: set[int], tool_stop: int | None,
                 metadata_line: bool, make_sampler: Any, speculate: int = 0,
                 spec_policy: SpecPolicy | None = None, segment_token: int | None = None) -> None:
        n_ctx = cache.ctx.n_ctx
        if len(prompt) + 1 > n_ctx:
            raise PromptTooLongError(len(prompt), n_ctx)
        if not prompt:
            raise ValueError("empty prompt")
        self._model = model
        self._cache = cache
        self.prompt = list(prompt)
        self.params = params
        self._stops = stop_tokens
        self._tool_stop = tool_stop
        self._shaper = AnswerShaper(metadata_line=metadata_line)
        self._segment_token = segment_token if metadata_line else None
        self._make_sampler = make_sampler
        self.speculate = max(0, speculate)  # prompt-lookup draft tokens per step (0 = off)
        self._policy = spec_policy  # None: draft whenever the lookup finds something
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
        return self._shaper.metadata

    def close(self) -> None:
        """Stop early; ``result`` then holds the partial answer (finish_reason "interrupted")."""
        self._iter.close()

    def complete(self) -> Completion:
        for _ in self._iter:
            pass
        assert self.result is not None
        return self.result

    def _run(self) -> Generator[str, None, None]:
        cache, ctx, model = self._cache, self._cache.ctx, self._model
        timings = Timings()
        text = Utf8Stream()
        pieces: list[str] = []
        generated: list[int] = []
        finish, stop_token = "length", None
        sampler = self._make_sampler(self.params)
        ok = False
        at_yield = False  # the KV cache holds cache.tokens (and maybe draft cells) at a yield
        lookup = PromptLookup(self.prompt) if self.speculate else None
        draft: list[int] = []  # the draft evaluated in the last step, being verified
        row = 0  # the batch row of that step whose logits gave the current token
        try:
            t0 = time.perf_counter()  # a prefix restored from disk counts as prompt time
            kept = cache.prepare(self.prompt)
            ctx.decode(self.prompt[kept:], kept)
            cache.tokens = list(self.prompt)
            t1 = time.perf_counter()
            timings.prompt_tokens = len(self.prompt) - kept
            timings.prompt_ms = (t1 - t0) * 1000
            if self.params.repeat_penalty != 1.0:
                sampler.accept_prompt(self.prompt)
            limit = self.params.max_tokens
            n_ctx = ctx.n_ctx
            tok = sampler.sample(ctx)
            while True:
                if not generated and not timings.first_token_ms:
                    timings.first_token_ms = (time.perf_counter() - t0) * 1000
                if tok in self._stops:
                    finish = "tool_calls" if tok == self._tool_stop else "stop"
                    stop_token = tok
                    break
                generated.append(tok)
                if tok == self._segment_token:
                    self._shaper.new_segment()
                out = self._shaper.feed(text.feed(model.token_bytes(tok)))
                if out:
                    pieces.append(out)
                    at_yield = True
                    yield out
                    at_yield = False
                # The last token is kept in the answer but needs no evaluation; prompt plus
                # answer never exceed the context.
                if (limit is not None and len(generated) >= limit) or len(cache.tokens) + 1 >= n_ctx:
                    break
                if row < len(draft) and tok == draft[row]:
                    # The model chose the drafted token: it is already evaluated, and the next
                    # token comes from the following row of the same call.
                    cache.tokens.append(tok)
                    row += 1
                    self.spec.accepted += 1
                    tok = sampler.sample(ctx, row)
                    continue
                if draft:  # rejected (or used up): drop the cells of the unused draft tokens
                    ctx.remove(0, len(cache.tokens), -1)
                    if self._policy is not None:
                        self._policy.judged(len(draft), row)
                    draft, row = [], 0
                pos = len(cache.tokens)
                if lookup is not None:
                    lookup.extend(generated[len(lookup.tokens) - len(self.prompt):])
                    room = min(n_ctx - pos - 2, (limit - len(generated) - 1) if limit is not None else self.speculate)
                    draft = lookup.draft(min(self.speculate, room))
                    if draft and self._policy is not None and not self._policy.want(1, 1, len(draft)):
                        draft = []
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
            timings.generated_tokens = len(generated)
            timings.generation_ms = (time.perf_counter() - t1) * 1000 if "t1" in locals() else 0.0
            sampler.close()
            if draft and (ok or at_yield):
                ctx.remove(0, len(cache.tokens), -1)  # cells of draft tokens never confirmed
            if not ok:
                if not at_yield:
                    # Interrupted inside a llama.cpp call: what the KV cache holds is no longer
                    # known exactly, so the next prompt starts from scratch.
                    cache.reset()
                # Stopped early (Ctrl-C, the consumer closed us): keep what was produced.
                self.result = Completion(
                    text="".join(pieces), metadata=self._shaper.metadata,
                    finish_reason="interrupted", prompt_tokens=len(self.prompt),
                    cached_tokens=len(self.prompt) - timings.prompt_tokens,
                    completion_tokens=len(generated), timings=timings, tokens=generated)
        tail = self._shaper.feed(text.finish()) + self._shaper.finish()
        if tail:
            pieces.append(tail)
            yield tail
        self.result = Completion(
            text="".join(pieces), metadata=self._shaper.metadata, finish_reason=finish,
            prompt_tokens=len(self.prompt), cached_tokens=len(self.prompt) - timings.prompt_tokens,
            completion_tokens=len(generated), timings=timings, tokens=generated,
            stop_token=stop_token,
        )
        if cache.disk is not None:  # kept for later processes (promptcache.py), after the timings
            cache.disk.save_single(cache)
