"""The shape every format parses into: the source text, and the units to translate.

A document is its exact source text plus a list of units. Each unit owns a region of the text
(``start``..``end``) and everything outside the regions is copied to the output unchanged, so
code, front matter, timings and layout are byte-for-byte the input's by construction. Inside a
region the model sees only ``text``: the unit's lines without their prefixes (quote markers,
list indentation), with protected spans (inline code, URLs, tags) replaced by ``{{n}}``.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Callable

from ...errors import InputError

PLACEHOLDER_RE = re.compile(r"\{\{(\d+)\}\}")
LINE_RE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n|$)")

# Protected in every format: our own placeholder syntax if the text happens to contain it, and
# bracketed numbers, which would read as the unit markers of the request ("[3] ...").
COMMON_PROTECT = r"\{\{\d+\}\}|\[\d+\]"


class DocumentFormatError(InputError):
    """The file is not what its extension says (a broken EPUB, catalogue, JSON or YAML file)."""


def split_lines(text: str) -> list[tuple[int, str, str]]:
    """(offset, content, line ending) for every line; the ending is "" on an unterminated last line."""
    out = []
    pos = 0
    n = len(text)
    while pos < n:
        m = LINE_RE.match(text, pos)
        assert m is not None
        line = m.group(0)
        body = line.rstrip("\r\n")
        out.append((pos, body, line[len(body):]))
        pos = m.end()
    return out


def has_words(text: str) -> bool:
    """Worth sending to the model: some letter outside placeholders."""
    return any(unicodedata.category(c).startswith("L") for c in PLACEHOLDER_RE.sub("", text))


def protect(text: str, pattern: re.Pattern[str]) -> tuple[str, dict[str, str]]:
    """Replace every match of pattern with a numbered placeholder; return the map to restore."""
    values: dict[str, str] = {}

    def sub(m: re.Match[str]) -> str:
        token = f"{{{{{len(values) + 1}}}}}"
        values[token] = m.group(0)
        return token

    return pattern.sub(sub, text), values


@dataclass
class Unit:
    index: int
    kind: str  # paragraph, heading, item, cell, cue
    text: str  # what the model sees
    start: int  # the region of the source this unit's translation replaces
    end: int
    line_prefixes: list[str] = field(default_factory=list)  # source prefixes of lines 2.. in the region
    cont_prefix: str = ""  # prefix for lines beyond the source's line count
    newline: str = "\n"
    placeholders: dict[str, str] = field(default_factory=dict)
    single_line: bool = False  # table cells, headings
    bilingual: str = "block"  # block: blank line between; lines: next line; inline: inline_sep
    inline_sep: str = " / "
    line: int = 1  # 1-based line of the region's start, for messages
    where: str = ""  # the document inside the file (an EPUB's chapter), for messages
    escape: Callable[[str], str] | None = None  # the translation as the format writes text (HTML: &lt;)
    quote: Callable[[str], str] | None = None  # the restored translation as a string literal (JSON, YAML)
    check: Callable[[str], str | None] | None = None  # the format's own test of an answer: why it is not one
    # bilingual: the element around the unit (start of its start tag, end of its end tag) that is
    # repeated after itself, with inline_sep between, holding the translation (HTML paragraphs)
    block: tuple[int, int] | None = None
    block_open: str = ""  # the copy's text from the element's start to the unit (ids left out)

    def restore(self, translated: str) -> str:
        return PLACEHOLDER_RE.sub(lambda m: self.placeholders.get(m.group(0), m.group(0)), translated)

    def render(self, translated: str, *, first_prefix: str | None = None) -> str:
        text = translated
        if self.single_line:
            text = " ".join(part.strip() for part in text.split("\n") if part.strip())
        if self.kind == "cell":
            text = re.sub(r"(?<!\\)\|", r"\\|", text)
        if self.escape is not None:
            text = self.escape(text)
        lines = self.restore(text).split("\n")
        same = len(lines) == len(self.line_prefixes) + 1 and first_prefix is None
        out = [lines[0]]
        for k, line in enumerate(lines[1:]):
            out.append(self.newline + (self.line_prefixes[k] if same else self.cont_prefix) + line)
        return self.quote("".join(out)) if self.quote is not None else "".join(out)

    def render_bilingual(self, source_region: str, translated: str) -> str:
        if self.bilingual == "inline":
            return source_region + self.inline_sep + self.render(translated)
        if self.bilingual == "lines":
            return source_region + self.newline + self.cont_prefix + self.render(translated, first_prefix="")
        blank = self.cont_prefix.rstrip()
        return (source_region + self.newline + blank + self.newline + self.cont_prefix
                + self.render(translated, first_prefix=""))


@dataclass
class Document:
    fmt: str
    text: str
    units: list[Unit]
    bom: bool = False
    # (line, excerpt) of text the parser saw but could not map exactly: left as it is, reported
    unmapped: list[tuple[int, str]] = field(default_factory=list)
    # (start, end, text): replacements that do not depend on the model (a locale file's own
    # locale), made when anything is translated; never inside a unit
    fixed: list[tuple[int, int, str]] = field(default_factory=list)

    def source_of(self, unit: Unit) -> str:
        """The unit's region of the source, as the user wrote it (for messages)."""
        return self.text[unit.start:unit.end]

    def to_bytes(self, translations: dict[int, str], *, bilingual: bool = False) -> bytes:
        """What the output file holds."""
        return self.render(translations, bilingual=bilingual).encode("utf-8")

    def render(self, translations: dict[int, str], *, bilingual: bool = False,
               upto: int | None = None) -> str:
        """The output text. Units without a translation keep their source text. With ``upto``,
        stop at the end of the line where unit ``upto`` ends (a preview)."""
        parts: list[str] = []
        pos = 0
        stop = len(self.text)
        fixed = sorted(self.fixed) if translations else []

        def copy_to(end: int) -> None:  # the source up to ``end``, with fixed replacements
            nonlocal pos
            while fixed and fixed[0][0] < end:
                a, b, new = fixed.pop(0)
                parts.append(self.text[pos:a] + new)
                pos = b
            parts.append(self.text[pos:end])

        for u in self.units:
            if upto is not None and u.index > upto:
                break
            copy_to(u.start)
            src = self.text[u.start:u.end]
            tr = translations.get(u.index)
            if tr is None:
                parts.append(src)
            elif bilingual and u.block is not None:
                b0, b1 = u.block
                after = self.text[u.end:b1]
                parts.append(src + after + u.inline_sep + u.block_open + u.render(tr) + after)
            elif bilingual:
                parts.append(u.render_bilingual(src, tr))
            else:
                parts.append(u.render(tr))
            pos = u.end if not (bilingual and tr is not None and u.block is not None) else u.block[1]
            if upto is not None and u.index == upto:
                m = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)?").match(self.text, pos)
                stop = m.end() if m else pos
        copy_to(stop)
        out = "".join(parts)
        return ("\ufeff" + out) if self.bom else out
