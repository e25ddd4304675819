"""The file types translate understands, by extension, and their parsers."""
from __future__ import annotations

from pathlib import Path

from .base import Document, Unit

EXTENSIONS = {".txt": "txt", ".text": "txt", ".md": "md", ".markdown": "md", ".srt": "srt",
              ".vtt": "vtt"}
FORMATS = ("txt", "md", "srt", "vtt")
FORMAT_NAMES = {"txt": "plain text", "md": "Markdown", "srt": "SubRip subtitles",
                "vtt": "WebVTT subtitles"}


def format_for(path: str | Path) -> str | None:
    return EXTENSIONS.get(Path(path).suffix.lower())


def supported_list() -> str:
    return ", ".join(EXTENSIONS)


def parse(fmt: str, text: str, source: str) -> Document:
    if fmt == "md":
        from .markdown import parse_markdown

        return parse_markdown(text)
    if fmt == "srt":
        from .subtitles import parse_srt

        return parse_srt(text, source)
    if fmt == "vtt":
        from .subtitles import parse_vtt

        return parse_vtt(text, source)
    from .text import parse_text

    return parse_text(text)


__all__ = ["Document", "Unit", "EXTENSIONS", "FORMATS", "format_for", "parse", "supported_list"]
