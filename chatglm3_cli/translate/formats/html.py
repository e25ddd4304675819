"""HTML and XHTML: the text of headings, paragraphs, list items, table cells, captions and the
title is translated, and the ``alt`` and ``title`` attributes; tags, other attributes, ids,
comments, entities, scripts, styles, ``<pre>`` and ``<code>`` are copied byte-for-byte.

Python's ``html.parser`` reports every tag, text and entity where it starts in the source, so
each run of text between two block boundaries is a region of the source (``base.Document``);
a tree library (lxml, html5lib) would re-serialize the whole file (quotes, entities, empty
tags) and nothing outside the text could stay the input's bytes. lxml checks the EPUB's
documents instead (formats/epub.py). Inline markup inside a run (``<a href>``, ``<b>``,
entities, inline code) becomes placeholders that must come back unchanged.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from html.parser import HTMLParser

from .base import COMMON_PROTECT, Document, Unit, has_words, protect

INLINE = frozenset("""a abbr b bdi bdo big br cite data del dfn em font i img ins label mark q rp rt ruby s
small span strike strong sub sup time tt u wbr""".split())
# never translated: inline, the element is one placeholder; between blocks, it is skipped
INLINE_OPAQUE = frozenset("code kbd samp var".split())
OPAQUE = frozenset("script style pre textarea svg math template noscript".split())
# a run of text directly inside one of these is shown twice in a bilingual output
DUPLICABLE = frozenset("p h1 h2 h3 h4 h5 h6 li dt dd caption figcaption blockquote summary legend".split())
ATTRIBUTES = ("alt", "title")
_ATTR = re.compile(r"""(?<=[\s"'])(alt|title)\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_ID = re.compile(r"""\s(?:id|xml:id)\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>]+)""", re.IGNORECASE)
_PROTECT = re.compile("|".join([
    COMMON_PROTECT,
    r"<!--.*?-->",
    r"<(code|kbd|samp|var|script|style|svg|math)\b[^>]*>.*?</\1\s*>",  # inline code and friends
    r"</?[A-Za-z][^<>]*>",  # inline tags
    r"&(?:[A-Za-z][A-Za-z0-9]*|#\d+|#[xX][0-9A-Fa-f]+);",
]), re.DOTALL | re.IGNORECASE)


@dataclass
class _Event:
    kind: str  # start, end, data, other (entities, comments, declarations)
    start: int
    tag: str = ""
    raw: str = ""  # a start tag's text


class _Events(HTMLParser):
    """Every event with the offset where it starts: consecutive events tile the source."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=False)
        self.lines = [0]
        for m in re.finditer("\n", text):
            self.lines.append(m.end())
        self.events: list[_Event] = []

    def _at(self) -> int:
        line, col = self.getpos()
        return self.lines[line - 1] + col

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self.events.append(_Event("start", self._at(), tag, self.get_starttag_text() or ""))

    def handle_startendtag(self, tag: str, attrs: object) -> None:
        self.events.append(_Event("void", self._at(), tag, self.get_starttag_text() or ""))

    def handle_endtag(self, tag: str) -> None:
        self.events.append(_Event("end", self._at(), tag))

    def handle_data(self, data: str) -> None:
        self.events.append(_Event("data", self._at()))

    # entities, comments, declarations: copied as they are (a placeholder inside a run)
    def _other(self) -> None:
        self.events.append(_Event("other", self._at()))

    def handle_entityref(self, name: str) -> None:
        self._other()

    def handle_charref(self, name: str) -> None:
        self._other()

    def handle_comment(self, data: str) -> None:
        self._other()

    def handle_decl(self, decl: str) -> None:
        self._other()

    def handle_pi(self, data: str) -> None:
        self._other()

    def unknown_decl(self, data: str) -> None:
        self._other()


def _escape_text(text: str) -> str:
    return html.escape(text, quote=False)


def _escape_attr(text: str) -> str:
    return html.escape(text, quote=True)


