"""Markdown: headings, paragraphs, list items, table cells and link texts are translated; front
matter, code (fenced, indented, inline), HTML, URLs, link targets, images and table layout are
copied byte-for-byte.

markdown-it-py finds the blocks and their lines; the regions themselves are located in the
source text, so whatever the parser does not hand us (prefixes, markers, padding) stays as it
was. Inside a unit, inline code, images, link targets, autolinks, HTML tags and bare URLs
become placeholders that must come back unchanged.
"""
from __future__ import annotations

import re

from .base import COMMON_PROTECT, Document, Unit, has_words, protect, split_lines

_PROTECT = re.compile("|".join([
    COMMON_PROTECT,
    r"``[^\n]+?``|`[^`\n]+`",  # inline code
    r"!\[[^\]\n]*\]\((?:[^()\n]|\([^()\n]*\))*\)",  # image ![alt](src "title")
    r"!\[[^\]\n]*\]\[[^\]\n]*\]",  # reference image
    r"(?<=\])\((?:[^()\n]|\([^()\n]*\))*\)",  # link target (url "title") after [text]
    r"(?<=\])\[[^\]\n]*\]",  # reference link label after [text]
    r"\[\^[^\]\n]+\]",  # footnote reference
    r"<(?:https?|ftp|mailto):[^>\s]+>",  # autolink
    r"<!--.*?-->",  # HTML comment
    r"</?[A-Za-z][A-Za-z0-9-]*(?:\s[^<>\n]*)?/?>",  # inline HTML tag
    r"(?:https?|ftp)://[^\s<>`\"]*[^\s<>`\".,;:!?')\]*_]",  # bare URL
    r"\\[\\`*_{}\[\]()#+\-.!|]",  # backslash escapes
    r"&(?:[A-Za-z][A-Za-z0-9]*|#\d+|#x[0-9A-Fa-f]+);",  # entities
]), re.DOTALL)

_FRONT_MATTER = re.compile(r"\A(?:---|\+\+\+)[ \t]*\r?\n")


def _front_matter_lines(lines: list[tuple[int, str, str]]) -> int:
    """How many lines a YAML (---) or TOML (+++) front matter block takes at the top; 0 if none."""
    if not lines:
        return 0
    fence = lines[0][1].strip()
    if fence not in ("---", "+++") or lines[0][1] != lines[0][1].rstrip() or not lines[0][2]:
        return 0
    closers = ("---", "...") if fence == "---" else ("+++",)
    for i in range(1, len(lines)):
        if lines[i][1].rstrip() in closers:
            return i + 1
    return 0


def _split_cells(row: str) -> list[tuple[int, int]]:
    """(start, end) of each cell's text in a table row, split on pipes outside code and escapes."""
    bounds = []
    start = 0
    i = 0
    in_code = 0
    while i < len(row):
        c = row[i]
        if c == "\\":
            i += 2
            continue
        if c == "`":
            j = i
            while j < len(row) and row[j] == "`":
                j += 1
            run = j - i
            if in_code == 0:
                if row.find("`" * run, j) >= 0:
                    in_code = run
            elif run == in_code:
                in_code = 0
            i = j
            continue
        if c == "|" and not in_code:
            bounds.append((start, i))
            start = i + 1
        i += 1
    bounds.append((start, len(row)))
    out = []
    for s, e in bounds:
        seg = row[s:e]
        lead = len(seg) - len(seg.lstrip())
        body = seg.strip()
        if body:
            out.append((s + lead, s + lead + len(body)))
    return out


def _continuation(prefix: str) -> str:
    """The prefix of a line that continues a block whose first line had ``prefix``: quote markers
    stay, list markers become spaces ("> - " -> ">   ")."""
    out = []
    for c in prefix:
        out.append(c if c in "> \t" else " ")
    return "".join(out)


def parse_markdown(text: str) -> Document:
    from markdown_it import MarkdownIt

    lines = split_lines(text)
    skip = _front_matter_lines(lines)
    body_lines = lines[skip:]
    body = "".join(b + e for _, b, e in body_lines)
    tokens = MarkdownIt("commonmark").enable("table").enable("strikethrough").parse(body)
    units: list[Unit] = []
    unmapped: list[tuple[int, str]] = []

    def line_at(n: int) -> tuple[int, str, str]:
        return body_lines[n]

    def add(kind: str, start: int, end: int, raw: str, prefixes: list[str], cont: str,
            newline: str, line_no: int, *, single: bool = False, bilingual: str = "block",
            sep: str = " / ") -> None:
        protected, values = protect(raw, _PROTECT)
        if not has_words(protected):
            return
        units.append(Unit(index=len(units), kind=kind, text=protected, start=start, end=end,
                          line_prefixes=prefixes, cont_prefix=cont, newline=newline or "\n",
                          placeholders=values, single_line=single, bilingual=bilingual,
                          inline_sep=sep, line=line_no + skip + 1))

    parent = None
    for t in tokens:
        if t.type in ("paragraph_open", "heading_open"):
            parent = t
            continue
        if t.type == "tr_open" and t.map:
            off, row, nl = line_at(t.map[0])
            for s, e in _split_cells(row):
                add("cell", off + s, off + e, row[s:e], [], "", nl, t.map[0],
                    single=True, bilingual="inline", sep="<br>")
            continue
        if t.type != "inline" or parent is None or not t.map:
            continue
        kind = "heading" if parent.type == "heading_open" else "paragraph"
        content_lines = t.content.split("\n")
        first_line = t.map[0]
        located: list[tuple[int, int]] = []  # (start, end) of each content line in its source line
        for k, c in enumerate(content_lines):
            if first_line + k >= len(body_lines):
                located = []
                break
            off, src, _ = line_at(first_line + k)
            if kind == "heading" and parent.markup.startswith("#"):
                m = re.match(r"[ \t]*#{1,6}(?:[ \t]+|$)", src)
                p = src.find(c, m.end() if m else 0) if c else -1
            elif k == len(content_lines) - 1:
                p = len(src.rstrip()) - len(c)
                if p < 0 or src[p:].rstrip() != c:
                    p = -1
            else:
                p = len(src) - len(c) if src.endswith(c) else -1
            if p < 0 or not c:
                located = []
                break
            located.append((off + p, off + p + len(c)))
        if not located:
            parent = None
            if has_words(t.content):  # a block we cannot map exactly (tabs expanded...) stays as it is
                unmapped.append((first_line + skip + 1, " ".join(t.content.split())[:60]))
            continue
        prefixes = []
        for k in range(1, len(located)):
            off = line_at(first_line + k)[0]
            prefixes.append(text_slice(text, off, located[k][0]))
        first_off = line_at(first_line)[0]
        first_prefix = text_slice(text, first_off, located[0][0])
        cont = prefixes[0] if prefixes else _continuation(first_prefix)
        nl = line_at(first_line)[2]
        single = kind == "heading"
        add(kind, located[0][0], located[-1][1], t.content, prefixes, cont, nl, first_line,
            single=single, bilingual="inline" if single else "block")
        parent = None

    return Document("md", text, units, unmapped=unmapped)


def text_slice(s: str, a: int, b: int) -> str:
    return s[a:b]
