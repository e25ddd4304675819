"""Is this answer a translation of that unit? The checks every answer passes before it is kept.

``chunks.parse_answer`` splits an answer by its unit markers and checks the placeholders (each
of the source's exactly once, none invented). What a weak model does beyond that, seen with
SmolLM2-135M (docs/real-model-findings.md), is checked here:

- it answers with our instructions instead of a translation ("The text is plain text. Keep the
  line breaks inside a unit."): any run of five words of the instructions, or any whole
  sentence of them, that the source does not contain rejects the answer;
- it leaves debris of the request's syntax: unit markers (``[2]``), single-brace numbers
  (``{1}``), braces or brackets the source does not have;
- it answers with far more (or far less) than the source: the length must be plausible.

A rejected answer is a ``Mismatch``: the pipeline retries smaller, then the unit alone, then
counts it as failed. Nothing rejected is written.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Sequence

from .chunks import Mismatch, Piece
from .formats.base import PLACEHOLDER_RE

SHINGLE = 5  # words: shorter runs occur in ordinary text ("the text is")
MIN_SENTENCE_WORDS = 3
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+|\n+")
_UNIT_MARKER = re.compile(r"\[\d+\]")
_LOOSE_NUMBER = re.compile(r"\{\s*\d+\s*\}")
_GLOSSARY_PAIR = re.compile(r"^\s*- .*→")  # glossary.block(): "- term → translation"
_AROUND_PLACEHOLDER = re.compile(r"\s*(\{\{\d+\}\})\s*")


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(PLACEHOLDER_RE.sub(" ", text))]


def _shingles(words: Sequence[str]) -> set[tuple[str, ...]]:
    return {tuple(words[k:k + SHINGLE]) for k in range(len(words) - SHINGLE + 1)}


class InstructionEcho:
    """What of the instructions an answer must not repeat: their five-word runs and sentences."""

    def __init__(self, instructions: str) -> None:
        # per line, and without the glossary's pairs: their translations belong in answers
        lines = [line for line in instructions.splitlines() if not _GLOSSARY_PAIR.match(line)]
        self.shingles: set[tuple[str, ...]] = set()
        for line in lines:
            self.shingles |= _shingles(_words(line))
        self.sentences: list[tuple[str, ...]] = []
        for sent in _SENTENCE_END.split("\n".join(lines)):
            words = tuple(_words(sent))
            if len(words) >= MIN_SENTENCE_WORDS:
                self.sentences.append(words)

    def echoed(self, source: str, answer: str) -> str | None:
        """The echoed part of the instructions, or None. What the source itself says is allowed."""
        got = _words(answer)
        if not got:
            return None
        src = _words(source)
        overlap = _shingles(got) & self.shingles
        if overlap - _shingles(src):
            return " ".join(sorted(overlap - _shingles(src))[0])
        joined, src_joined = " " + " ".join(got) + " ", " " + " ".join(src) + " "
        for sent in self.sentences:
            s = " " + " ".join(sent) + " "
            if s in joined and s not in src_joined:
                return s.strip()
        return None


def weight(text: str) -> int:
    """Visible characters, wide ones (CJK, kana, Hangul) counted twice: a Chinese sentence is
    about half as many characters as its English one, and this keeps their weights close."""
    n = 0
    for c in PLACEHOLDER_RE.sub("", text):
        if c.isspace():
            continue
        n += 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1
    return n


def plausible_length(source: str, answer: str) -> str | None:
    """Why the answer's length cannot be a translation of the source, or None."""
    src, ans = weight(source), weight(answer)
    if ans > 3 * src + 30:
        return f"the answer is too long for its source ({ans} characters for {src})"
    if ans * 5 / 2 + 5 < src:  # under 40% less 2; SmolLM2 at -t 0.7: "Mignonette." for a 7-word sentence
        return f"the answer is too short for its source ({ans} characters for {src})"
    return None


def _count(chars: str, text: str) -> int:
    return sum(text.count(c) for c in chars)


def debris(source: str, answer: str) -> str | None:
    """Request syntax left in the answer: unit markers, loose {n}, extra braces or brackets."""
    ans = PLACEHOLDER_RE.sub("", answer)
    src = PLACEHOLDER_RE.sub("", source)
    m = _UNIT_MARKER.search(ans)
    if m:
        return f"a unit marker is left in the answer ({m.group(0)})"
    m = _LOOSE_NUMBER.search(ans)
    if m and m.group(0) not in src:
        return f"a broken placeholder is left in the answer ({m.group(0)})"
    for pair in ("{}", "[]"):
        if _count(pair, ans) > _count(pair, src):
            return f"the answer has {pair[0]}{pair[1]} the source does not have"
    if ans.count("*") != src.count("*"):  # Markdown emphasis: SmolLM2 dropped a **bold phrase**
        return f"the answer has {ans.count('*')} '*' where the source has {src.count('*')} (markup dropped or added)"
    return None


def wordy(text: str) -> bool:
    """Enough letters that an identical answer means "not translated", not a name or a number."""
    return sum(c.isalpha() for c in text) >= 8


def same_text(a: str, b: str) -> bool:
    """The same words and placeholders (SmolLM2 gave "models {{2}}" for "models{{2}}")."""
    def norm(t: str) -> str:
        return " ".join(_AROUND_PLACEHOLDER.sub(r"\1", t).split())
    return norm(a) == norm(b)


def check(piece: Piece, translation: str, echo: InstructionEcho) -> None:
    """Raise Mismatch when ``translation`` is not a translation of ``piece``."""
    reason = debris(piece.text, translation)
    if reason is None:
        found = echo.echoed(piece.text, translation)
        if found is not None:
            reason = f"the answer repeats the instructions (\"{found}\")"
    if reason is None:
        reason = plausible_length(piece.text, translation)
    if reason is not None:
        raise Mismatch(reason)


def check_all(pieces: Sequence[Piece], translations: Sequence[str], echo: InstructionEcho) -> None:
    for p, tr in zip(pieces, translations, strict=True):
        check(p, tr, echo)
