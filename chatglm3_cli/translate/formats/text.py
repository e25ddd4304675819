"""Plain text: each paragraph (a run of non-blank lines) is a unit; blank lines, indentation
and line endings stay as they are."""
from __future__ import annotations

import re

from .base import COMMON_PROTECT, Document, Unit, has_words, protect, split_lines

_PROTECT = re.compile(COMMON_PROTECT + r"|(?:https?|ftp)://[^\s<>\"]*[^\s<>\".,;:!?')\]]")


def parse_text(text: str) -> Document:
    units: list[Unit] = []
    lines = split_lines(text)
    i = 0
    while i < len(lines):
        if not lines[i][1].strip():
            i += 1
            continue
        j = i
        while j < len(lines) and lines[j][1].strip():
            j += 1
        para = lines[i:j]
        first_off, first, _ = para[0]
        lead = len(first) - len(first.lstrip())
        start = first_off + lead
        last_off, last, _ = para[-1]
        end = last_off + len(last.rstrip())
        contents = [first.strip() if len(para) == 1 else first[lead:]]
        prefixes = []
        for k, (_, body, _) in enumerate(para[1:], 1):
            ind = len(body) - len(body.lstrip())
            prefixes.append(body[:ind])
            contents.append(body[ind:].rstrip() if k == len(para) - 1 else body[ind:])
        raw = "\n".join(contents).rstrip()
        protected, values = protect(raw, _PROTECT)
        newline = para[0][2] or "\n"
        if has_words(protected):
            units.append(Unit(index=len(units), kind="paragraph", text=protected, start=start, end=end,
                              line_prefixes=prefixes, cont_prefix=prefixes[0] if prefixes else first[:lead],
                              newline=newline, placeholders=values, line=i + 1))
        i = j
    return Document("txt", text, units)
