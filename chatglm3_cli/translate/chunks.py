"""Units into requests and answers back into units.

A chunk is a run of whole units (split at sentence boundaries only when one unit alone is over
the token budget), sent as numbered lines::

    [1] first unit
    [2] second unit, which may span
    several lines

The answer is parsed back by those markers after model chatter is removed. An answer is valid
only when it has exactly the ids sent, in order, and every unit keeps its placeholders; anything
else is a mismatch and the pipeline retries smaller.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

from .formats.base import PLACEHOLDER_RE, Unit


@dataclass(frozen=True)
class Piece:
    """One numbered line of a request: a whole unit, or one part of a unit split apart."""

    unit: int  # Unit.index
    part: int  # 0 for a whole unit
    text: str
    tokens: int
    sep: str = ""  # the source whitespace after this part (when the unit was split)
    single_line: bool = False


class Mismatch(Exception):
    """An answer that does not fit the request; the pipeline retries smaller."""


# Sentence ends: Latin punctuation followed by space, or CJK punctuation.
_SENTENCE = re.compile(r"(?<=[.!?;:…])[\"'”’)\]]*\s+|(?<=[。！？；…])[”’」』）]*\s*|\n+")


def split_sentences(text: str) -> list[tuple[str, str]]:
    """(sentence, whitespace after it); joining them gives the text back exactly."""
    out = []
    pos = 0
    for m in _SENTENCE.finditer(text):
        # closing quotes belong to the sentence, the whitespace after them does not
        ws = re.search(r"\s*$", m.group(0))
        sent_end = m.start() + (ws.start() if ws else len(m.group(0)))
        if sent_end <= pos:
            continue
        out.append((text[pos:sent_end], text[sent_end:m.end()]))
        pos = m.end()
    if pos < len(text):
        out.append((text[pos:], ""))
    return [(s, w) for s, w in out if s] or [(text, "")]


def make_pieces(units: Sequence[Unit], count: Callable[[str], int], budget: int) -> list[Piece]:
    """Whole units as pieces; a unit over the budget is split at sentence boundaries (and a
    sentence still over it, at spaces or at a fixed width).

    Parts are filled by adding up the token counts of their fragments, each counted once:
    counting the growing part again at every word tokenized a 1 MB paragraph ~300 times over
    (74 s). A sum can differ from the count of the joined text by a token at each seam, so each
    finished part is counted once more and split again in the rare case it is over."""
    pieces: list[Piece] = []
    for u in units:
        n = count(u.text)
        if n <= budget:
            pieces.append(Piece(u.index, 0, u.text, n, single_line=u.single_line))
            continue
        frags = [f for sent, ws in split_sentences(u.text) for f in _hard_split(sent, ws, count, budget)]
        parts = _fill(frags, count, budget)
        for k, (text, sep, tokens) in enumerate(parts):
            pieces.append(Piece(u.index, k, text, tokens, sep=sep if k < len(parts) - 1 else "",
                                single_line=u.single_line))
    return pieces


def _fill(frags: Sequence[tuple[str, str, int]], count: Callable[[str], int],
          budget: int) -> list[tuple[str, str, int]]:
    """Consecutive fragments (text, whitespace after, tokens) joined into parts of at most
    ``budget`` tokens: (text, whitespace after, tokens)."""
    parts: list[tuple[str, str, int]] = []
    cur, cur_sep, cur_tokens = "", "", 0
    for frag, frag_ws, tokens in frags:
        if cur and cur_tokens + tokens > budget:
            parts.append((cur, cur_sep, cur_tokens))
            cur, cur_sep, cur_tokens = frag, frag_ws, tokens
        else:
            cur = cur + cur_sep + frag if cur else frag
            cur_sep, cur_tokens = frag_ws, cur_tokens + tokens
    if cur:
        parts.append((cur, cur_sep, cur_tokens))
    out: list[tuple[str, str, int]] = []
    for text, sep, _ in parts:
        real = count(text)
        if real > budget:  # the seams added tokens: split this part again, a little tighter
            tighter = max(1, budget * 3 // 4)
            sub = _hard_split(text, sep, count, tighter)
            if len(sub) > 1:
                out.extend(_fill(sub, count, tighter))
                continue
        out.append((text, sep, real))
    return out


def _hard_split(sent: str, ws: str, count: Callable[[str], int], budget: int) -> list[tuple[str, str, int]]:
    """A sentence as fragments (text, whitespace after, tokens) of at most ``budget`` tokens."""
    n = count(sent)
    if n <= budget:
        return [(sent, ws, n)]
    words = re.findall(r"\S+\s*", sent)
    if len(words) <= 1:  # no spaces (CJK): a fixed width, never inside a placeholder
        width = max(8, len(sent) * budget // max(n, 1))
        words, pos = [], 0
        while pos < len(sent):
            end = min(len(sent), pos + width)
            m = PLACEHOLDER_RE.search(sent, max(pos, end - 8), end + 8)
            if m and m.start() < end < m.end():
                end = m.end()
            words.append(sent[pos:end])
            pos = end
    out: list[tuple[str, str, int]] = []
    cur, cur_tokens = "", 0
    for w in words:
        tokens = count(w)
        if cur and cur_tokens + tokens > budget:
            body = cur.rstrip()
            out.append((body, cur[len(body):], cur_tokens))
            cur, cur_tokens = w, tokens
        else:
            cur, cur_tokens = cur + w, cur_tokens + tokens
    body = cur.rstrip()
    out.append((body, cur[len(body):] + ws, cur_tokens))
    return out


def build_chunks(pieces: Sequence[Piece], budget: int, max_units: int) -> list[list[Piece]]:
    """Consecutive pieces up to ``budget`` tokens and ``max_units`` pieces per chunk."""
    chunks: list[list[Piece]] = []
    cur: list[Piece] = []
    total = 0
    for p in pieces:
        cost = p.tokens + 4  # the "[n] " marker and the newline
        if cur and (total + cost > budget or len(cur) >= max_units):
            chunks.append(cur)
            cur, total = [], 0
        cur.append(p)
        total += cost
    if cur:
        chunks.append(cur)
    return chunks


def format_request(pieces: Sequence[Piece]) -> str:
    return "\n".join(f"[{k}] {p.text}" for k, p in enumerate(pieces, 1))


# Model chatter before (or after) the translation: "以下是翻译：", "Here is the translation:".
_CHATTER = re.compile(
    r"^\s*(?:(?:好的|当然|没问题)[，,！!。.]?\s*)?(?:以下是|下面是|这是)?[^\n]{0,20}?(?:翻译|译文)(?:结果|内容|如下)?[^\n]{0,12}?[：:]\s*$"
    r"|^\s*(?:sure|okay|ok|certainly|of course)?[,!.]?\s*(?:here\s+(?:is|are)|below\s+is)[^\n]{0,60}?"
    r"(?:translation|translated)[^\n]{0,40}?[:：.]?\s*$"
    r"|^\s*(?:translation|translated text|译文|翻译)\s*[：:]\s*$",
    re.IGNORECASE)
_CHATTER_PREFIX = re.compile(r"^\s*(?:译文|翻译|translation)\s*[：:]\s*", re.IGNORECASE)
_MARKER = re.compile(r"^[ \t]*\[(\d+)\][ \t]?", re.MULTILINE)
_FENCE = re.compile(r"\A\s*```[^\n]*\n(.*?)\n```\s*\Z", re.DOTALL)


def strip_chatter(answer: str) -> str:
    text = answer.strip()
    m = _FENCE.match(text)
    if m:
        text = m.group(1).strip()
    lines = text.split("\n")
    while lines and (not lines[0].strip() or _CHATTER.match(lines[0])):
        lines.pop(0)
    while lines and (not lines[-1].strip() or _CHATTER.match(lines[-1])):
        lines.pop()
    text = "\n".join(lines).strip()
    return _CHATTER_PREFIX.sub("", text, count=1) if not _MARKER.match(text) else text


def parse_answer(answer: str, pieces: Sequence[Piece]) -> list[str]:
    """The translation of each piece, in order; raises Mismatch."""
    text = strip_chatter(answer)
    n = len(pieces)
    marks = list(_MARKER.finditer(text))
    if not marks:
        if n == 1 and text:
            return [_check(pieces[0], text)]  # one unit may come back without its marker
        raise Mismatch("the answer has no [n] markers" if text else "the answer is empty")
    ids = [int(m.group(1)) for m in marks]
    if ids != list(range(1, n + 1)):
        raise Mismatch(f"expected units 1..{n}, the answer has {_describe(ids)}")
    out = []
    for k, m in enumerate(marks):
        end = marks[k + 1].start() if k + 1 < len(marks) else len(text)
        out.append(_check(pieces[k], text[m.end():end].strip()))
    return out


def _describe(ids: list[int]) -> str:
    if len(ids) > 8:
        return f"{len(ids)} markers ({', '.join(map(str, ids[:8]))}, ...)"
    return f"[{'], ['.join(map(str, ids))}]" if ids else "none"


def _check(piece: Piece, translation: str) -> str:
    if not translation.strip():
        raise Mismatch("the translation is empty")
    want = Counter(PLACEHOLDER_RE.findall(piece.text))
    got = Counter(PLACEHOLDER_RE.findall(translation))
    if want != got:
        missing = sorted(set(want) - set(got), key=int)
        extra = sorted(set(got) - set(want), key=int)
        what = []
        if missing:
            what.append("missing " + ", ".join(f"{{{{{m}}}}}" for m in missing))
        if extra:
            what.append("unknown " + ", ".join(f"{{{{{m}}}}}" for m in extra))
        if not what:
            what.append("placeholders repeated or dropped")
        raise Mismatch(f"placeholders changed ({'; '.join(what)})")
    return translation


def join_parts(parts: Sequence[tuple[str, str]], spaced: bool) -> str:
    """Translations of the parts of one split unit, joined as the source parts were."""
    out = []
    for k, (text, sep) in enumerate(parts):
        out.append(text)
        if k < len(parts) - 1:
            if "\n" in sep:
                out.append(sep)
            else:
                out.append(" " if spaced else "")
    return "".join(out)
