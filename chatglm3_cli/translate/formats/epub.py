"""EPUB 2 and 3: the text of every XHTML content document in the spine (as formats/html.py
translates HTML), the navigation document's and the NCX's labels, and the book's title in the
package; every other member (CSS, images, fonts, the package's other metadata, the container)
is copied as it was, in the same order, with the same compression, ``mimetype`` first.

``zipfile`` reads and writes the container; lxml reads the container and the package files
(which documents, in which order) and re-parses each translated document before the book is
written: a translation that would leave a document unreadable is an error, not a file.
"""
from __future__ import annotations

import io
import posixpath
import shutil
import zipfile
from dataclasses import dataclass
from typing import Any

from .base import Document, DocumentFormatError, Unit
from .html import parse_html

ZIP64_FROM = 1 << 31  # members this large need zip64 headers when they are written
MAX_MEMBER_BYTES = 64 << 20  # one document of a book; a larger one is not text to translate
XHTML = ("application/xhtml+xml", "text/html")
NCX = "application/x-dtbncx+xml"
_NS = {"c": "urn:oasis:names:tc:opendocument:xmlns:container", "opf": "http://www.idpf.org/2007/opf",
       "dc": "http://purl.org/dc/elements/1.1/"}


class EpubError(DocumentFormatError):
    """Not an EPUB this tool can read (no container, no package, a document not UTF-8)."""


def _xml(data: bytes, what: str) -> Any:
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as e:
        raise EpubError(f"{what} is not well-formed XML ({e})") from None


@dataclass
class _Member:
    name: str
    doc: Document
    bom: bool
    xml_ok: bool  # the source parsed as XML: its translation must too


class EpubDocument(Document):
    """A book: one Document per translated member; units are numbered across the book."""

    def __init__(self, data: bytes, members: list[_Member], source: str) -> None:
        units: list[Unit] = []
        for m in members:
            for u in m.doc.units:
                u.index = len(units)
                units.append(u)
        super().__init__("epub", "", units)
        self.data = data
        self.members = members
        self.source = source

    def source_of(self, unit: Unit) -> str:
        for m in self.members:
            if unit in m.doc.units:
                return m.doc.text[unit.start:unit.end]
        return unit.text

    def render(self, translations: dict[int, str], *, bilingual: bool = False,
               upto: int | None = None) -> str:
        """A preview: the translated documents, each headed by its name."""
        out = []
        for m in self.members:
            if not m.doc.units or (upto is not None and m.doc.units[0].index > upto):
                continue
            out.append(f"==> {m.name} <==\n" + m.doc.render(translations, bilingual=bilingual, upto=upto))
        return "\n".join(out)

    def to_bytes(self, translations: dict[int, str], *, bilingual: bool = False) -> bytes:
        changed: dict[str, bytes] = {}
        for m in self.members:
            if not any(u.index in translations for u in m.doc.units):
                continue
            text = m.doc.render(translations, bilingual=bilingual)
            data = (b"\xef\xbb\xbf" if m.bom else b"") + text.encode("utf-8")
            if m.xml_ok:
                _xml(data, f"{self.source}: the translation of {m.name}")  # must still be readable
            changed[m.name] = data
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(self.data)) as src, zipfile.ZipFile(out, "w") as dst:
            for info in src.infolist():
                new = changed.get(info.filename)
                if new is not None:
                    dst.writestr(info, new, compress_type=info.compress_type)
                else:  # streamed: an image or font of any size never sits in memory whole
                    with src.open(info) as r, dst.open(info, "w", force_zip64=info.file_size >= ZIP64_FROM) as w:
                        shutil.copyfileobj(r, w, 1 << 20)
        return out.getvalue()


def _read(z: zipfile.ZipFile, name: str, source: str) -> bytes:
    try:
        info = z.getinfo(name)
    except KeyError:
        raise EpubError(f"{source}: {name} is missing from the book") from None
    if info.file_size > MAX_MEMBER_BYTES:
        raise EpubError(f"{source}: {name} is {info.file_size >> 20} MB: too large to translate")
    return z.read(info)


def parse_epub(data: bytes, source: str) -> EpubDocument:
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise EpubError(f"{source}: not an EPUB (not a zip file)", hint="is this an .epub book?") from None
    with z:
        container = _xml(_read(z, "META-INF/container.xml", source), f"{source}: META-INF/container.xml")
        rootfile = container.find(".//c:rootfile", _NS)
        opf_name = rootfile.get("full-path") if rootfile is not None else None
        if not opf_name:
            raise EpubError(f"{source}: META-INF/container.xml names no package file")
        opf_bytes = _read(z, opf_name, source)
        opf = _xml(opf_bytes, f"{source}: {opf_name}")
        base = posixpath.dirname(opf_name)
        items = {}
        for item in opf.iterfind(".//opf:manifest/opf:item", _NS):
            href = item.get("href") or ""
            name = posixpath.normpath(posixpath.join(base, href.split("#")[0])) if href else ""
            items[item.get("id")] = (name, item.get("media-type") or "", (item.get("properties") or "").split())
        order: list[tuple[str, str]] = []  # (member, kind)
        for ref in opf.iterfind(".//opf:spine/opf:itemref", _NS):
            name, media, _ = items.get(ref.get("idref"), ("", "", []))
            if media in XHTML:
                order.append((name, "xhtml"))
        for name, media, props in items.values():
            if "nav" in props and (name, "xhtml") not in order:
                order.append((name, "xhtml"))
            elif media == NCX:
                order.append((name, "ncx"))
        members = [_Member(opf_name, parse_html(opf_bytes.decode("utf-8-sig"), fmt="epub", where=opf_name,
                                                only=frozenset({"dc:title"}), xhtml=True),
                           opf_bytes.startswith(b"\xef\xbb\xbf"), True)]
        for name, kind in order:
            raw = _read(z, name, source)
            try:
                text = raw.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise EpubError(f"{source}: {name} is not UTF-8 text") from None
            try:
                _xml(raw, name)
                xml_ok = True
            except EpubError:
                xml_ok = False
            only = frozenset({"text"}) if kind == "ncx" else None
            doc = parse_html(text, fmt="epub", where=name, only=only, xhtml=True)
            members.append(_Member(name, doc, raw.startswith(b"\xef\xbb\xbf"), xml_ok))
    return EpubDocument(data, members, source)
