"""SubRip (.srt) and WebVTT (.vtt): only cue text goes to the model; numbering, identifiers,
timings, settings, NOTE/STYLE/REGION blocks and blank lines are copied byte-for-byte, so the
number of cues and every timing stay identical. Each cue is one unit, and its translation goes
back into that cue. Formatting tags (<i>, <v Speaker>, {\\an8}) are placeholders."""
from __future__ import annotations

import re

from ...errors import SubtitleFormatError
from .base import COMMON_PROTECT, Document, Unit, has_words, protect, split_lines

_TIME = r"(?:\d{1,3}:)?\d{1,2}:\d{2}[,.]\d{1,3}"
SRT_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}(?:\s.*)?$")
VTT_TIMING = re.compile(rf"^\s*{_TIME}\s+-->\s+{_TIME}(?:[ \t].*)?$")
_INDEX = re.compile(r"^\s*\d+\s*$")
_PROTECT = re.compile(COMMON_PROTECT + r"|</?[A-Za-z][^<>\n]*>|<\d[\d:.]*>|\{\\[^{}\n]*\}")


def _cue(units: list[Unit], lines: list[tuple[int, str, str]], first: int, last: int) -> None:
    """Cue text lines first..last (inclusive) become one unit."""
    if last < first:
        return
    raw = "\n".join(lines[k][1] for k in range(first, last + 1))
    protected, values = protect(raw, _PROTECT)
    if not has_words(protected):
        return
    start = lines[first][0]
    end = lines[last][0] + len(lines[last][1])
    prefixes = ["" for _ in range(first + 1, last + 1)]
    units.append(Unit(index=len(units), kind="cue", text=protected, start=start, end=end,
                      line_prefixes=prefixes, cont_prefix="", newline=lines[first][2] or "\n",
                      placeholders=values, bilingual="lines", line=first + 1))


def parse_srt(text: str, source: str = "input") -> Document:
    lines = split_lines(text)
    units: list[Unit] = []
    i = 0
    n = len(lines)
    cues = 0
    while i < n:
        body = lines[i][1]
        if not body.strip():
            i += 1
            continue
        if not _INDEX.match(body):
            raise SubtitleFormatError(
                f"{source}: line {i + 1}: expected a cue number, found {body.strip()[:40]!r}",
                hint="fix the subtitle file (each cue is a number, a timing line and its text)")
        if i + 1 >= n or not SRT_TIMING.match(lines[i + 1][1]):
            found = lines[i + 1][1].strip()[:40] if i + 1 < n else "the end of the file"
            raise SubtitleFormatError(
                f"{source}: line {i + 2}: expected a timing line like "
                f"'00:00:01,000 --> 00:00:02,500' after cue {body.strip()}, found {found!r}",
                hint="fix the subtitle file (each cue is a number, a timing line and its text)")
        cues += 1
        j = i + 2
        while j < n and lines[j][1].strip():
            # Tolerate a missing blank line between cues: a number followed by a timing line.
            if _INDEX.match(lines[j][1]) and j + 1 < n and SRT_TIMING.match(lines[j + 1][1]):
                break
            j += 1
        _cue(units, lines, i + 2, j - 1)
        i = j
    if cues == 0:
        raise SubtitleFormatError(f"{source}: no subtitle cues found", hint="is this an .srt file?")
    return Document("srt", text, units)


def parse_vtt(text: str, source: str = "input") -> Document:
    lines = split_lines(text)
    if not lines or not re.match(r"^WEBVTT(?:[ \t].*)?$", lines[0][1]):
        raise SubtitleFormatError(f"{source}: line 1: a WebVTT file starts with 'WEBVTT'")
    units: list[Unit] = []
    n = len(lines)
    i = 1
    while i < n and lines[i][1].strip():  # the header block
        i += 1
    while i < n:
        if not lines[i][1].strip():
            i += 1
            continue
        j = i
        while j < n and lines[j][1].strip():
            j += 1
        block = lines[i:j]
        head = block[0][1]
        if re.match(r"^(NOTE|STYLE|REGION)(?:[ \t]|$)", head):
            i = j
            continue
        if "-->" in head:
            timing = i
        elif len(block) > 1 and "-->" in block[1][1]:
            timing = i + 1
        else:
            raise SubtitleFormatError(
                f"{source}: line {i + 1}: expected a cue (an optional identifier, then a timing "
                f"line like '00:00:01.000 --> 00:00:02.500'), found {head.strip()[:40]!r}")
        if not VTT_TIMING.match(lines[timing][1]):
            raise SubtitleFormatError(
                f"{source}: line {timing + 1}: malformed timing line {lines[timing][1].strip()[:60]!r}")
        _cue(units, lines, timing + 1, j - 1)
        i = j
    return Document("vtt", text, units)
