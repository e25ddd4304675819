"""Showing an answer as it streams: plain text, or Markdown rendered with rich on a terminal.

The Markdown view commits finished blocks (paragraphs, whole code blocks) above a small live
area that holds only the block being written. The live area is never taller than one block,
so long answers neither flicker nor lose lines that scrolled off the screen. A single newline
in an answer is a line break, as in a chat UI (CommonMark would join the lines of a poem into
one paragraph).
"""
from __future__ import annotations

import re
from typing import Any, Protocol, TextIO


class Renderer(Protocol):
    def feed(self, text: str) -> None: ...
    def finish(self, *, interrupted: bool = False) -> None: ...


class PlainRenderer:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._last = "\n"

    def feed(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()
            self._last = text[-1]

    def finish(self, *, interrupted: bool = False) -> None:
        if self._last != "\n":
            self.out.write("\n")
        if interrupted:
            self.out.write("[interrupted]\n")
        self.out.flush()


_FENCE = re.compile(r"^\s*(```|~~~)", re.MULTILINE)


def stable_split(text: str) -> int:
    """Index up to which the Markdown is made of finished blocks: the last blank line that
    is not inside an open code fence."""
    cut = 0
    pos = 0
    in_fence = False
    for line in text.splitlines(keepends=True):
        if _FENCE.match(line):
            in_fence = not in_fence
            if not in_fence and line.endswith("\n"):
                cut = pos + len(line)  # a closed code block is finished
        elif not in_fence and line.strip() == "" and line.endswith("\n"):
            cut = pos + len(line)
        pos += len(line)
    return cut


class _Lines:
    """Already-rendered lines of segments, as a renderable."""

    def __init__(self, lines: list) -> None:
        self.lines = lines

    def __rich_console__(self, console, options):  # rich's protocol
        from rich.segment import Segment

        for line in self.lines:
            yield from line
            yield Segment.line()


def _line_break_parser() -> Any:
    """rich's own Markdown parser settings (markdown-it's ``breaks`` option only changes its
    HTML output: _with_hard_breaks turns the soft breaks into hard ones)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"breaks": True}).enable("strikethrough").enable("table")


def _with_hard_breaks(tokens: list) -> list:
    """A newline inside a paragraph ("softbreak", shown by rich as a space) becomes a line break."""
    for tok in tokens:
        for child in tok.children or ():
            if child.type == "softbreak":
                child.type = "hardbreak"
    return tokens


class MarkdownRenderer:
    def __init__(self, out: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live
        from rich.markdown import Markdown

        self._parser = _line_break_parser()
        # A configured Markdown whose attributes each rendering copies: rich parses in
        # __init__, and we parse with our own parser instead of twice.
        self._proto = Markdown("", code_theme="monokai")
        self.console = Console(file=out, force_terminal=True)
        self.live = Live(console=self.console, auto_refresh=False, transient=True,
                         vertical_overflow="visible")
        self.buf = ""
        self.committed = 0  # characters of buf printed for good
        self.block_done = 0  # rendered lines of the current block printed for good
        self.live.start()

    def markdown(self, text: str) -> "Any":
        from rich.markdown import Markdown

        md = Markdown.__new__(Markdown)
        md.__dict__.update(self._proto.__dict__)
        md.markup = text
        md.parsed = _with_hard_breaks(self._parser.parse(text))
        return md

    def _lines(self, text: str) -> list:
        return self.console.render_lines(self.markdown(text), self.console.options, pad=False)

    def _commit(self, lines: list) -> None:
        if lines:
            self.live.console.print(_Lines(lines))

    def feed(self, text: str) -> None:
        if not text:
            return
        self.buf += text
        cut = self.committed + stable_split(self.buf[self.committed:])
        if cut > self.committed:
            block = self.buf[self.committed:cut]
            if block.strip():
                self._commit(self._lines(block)[self.block_done:] + [[]])
            self.committed, self.block_done = cut, 0
        lines = self._lines(self.buf[self.committed:]) if self.buf[self.committed:].strip() else []
        # Word wrap only changes the last line as text is appended, so the lines above it can
        # be printed for good: the live area stays shorter than the screen.
        limit = max(3, self.console.height - 4)
        if len(lines) - self.block_done > limit:
            upto = len(lines) - limit
            self._commit(lines[self.block_done:upto])
            self.block_done = upto
        self.live.update(_Lines(lines[self.block_done:]), refresh=True)

    def finish(self, *, interrupted: bool = False) -> None:
        self.live.update(_Lines([]), refresh=True)
        self.live.stop()
        rest = self.buf[self.committed:]
        if rest.strip():
            self.console.print(_Lines(self._lines(rest)[self.block_done:]))
        if interrupted:
            self.console.print("[dim]\\[interrupted][/dim]")
