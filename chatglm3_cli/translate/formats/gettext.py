"""gettext catalogues (.po, .pot): each untranslated entry's ``msgid`` (and ``msgid_plural``) is
translated into its ``msgstr`` (``msgstr[0..n-1]`` by the target language's Plural-Forms);
msgids, contexts, comments, flags, references, obsolete entries and entries already translated
are copied byte-for-byte. An entry whose answer failed validation is marked ``fuzzy`` and its
msgstr left as it was. The header gets the target's ``Language`` and, where the source has none
or a template's ``nplurals=INTEGER``, its ``Plural-Forms``.

polib reads the catalogue (entries, flags, plural ids and the line each entry starts on); the
output is the source text with only the msgstr lines (and the flags and header lines above)
rewritten, because polib's writer re-wraps every string of the file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .base import COMMON_PROTECT, Document, DocumentFormatError, Unit, has_words, protect, split_lines

# printf (%s, %(name)s, %1$s, %.2f), brace ({0}, {name}), and markup in strings
_PROTECT = re.compile("|".join([
    COMMON_PROTECT,
    r"%(?:\d+\$|\([^)\s]+\))?[-+ #0]*(?:\d+|\*)?(?:\.\d+)?(?:hh|h|ll|l|L|q|j|z|t)?[diouxXeEfFgGcrsab%]",
    r"\{[^{}\s]*\}",
    r"</?[A-Za-z][^<>]*>",
    r"&(?:[A-Za-z][A-Za-z0-9]*|#\d+);",
]))

# code: (nplurals, plural expression, which form is "one" (None: no singular form))
_ONE_OTHER = (2, "(n != 1)", 0)
PLURAL_FORMS: dict[str, tuple[int, str, int | None]] = {
    **{c: (1, "0", None) for c in ("zh", "zh-tw", "ja", "ko", "vi", "th", "id", "ms", "fa")},
    **{c: _ONE_OTHER for c in ("en", "de", "nl", "sv", "da", "no", "fi", "it", "es", "pt", "el", "he",
                               "hu", "tr", "bn", "sw", "hi")},
    "fr": (2, "(n > 1)", 0),
    "ru": (3, "(n%10==1 && n%100!=11 ? 0 : n%10>=2 && n%10<=4 && (n%100<10 || n%100>=20) ? 1 : 2)", 0),
    "uk": (3, "(n%10==1 && n%100!=11 ? 0 : n%10>=2 && n%10<=4 && (n%100<10 || n%100>=20) ? 1 : 2)", 0),
    "pl": (3, "(n==1 ? 0 : n%10>=2 && n%10<=4 && (n%100<10 || n%100>=20) ? 1 : 2)", 0),
    "cs": (3, "(n==1) ? 0 : (n>=2 && n<=4) ? 1 : 2", 0),
    "ro": (3, "(n==1 ? 0 : (n==0 || (n%100 > 0 && n%100 < 20)) ? 1 : 2)", 0),
    "ar": (6, "(n==0 ? 0 : n==1 ? 1 : n==2 ? 2 : n%100>=3 && n%100<=10 ? 3 : n%100>=11 ? 4 : 5)", 1),
}
_NPLURALS = re.compile(r"nplurals\s*=\s*(\d+)")
_KEYWORD = re.compile(r"^\s*(msgctxt|msgid_plural|msgid|msgstr(?:\[\d+\])?)\s")


def plural_forms(code: str) -> tuple[int, str, int | None]:
    return PLURAL_FORMS.get(code, PLURAL_FORMS.get(code.split("-")[0], _ONE_OTHER))


def escape(text: str) -> str:
    return (text.replace("\\", "\\\\").replace("\t", "\\t").replace("\r", "\\r").replace("\n", "\\n")
            .replace('"', '\\"'))


def _quoted(keyword: str, text: str, nl: str) -> str:
    """``msgstr "..."``, a multi-line string as gettext writes it (an empty first line)."""
    if "\n" not in text.rstrip("\n"):
        return f'{keyword} "{escape(text)}"{nl}'
    lines = text.split("\n")
    parts = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    return f'{keyword} ""{nl}' + "".join(f'"{escape(p)}"{nl}' for p in parts)


@dataclass
class _Entry:
    units: list[int]  # singular, then plural
    msgstr: tuple[int, int]  # the region (offsets) of the msgstr lines
    flags_at: int  # where a "#, fuzzy" line goes, or the offset of the existing flags line's end
    has_flags: bool
    plural: bool
    indent: str = ""


@dataclass
class GettextDocument(Document):
    entries: list[_Entry] = field(default_factory=list)
    header: tuple[int, int] | None = None  # the header's msgstr region
    target: str = ""

    def source_of(self, unit: Unit) -> str:
        return unit.text

    def render(self, translations: dict[int, str], *, bilingual: bool = False,
               upto: int | None = None) -> str:
        edits: list[tuple[int, int, str]] = []  # (start, end, new text)
        n, expr, one = plural_forms(self.target)
        if self.header is not None:
            edits.append((*self.header, self._header(n, expr)))
        for e in self.entries:
            if upto is not None and e.units[0] > upto:
                break
            nl = "\r\n" if "\r\n" in self.text[e.msgstr[0]:e.msgstr[1]] else "\n"
            got = [translations.get(u) for u in e.units]
            if any(g is None for g in got):
                if e.has_flags:
                    line = self.text[e.flags_at:self.text.find("\n", e.flags_at)].rstrip("\r")
                    if "fuzzy" not in line:
                        edits.append((e.flags_at + len(line), e.flags_at + len(line), ", fuzzy"))
                else:
                    edits.append((e.flags_at, e.flags_at, f"{e.indent}#, fuzzy{nl}"))
                continue
            restored = [self.units[u].render(g or "") for u, g in zip(e.units, got, strict=True)]
            if not e.plural:
                new = _quoted("msgstr", restored[0], nl)
            else:
                single, many = restored[0], restored[-1]
                new = "".join(_quoted(f"msgstr[{k}]", single if k == one else many, nl) for k in range(n))
            edits.append((*e.msgstr, new))
        out, pos = [], 0
        for a, b, new in sorted(edits, key=lambda x: (x[0], x[1])):
            out.append(self.text[pos:a])
            out.append(new)
            pos = b
        out.append(self.text[pos:])
        text = "".join(out)
        return ("\ufeff" + text) if self.bom else text

    def _header(self, n: int, expr: str) -> str:
        a, b = self.header  # type: ignore[misc]
        block = self.text[a:b]
        nl = "\r\n" if "\r\n" in block else "\n"
        lines = block.split(nl)
        forms = f"Plural-Forms: nplurals={n}; plural={expr};\\n"
        m = _NPLURALS.search(block)
        has_forms = "Plural-Forms:" in block
        out = []
        for line in lines:
            if line.startswith('"Language:') and self.target:
                line = f'"Language: {self.target.replace("-", "_")}\\n"'
            if line.startswith('"Plural-Forms:') and not m:
                line = f'"{forms}"'
            out.append(line)
        if not has_forms:
            last = max(k for k, line in enumerate(out) if line.strip()) if any(x.strip() for x in out) else 0
            out.insert(last + 1, f'"{forms}"')
        return nl.join(out)


def _region_after(lines: list[tuple[int, str, str]], k: int) -> int:
    """The index of the line after keyword line k and its continuation strings."""
    k += 1
    while k < len(lines) and lines[k][1].lstrip().startswith('"'):
        k += 1
    return k


def parse_po(text: str, source: str, *, target: str = "", retranslate: bool = False) -> GettextDocument:
    import polib  # type: ignore[import-untyped, unused-ignore]  # stubs (types-polib) may be absent

    try:
        catalog = polib.pofile(text, wrapwidth=0)
    except (OSError, ValueError) as e:
        raise DocumentFormatError(f"{source}: not a gettext catalogue ({e})",
                                  hint="msgfmt --check FILE names the line") from None
    lines = split_lines(text)
    units: list[Unit] = []
    doc = GettextDocument("po", text, units, target=target)
    at = 0  # the next line to look for an entry's msgid from
    if catalog.metadata:  # the header (polib keeps it apart from the entries): the first msgid ""
        k = next((j for j, line in enumerate(lines) if re.match(r"^\s*msgid\s", line[1])), len(lines))
        if k < len(lines) and re.match(r'^\s*msgid\s+""\s*$', lines[k][1]):
            s0 = _region_after(lines, k)
            if s0 < len(lines) and lines[s0][1].lstrip().startswith("msgstr"):
                at = _region_after(lines, s0)
                doc.header = (lines[s0][0], lines[at - 1][0] + len(lines[at - 1][1]))
    for entry in catalog:
        if entry.obsolete:  # "#~" lines: comments to gettext, copied as they are
            continue
        k = max(at, (entry.linenum or 1) - 1)
        while k < len(lines) and not re.match(r"^\s*msgid\s", lines[k][1]):
            k += 1
        if k >= len(lines):
            raise DocumentFormatError(f"{source}: could not find the msgid of entry {entry.msgid[:40]!r}")
        head = k  # back over msgctxt to where a flags line would go
        while head > 0 and re.match(r"^\s*(msgctxt\s|\")", lines[head - 1][1]):
            head -= 1
        first = head
        flags = None
        while first > 0 and re.match(r"\s*#(?!~)", lines[first - 1][1]):  # its comments, not obsolete ones
            first -= 1
            if lines[first][1].lstrip().startswith("#,"):
                flags = first
        prev = next((j for j in range(first, head) if lines[j][1].lstrip().startswith("#|")), head)
        k = _region_after(lines, k)
        if k < len(lines) and lines[k][1].lstrip().startswith("msgid_plural"):
            k = _region_after(lines, k)
        s0 = k
        while k < len(lines) and lines[k][1].lstrip().startswith("msgstr"):
            k = _region_after(lines, k)
        at = k
        if s0 == k:
            raise DocumentFormatError(f"{source}: line {s0 + 1}: expected msgstr after the msgid")
        region = (lines[s0][0], lines[k - 1][0] + len(lines[k - 1][1]) + len(lines[k - 1][2]))
        done = bool(entry.msgstr) or any(v for v in entry.msgstr_plural.values())
        if done and not retranslate:
            continue
        ids = []
        for msgid in ([entry.msgid, entry.msgid_plural] if entry.msgid_plural else [entry.msgid]):
            protected, values = protect(msgid, _PROTECT)
            if not has_words(protected):
                break
            ids.append(len(units))
            units.append(Unit(index=len(units), kind="entry", text=protected, start=0, end=0,
                              placeholders=values, line=head + 1,
                              bilingual="inline"))
        else:
            if flags is not None:
                at_flags, has = lines[flags][0], True
            else:
                at_flags, has = lines[prev][0], False
            doc.entries.append(_Entry(ids, region, at_flags, has, bool(entry.msgid_plural)))
            continue
        del units[len(units) - len(ids):]  # a plural pair is translated whole or not at all
    return doc