def parse_html(text: str, *, fmt: str = "html", where: str = "", only: frozenset[str] | None = None,
               xhtml: bool = False) -> Document:
    """Units of an (X)HTML text; with ``only``, just the runs directly inside those elements (an
    EPUB's NCX labels, its package's title)."""
    parser = _Events(text)
    parser.feed(text)
    parser.close()
    events = parser.events
    ends = [e.start for e in events[1:]] + [len(text)]
    units: list[Unit] = []
    br = "<br/>" if xhtml else "<br>"

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    def add(kind: str, start: int, end: int, escape: object, bilingual: str, sep: str,
            block: tuple[int, int] | None = None) -> None:
        raw = text[start:end]
        protected, values = protect(raw, _PROTECT)
        protected = re.sub(r"\s+", " ", protected).strip()
        if not has_words(protected):
            return
        units.append(Unit(index=len(units), kind=kind, text=protected, start=start, end=end,
                          placeholders=values, single_line=True, bilingual=bilingual, inline_sep=sep,
                          line=line_of(start), where=where, escape=escape, block=block))  # type: ignore[arg-type]

    stack: list[str] = []  # open non-inline elements
    seg: list[int] = []  # indices of the events of the current run
    opener: int | None = None  # the event that opened the current run (a block start tag)
    skip_to: str | None = None  # inside an opaque element between blocks

    def flush(closer: int | None) -> None:
        data = [k for k in seg if text[events[k].start:ends[k]].strip()]
        if any(events[k].kind == "data" for k in data) and (only is None or (stack and stack[-1] in only)):
            first, last = data[0], data[-1]
            a = events[first].start
            a += len(text[a:ends[first]]) - len(text[a:ends[first]].lstrip())
            b = ends[last]
            b -= len(text[events[last].start:b]) - len(text[events[last].start:b].rstrip())
            tag = stack[-1] if stack else ""
            block = None
            if (opener is not None and closer is not None and events[opener].tag == tag == events[closer].tag
                    and tag in DUPLICABLE and only is None):
                o = events[opener].start
                line_start = text.rfind("\n", 0, o) + 1
                indent = text[line_start:o] if not text[line_start:o].strip() else ""
                nl = "\r\n" if text[line_start - 2:line_start] == "\r\n" else "\n"
                block = (o, ends[closer])
                add("paragraph", a, b, _escape_text, "inline", nl + indent, block)
            elif tag in ("td", "th"):
                add("cell", a, b, _escape_text, "inline", br)
            else:  # a title, a package's or a table of contents' label: no markup between the two
                label = tag == "title" or only is not None
                add("heading" if label else "paragraph", a, b, _escape_text, "inline", " / " if label else br)
        seg.clear()

    k = 0
    while k < len(events):
        e = events[k]
        if skip_to is not None:
            if e.kind == "end" and e.tag == skip_to:
                skip_to = None
            k += 1
            continue
        if e.kind in ("start", "void") and only is None:
            for m in _ATTR.finditer(e.raw):
                value = m.group(2) if m.group(2) is not None else m.group(3)
                vstart = e.start + m.start(2 if m.group(2) is not None else 3)
                if has_words(value):
                    add("attr", vstart, vstart + len(value), _escape_attr, "inline", " / ")
        if e.kind in ("start", "void", "end") and (e.tag in INLINE or e.tag in INLINE_OPAQUE):
            if e.kind == "start" and e.tag in INLINE_OPAQUE:  # inline code: one placeholder, to its end
                depth = 0
                while k + 1 < len(events):
                    if events[k].kind == "start" and events[k].tag == e.tag:
                        depth += 1
                    elif events[k].kind == "end" and events[k].tag == e.tag:
                        depth -= 1
                        if depth == 0:
                            break
                    seg.append(k)
                    k += 1
            seg.append(k)
            k += 1
            continue
        if e.kind in ("data", "other"):
            seg.append(k)
            k += 1
            continue
        # a block boundary
        flush(k if e.kind == "end" else None)
        if e.kind == "start":
            if e.tag in OPAQUE:
                skip_to = e.tag
            else:
                stack.append(e.tag)
            opener = k
        elif e.kind == "end":
            if e.tag in stack:
                while stack and stack.pop() != e.tag:
                    pass
            opener = None
        else:
            opener = None
        k += 1
    flush(None)
    # an attribute inside a run of text is part of that run's placeholders (its tag); the rest
    # are units of their own, in the order of the source
    runs = [u for u in units if u.kind != "attr"]
    units = sorted([u for u in units if u.kind != "attr" or not any(r.start <= u.start < r.end for r in runs)],
                   key=lambda u: u.start)
    for n, u in enumerate(units):
        u.index = n
    # a run shown twice in a bilingual output must be the only unit inside its element
    for u in units:
        if u.block is not None and any(v is not u and u.block[0] <= v.start < u.block[1] for v in units):
            u.block = None
            u.inline_sep = br
        elif u.block is not None:  # an id must stay unique: the copy has none
            u.block_open = _ID.sub("", text[u.block[0]:u.start])
    return Document(fmt, text, units)
