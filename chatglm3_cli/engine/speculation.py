"""Prompt-lookup drafts: guess the next tokens from an earlier occurrence of the last few.

Translations that keep code, rewrites, extractions and summaries copy long spans of their
input. When the last n tokens (prompt and answer so far) occurred before, the tokens that
followed them then are a cheap guess for what follows now. The engine evaluates the guess
together with the current token in one decode call and keeps the longest prefix that the
model's own sampling confirms (generate.py, decoder.py), so the output is what it would
have been without guessing.

Also here: ``SpecPolicy`` (whether drafting pays on this machine, from the measured step
costs) and ``SpecStats`` (what drafting did in one answer).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .step_costs import StepTimes

NGRAM_MAX = 4
NGRAM_MIN = 2


class PromptLookup:
    """An index of the n-grams (NGRAM_MIN..NGRAM_MAX tokens) of a growing token sequence."""

    def __init__(self, tokens: Sequence[int] = (), *, ngram_max: int = NGRAM_MAX,
                 ngram_min: int = NGRAM_MIN) -> None:
        self.tokens: list[int] = []
        self.ngram_max, self.ngram_min = ngram_max, ngram_min
        # n -> {n-gram: index just after its latest occurrence that ends before the last token}
        self._index: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in range(ngram_min, ngram_max + 1)}
        self.extend(tokens)

    def extend(self, tokens: Sequence[int]) -> None:
        for t in tokens:
            # Index the n-grams ending at the current last token before appending: the query
            # (the n-gram ending at the new last token) must find an earlier occurrence.
            end = len(self.tokens)
            for n, index in self._index.items():
                if end >= n:
                    index[tuple(self.tokens[end - n:end])] = end
            self.tokens.append(t)

    def draft(self, k: int) -> list[int]:
        """Up to k tokens that followed the latest earlier occurrence of the longest matching
        suffix (empty when there is none)."""
        if k <= 0:
            return []
        toks, end = self.tokens, len(self.tokens)
        for n in range(self.ngram_max, self.ngram_min - 1, -1):
            if end < n:
                continue
            at = self._index[n].get(tuple(toks[end - n:end]))
            if at is not None:
                return toks[at:at + k]
        return []


class SpecPolicy:
    """Whether drafting pays here, decided from measured decode-step times.

    A step that also evaluates d draft tokens costs what this CPU's kernels charge for d more
    rows: about nothing where llama.cpp multiplies rows in groups of four (an AMX CPU: 4 rows
    in 281 ms against 338 ms for one), 3.4x on two AVX2 cores (420 against 123 ms). So the
    engine times its own steps by row count, keeps the rate at which drafts are accepted, and
    drafts only while (tokens a step yields) / (its time) beats a step without a draft. Until
    both times are known it drafts (to measure), and after RETRY declined drafts it tries once
    more (the text may have started copying); each try that finds drafting still not paying
    doubles that wait (up to RETRY_MAX), so where it never pays the tries cost next to nothing."""

    RETRY = 32
    RETRY_MAX = 1024
    ALPHA = 0.2  # weight of a new measurement in the moving average of the acceptance rate

    def __init__(self, times: StepTimes | None = None) -> None:
        self.times = times or StepTimes()  # shared with the decoder's row padding
        self.rate = 0.5  # accepted / drafted tokens, moving average
        self._declined = 0
        self._retry = self.RETRY

    def want(self, rows: int, tokens: int, draft: int) -> bool:
        """Whether to add `draft` rows to a step of `rows` rows that yields `tokens` tokens."""
        base, more = self.times.cost(rows), self.times.cost(rows + draft)
        if more is None:
            return True
        if base is None:  # every step had a draft so far: now and then time one without
            self._declined += 1
            return self._declined % 8 != 0
        if (tokens + self.rate * draft) / more >= tokens / base:
            self._retry = self.RETRY
            return True
        self._declined += 1
        if self._declined >= self._retry:
            self._declined = 0
            self._retry = min(2 * self._retry, self.RETRY_MAX)
            return True
        return False

    def timed(self, rows: int, seconds: float) -> None:
        self.times.timed(rows, seconds)

    def judged(self, drafted: int, accepted: int) -> None:
        if drafted:
            self.rate += self.ALPHA * (accepted / drafted - self.rate)


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
