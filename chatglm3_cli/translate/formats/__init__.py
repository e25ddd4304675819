"""The file types translate understands, by extension, and their parsers."""
from __future__ import annotations

from pathlib import Path

from .base import Document, DocumentFormatError, Unit

EXTENSIONS = {".txt": "txt", ".text": "txt", ".md": "md", ".markdown": "md", ".srt": "srt",
              ".vtt": "vtt", ".html": "html", ".htm": "html", ".xhtml": "html", ".epub": "epub",
              ".po": "po", ".pot": "po", ".json": "json", ".arb": "json", ".yml": "yaml", ".yaml": "yaml"}
FORMATS = ("txt", "md", "srt", "vtt", "html", "epub", "po", "json", "yaml")
FORMAT_NAMES = {"txt": "plain text", "md": "Markdown", "srt": "SubRip subtitles",
                "vtt": "WebVTT subtitles", "html": "HTML", "epub": "EPUB book", "po": "gettext catalogue",
                "json": "JSON locale file", "yaml": "YAML locale file"}
# what a directory walk picks up without --glob: not JSON/YAML, which in a tree are mostly
# configuration (package.json, CI files), not messages; those are translated when named
IN_DIRECTORIES = frozenset({"txt", "md", "srt", "vtt", "html", "epub", "po"})
BINARY = frozenset({"epub"})  # read as bytes, not decoded as text
BILINGUAL = frozenset({"txt", "md", "srt", "vtt", "html", "epub"})  # --bilingual makes sense for these


def format_for(path: str | Path) -> str | None:
    return EXTENSIONS.get(Path(path).suffix.lower())


def supported_list() -> str:
    return ", ".join(EXTENSIONS)


def parse(fmt: str, text: str, source: str, *, target: str = "", retranslate: bool = False) -> Document:
    """``target`` (a language code) is what a catalogue's plural forms and a locale file's own
    locale become; ``retranslate``: also the gettext entries that have a translation."""
    if fmt == "md":
        from .markdown import parse_markdown

        return parse_markdown(text)
    if fmt == "srt":
        from .subtitles import parse_srt

        return parse_srt(text, source)
    if fmt == "vtt":
        from .subtitles import parse_vtt

        return parse_vtt(text, source)
    if fmt == "html":
        from .html import parse_html

        return parse_html(text, xhtml=source.lower().endswith(".xhtml"))
    if fmt == "po":
        from .gettext import parse_po

        return parse_po(text, source, target=target, retranslate=retranslate)
    if fmt == "json":
        from .locale import parse_json

        return parse_json(text, source, target=target)
    if fmt == "yaml":
        from .locale import parse_yaml

        return parse_yaml(text, source, target=target)
    from .text import parse_text

    return parse_text(text)


def parse_bytes(fmt: str, data: bytes, source: str) -> Document:
    """A binary format (BINARY): an EPUB."""
    from .epub import parse_epub

    return parse_epub(data, source)


__all__ = ["Document", "DocumentFormatError", "Unit", "EXTENSIONS", "FORMATS", "BINARY", "BILINGUAL", "IN_DIRECTORIES",
           "format_for", "parse", "parse_bytes", "supported_list"]
