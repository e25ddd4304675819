"""HTML, EPUB, gettext and JSON/YAML locale files, each through the whole run with a scripted
model that upper-cases every unit: everything outside the translated text is the input's bytes,
and every unit is translated once."""
from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import zipfile

import pytest

from chatglm3_cli.translate.formats import parse, parse_bytes

from .helpers import fake_run, numbered, shout, units_of


def upper(units, system, user):
    return numbered(units)


def asked(dec):
    """Every unit text the model was asked, in order."""
    return [u for r in dec.requests for u in units_of(r)]


def gaps(doc):
    """The source between the units (what must never change)."""
    out, pos = [], 0
    for u in doc.units:
        out.append(doc.text[pos:u.start])
        pos = u.end
    return out + [doc.text[pos:]]


# HTML ---------------------------------------------------------------------------------------------

HTML = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>The guide</title>
  <style>p { color: red; } /* Not text */</style>
  <script>const s = "do not translate";</script>
</head>
<body>
  <h1 id="top" class="big">Getting <em>started</em> &amp; more</h1>
  <p>Read <a href="https://x.org/docs?a=1&amp;b=2" title="The docs">the docs</a> before
     running <code>make &lt;target&gt;</code>.</p>
  <!-- a comment that stays -->
  <p><img src="cat.png" alt="A sleeping cat"></p>
  <pre>
  keep   this   layout
  </pre>
  <ul>
    <li>First item</li>
    <li>Second item</li>
  </ul>
  <table><tr><th>Name</th><td>Value here</td><td>42</td></tr></table>
</body>
</html>
"""


def test_html_round_trip(tmp_path):
    s, dec, outs = fake_run(tmp_path, {"page.html": HTML}, upper)
    assert s.ok and s.retries == 0
    src, out = parse("html", HTML, "page.html"), parse("html", outs[str(tmp_path / "page.html")], "o")
    assert gaps(out) == gaps(src)  # tags, attributes, scripts, styles, pre, comments: identical
    assert [u.text for u in out.units] == [shout(u.text) for u in src.units]
    assert sorted(asked(dec)) == sorted(u.text for u in src.units)  # each unit asked once
    texts = [u.text for u in src.units]
    assert texts == ["The guide", "Getting {{1}}started{{2}} {{3}} more",
                     "Read {{1}}the docs{{2}} before running {{3}}.", "A sleeping cat", "First item",
                     "Second item", "Name", "Value here"]
    html = outs[str(tmp_path / "page.html")]
    assert '<a href="https://x.org/docs?a=1&amp;b=2" title="The docs">THE DOCS</a>' in html
    assert "<code>make &lt;target&gt;</code>" in html and "keep   this   layout" in html
    assert 'alt="A SLEEPING CAT"' in html and 'const s = "do not translate"' in html


def test_html_translation_is_escaped_and_bilingual_repeats_blocks():
    doc = parse("html", HTML, "p.html")
    out = doc.render({u.index: "x < y & \"z\"" for u in doc.units})
    assert "<li>x &lt; y &amp; \"z\"</li>" in out and 'alt="x &lt; y &amp; &quot;z&quot;"' in out
    bi = doc.render({u.index: shout(u.text) for u in doc.units}, bilingual=True)
    assert "    <li>First item</li>\n    <li>FIRST ITEM</li>" in bi
    assert '<h1 id="top" class="big">Getting' in bi and '<h1 class="big">GETTING' in bi  # one id only
    assert "<th>Name<br>NAME</th>" in bi and "<title>The guide / THE GUIDE</title>" in bi


# EPUB ---------------------------------------------------------------------------------------------

CONTAINER = """<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles>
</container>
"""
OPF = """<?xml version="1.0" encoding="utf-8"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">
  <metadata xmlns:dc="http://purl.org/dc/elements/1.1/">
    <dc:identifier id="id">urn:uuid:1234</dc:identifier>
    <dc:title>A Small Book</dc:title>
    <dc:creator>Jane Writer</dc:creator>
    <dc:language>en</dc:language>
  </metadata>
  <manifest>
    <item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>
    <item id="ncx" href="toc.ncx" media-type="application/x-dtbncx+xml"/>
    <item id="c1" href="text/ch1.xhtml" media-type="application/xhtml+xml"/>
    <item id="css" href="style.css" media-type="text/css"/>
    <item id="img" href="cover.png" media-type="image/png"/>
  </manifest>
  <spine toc="ncx"><itemref idref="c1"/></spine>
</package>
"""
NAV = """<?xml version="1.0" encoding="utf-8"?>
<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops">
<head><title>Contents</title></head>
<body><nav epub:type="toc"><ol><li><a href="text/ch1.xhtml">The first chapter</a></li></ol></nav></body>
</html>
"""
NCX = """<?xml version="1.0" encoding="UTF-8"?>
<ncx xmlns="http://www.daisy.org/z3986/2005/ncx/" version="2005-1">
  <head><meta name="dtb:uid" content="urn:uuid:1234"/></head>
  <docTitle><text>A Small Book</text></docTitle>
  <navMap><navPoint id="p1" playOrder="1"><navLabel><text>The first chapter</text></navLabel>
  <content src="text/ch1.xhtml"/></navPoint></navMap>
</ncx>
"""
CH1 = """<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE html>
<html xmlns="http://www.w3.org/1999/xhtml">
<head><title>Chapter one</title><link rel="stylesheet" href="../style.css"/></head>
<body>
  <h1 id="c1">The first chapter</h1>
  <p class="first">It was a <i>dark</i> and stormy night.</p>
  <p>The rain fell in torrents.<br/>Except at occasional intervals.</p>
  <div><img src="../cover.png" alt="The cover"/></div>
</body>
</html>
"""
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def make_epub():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        for name, data in [("META-INF/container.xml", CONTAINER), ("OEBPS/content.opf", OPF),
                           ("OEBPS/nav.xhtml", NAV), ("OEBPS/toc.ncx", NCX), ("OEBPS/text/ch1.xhtml", CH1),
                           ("OEBPS/style.css", "p { margin: 0 }\n"), ("OEBPS/cover.png", PNG)]:
            z.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def _members(data):
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(i.filename, i.compress_type, z.read(i)) for i in z.infolist()]


@pytest.mark.parametrize("bilingual", [False, True])
def test_epub_round_trip(tmp_path, bilingual):
    from lxml import etree

    book = make_epub()
    s, dec, outs = fake_run(tmp_path, {"book.epub": book}, upper, bilingual=bilingual)
    assert s.ok, [f.error for f in s.files]
    out = outs[str(tmp_path / "book.epub")]
    src_doc, out_doc = parse_bytes("epub", book, "b"), parse_bytes("epub", out, "o")
    assert sorted(asked(dec)) == sorted(u.text for u in src_doc.units)  # each unit once
    before, after = _members(book), _members(out)
    assert [(n, c) for n, c, _ in after] == [(n, c) for n, c, _ in before]  # order, compression
    assert after[0][:2] == ("mimetype", zipfile.ZIP_STORED)
    changed = {n for (n, _, a), (_, _, b) in zip(before, after) if a != b}
    assert changed == {"OEBPS/content.opf", "OEBPS/nav.xhtml", "OEBPS/toc.ncx", "OEBPS/text/ch1.xhtml"}
    for name, _, data in after:  # every document and the package still parse
        if name.endswith((".xhtml", ".opf", ".ncx", ".xml")):
            etree.fromstring(data)
    files = {n: d.decode() for n, _, d in after if n.endswith((".xhtml", ".opf", ".ncx"))}
    title = "A Small Book / A SMALL BOOK" if bilingual else "A SMALL BOOK"
    assert f"<dc:title>{title}</dc:title>" in files["OEBPS/content.opf"]
    assert "<dc:creator>Jane Writer</dc:creator>" in files["OEBPS/content.opf"]
    label = "The first chapter / THE FIRST CHAPTER" if bilingual else "THE FIRST CHAPTER"
    assert f"<text>{label}</text>" in files["OEBPS/toc.ncx"]
    ch1 = files["OEBPS/text/ch1.xhtml"]
    if not bilingual:
        for m in out_doc.members:  # outside the text, every document is the source's bytes
            src_m = next(x for x in src_doc.members if x.name == m.name)
            assert gaps(m.doc) == gaps(src_m.doc), m.name
        assert '<p class="first">IT WAS A <i>DARK</i> AND STORMY NIGHT.</p>' in ch1
        assert '<img src="../cover.png" alt="THE COVER"/>' in ch1
    else:
        assert ('<p class="first">It was a <i>dark</i> and stormy night.</p>\n'
                '  <p class="first">IT WAS A <i>DARK</i> AND STORMY NIGHT.</p>') in ch1
        assert '<h1 id="c1">The first chapter</h1>\n  <h1>THE FIRST CHAPTER</h1>' in ch1
        assert len(re.findall(r'id="c1"', ch1)) == 1


def test_an_epub_unit_that_fails_is_named_by_its_chapter_and_kept(tmp_path):
    def drops(units, system, user):
        return numbered(units, lambda u: shout(u).replace("{{1}}", ""))

    s, dec, outs = fake_run(tmp_path, {"book.epub": make_epub()}, drops, max_chunk_units=1)
    r = s.files[0]
    assert r.status == "partial"
    assert [(f.where, f.line, f.excerpt) for f in r.failures] == [
        ("OEBPS/text/ch1.xhtml", 7, "It was a <i>dark</i> and stormy night."),
        ("OEBPS/text/ch1.xhtml", 8, "The rain fell in torrents.<br/>Except at occasional interval…"),
        ("OEBPS/nav.xhtml", 4, '<a href="text/ch1.xhtml">The first chapter</a>')]
    ch1 = dict((n, d) for n, _, d in _members(outs[str(tmp_path / "book.epub")]))["OEBPS/text/ch1.xhtml"].decode()
    assert "<p class=\"first\">It was a <i>dark</i> and stormy night.</p>" in ch1 and "THE FIRST CHAPTER" in ch1


def test_an_epub_resumes_from_its_checkpoint(tmp_path):
    """Interrupted after two chunks, the same run goes on without asking for them again."""
    calls = []

    def stop_after_two(units, system, user):
        calls.append(user)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return numbered(units)

    book = make_epub()
    s, _, outs = fake_run(tmp_path, {"book.epub": book}, stop_after_two, max_chunk_units=1)
    assert s.interrupted and outs[str(tmp_path / "book.epub")] is None
    s, dec, outs = fake_run(tmp_path, {"book.epub": book}, upper, max_chunk_units=1)
    n = len(parse_bytes("epub", book, "b").units)
    # (a chunk whose text occurs twice, the book's title in the package and in the NCX, is asked once)
    assert s.ok and s.cached >= 2 and s.cached + s.requests == n
    assert not set(calls[:2]) & set(dec.requests)  # the two answered before Ctrl-C are not asked again
    assert b"IT WAS A" in dict((m, d) for m, _, d in _members(outs[str(tmp_path / "book.epub")]))["OEBPS/text/ch1.xhtml"]


def test_a_broken_epub_is_an_input_error(tmp_path):
    s, _, outs = fake_run(tmp_path, {"bad.epub": b"PK\x03\x04 not really"}, upper)
    assert s.files[0].input_error and "not an EPUB" in s.files[0].error
    with zipfile.ZipFile(tmp_path / "nocontainer.epub", "w") as z:
        z.writestr("mimetype", "application/epub+zip")
    s, _, _ = fake_run(tmp_path, {"b2.epub": (tmp_path / "nocontainer.epub").read_bytes()}, upper)
    assert "META-INF/container.xml is missing" in s.files[0].error


# gettext ------------------------------------------------------------------------------------------

PO = r'''# Translation template.
# Copyright (C) 2026
msgid ""
msgstr ""
"Project-Id-Version: demo 1.0\n"
"Language: \n"
"MIME-Version: 1.0\n"
"Content-Type: text/plain; charset=UTF-8\n"
"Plural-Forms: nplurals=INTEGER; plural=EXPRESSION;\n"

#. A comment for translators
#: src/app.py:10
#, python-format
msgid "Hello, %(name)s! You have new mail."
msgstr ""

#: src/app.py:12
msgctxt "menu"
msgid "Open the file"
msgstr ""

#: src/app.py:14
msgid "Already done"
msgstr "Déjà fait"

msgid "One file was deleted."
msgid_plural "%d files were deleted."
msgstr[0] ""
msgstr[1] ""

msgid ""
"A long message that was "
"wrapped over two lines."
msgstr ""

#~ msgid "Obsolete entry"
#~ msgstr ""
'''


def _po_entries(text):
    import polib

    return {(e.msgctxt, e.msgid): e for e in polib.pofile(text)}


@pytest.mark.parametrize("lang,n", [("fr", 2), ("ru", 3), ("ja", 1)])
def test_gettext_round_trip_with_plural_forms(tmp_path, lang, n):
    from chatglm3_cli.translate.languages import parse_language

    s, dec, outs = fake_run(tmp_path, {"app.pot": PO}, upper, target=parse_language(lang))
    assert s.ok
    out = outs[str(tmp_path / "app.pot")]
    assert sorted(asked(dec)) == sorted(["Hello, {{1}}! You have new mail.", "Open the file",
                                         "One file was deleted.", "{{1}} files were deleted.",
                                         "A long message that was wrapped over two lines."])
    src, got = _po_entries(PO), _po_entries(out)
    assert list(src) == list(got)  # the same entries, in order, with their contexts
    for key, e in got.items():
        assert (e.comment, e.occurrences, e.flags) == (src[key].comment, src[key].occurrences, src[key].flags)
    assert got[(None, "Hello, %(name)s! You have new mail.")].msgstr == "HELLO, %(name)s! YOU HAVE NEW MAIL."
    assert got[("menu", "Open the file")].msgstr == "OPEN THE FILE"
    assert got[(None, "Already done")].msgstr == "Déjà fait"  # translated already: left alone
    plural = got[(None, "One file was deleted.")].msgstr_plural
    assert len(plural) == n
    if n == 1:
        assert plural[0] == "%d FILES WERE DELETED."
    else:
        assert plural[0] == "ONE FILE WAS DELETED." and all(plural[k] == "%d FILES WERE DELETED." for k in range(1, n))
    assert f"Language: {lang}\\n" in out and f"nplurals={n};" in out
    # the lines that hold no msgstr are the source's, byte for byte
    keep = [line for line in PO.splitlines() if not line.startswith(("msgstr", '"Language', '"Plural'))
            and not (line.startswith('"') and PO.splitlines().index(line) < 10)]
    out_lines = out.splitlines()
    assert all(line in out_lines for line in keep)
    assert "#~ msgid \"Obsolete entry\"" in out
    msgfmt = shutil.which("msgfmt")
    if msgfmt:  # gettext's own checker, where installed: header, plural forms, format strings
        p = subprocess.run([msgfmt, "--check", "-o", "/dev/null", str(tmp_path / "app.zh.pot")],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr


def test_gettext_failed_entries_are_marked_fuzzy_and_left_empty(tmp_path):
    def drops(units, system, user):
        return numbered(units, lambda u: shout(u).replace("{{1}}", ""))

    s, dec, outs = fake_run(tmp_path, {"app.po": PO}, drops, max_chunk_units=1)
    out = outs[str(tmp_path / "app.po")]
    got = _po_entries(out)
    hello = got[(None, "Hello, %(name)s! You have new mail.")]
    assert "fuzzy" in hello.flags and "python-format" in hello.flags and hello.msgstr == ""
    assert "#, python-format, fuzzy\n" in out
    assert got[("menu", "Open the file")].msgstr == "OPEN THE FILE" and "fuzzy" not in got[("menu", "Open the file")].flags
    deleted = got[(None, "One file was deleted.")]
    assert "fuzzy" in deleted.flags and set(deleted.msgstr_plural.values()) == {""}
    assert 'msgctxt "menu"' in out and s.files[0].status == "partial"


def test_gettext_retranslate_asks_for_translated_entries_too(tmp_path):
    s, dec, outs = fake_run(tmp_path, {"app.po": PO}, upper, retranslate=True)
    assert "Already done" in asked(dec)
    assert _po_entries(outs[str(tmp_path / "app.po")])[(None, "Already done")].msgstr == "ALREADY DONE"


# JSON and YAML locale files -----------------------------------------------------------------------

I18NEXT = """{
  "title": "Welcome back",
  "greeting": "Hello, {{name}}!",
  "items": "{count, plural, one {# item in your cart} other {# items in your cart}}",
  "nested": {
    "save": "Save changes",
    "count": 3,
    "flag": true,
    "link": "See $t(common.help) and <0>our docs</0>"
  },
  "list": ["First entry", "Second entry"],
  "empty": ""
}
"""
ARB = """{
  "@@locale": "en",
  "helloWorld": "Hello World!",
  "@helloWorld": {
    "description": "The conventional newborn programmer greeting"
  },
  "nWombats": "{count, plural, =0{no wombats} =1{1 wombat} other{{count} wombats}}",
  "@nWombats": {"placeholders": {"count": {"type": "int"}}}
}
"""
RAILS = """# Rails locale file
en:
  hello: "Hello world"   # a comment
  messages:
    welcome: Welcome, %{name}!
    bye: 'Good bye, see you'
    count: 3
  errors:
    - Something went wrong
    - "Please try again"
"""


def test_json_round_trip_keeps_keys_order_and_placeholders(tmp_path):
    s, dec, outs = fake_run(tmp_path, {"en.json": I18NEXT}, upper)
    assert s.ok
    out = outs[str(tmp_path / "en.json")]
    src, got = json.loads(I18NEXT), json.loads(out)
    assert list(got) == list(src) and list(got["nested"]) == list(src["nested"])
    assert got["greeting"] == "HELLO, {{name}}!"
    assert got["items"] == "{count, plural, one {# ITEM IN YOUR CART} other {# ITEMS IN YOUR CART}}"
    assert got["nested"] == {"save": "SAVE CHANGES", "count": 3, "flag": True,
                             "link": "SEE $t(common.help) AND <0>OUR DOCS</0>"}
    assert got["list"] == ["FIRST ENTRY", "SECOND ENTRY"] and got["empty"] == ""
    assert gaps(parse("json", out, "o")) == gaps(parse("json", I18NEXT, "i"))
    assert len(asked(dec)) == 7


def test_text_moved_out_of_a_plural_branch_is_not_a_translation(tmp_path):
    """What SmolLM2 answered for the plural value (scripts/smoke_real_model.py): every placeholder
    once, but the text after the block's closing brace. The value keeps its source text."""
    def moves(units, system, user):
        return numbered(units, lambda u: re.sub(r"\{\{3\}\}\{\{4\}\}$", "{{3}}# items in your cart{{4}}", shout(u)))

    s, dec, outs = fake_run(tmp_path, {"en.json": I18NEXT}, moves, max_chunk_units=1)
    r = s.files[0]
    assert [f.reason for f in r.failures] == ["the answer moves text out of its plural or select branch"]
    got = json.loads(outs[str(tmp_path / "en.json")])
    assert got["items"] == json.loads(I18NEXT)["items"] and got["title"] == "WELCOME BACK"


def test_arb_metadata_is_kept_and_the_locale_becomes_the_target(tmp_path):
    s, dec, outs = fake_run(tmp_path, {"app_en.arb": ARB}, upper)
    got = json.loads(outs[str(tmp_path / "app_en.arb")])
    assert got["@@locale"] == "zh" and got["helloWorld"] == "HELLO WORLD!"
    assert got["@helloWorld"] == {"description": "The conventional newborn programmer greeting"}
    assert got["nWombats"] == "{count, plural, =0{NO WOMBATS} =1{1 WOMBAT} other{{count} WOMBATS}}"
    assert sorted(asked(dec)) == sorted(["Hello World!", "{{1}}no wombats{{2}}1 wombat{{3}}{{4}} wombats{{5}}{{6}}"])


def test_yaml_round_trip_keeps_comments_styles_and_the_rails_locale_key(tmp_path):
    from ruamel.yaml import YAML

    s, dec, outs = fake_run(tmp_path, {"en.yml": RAILS}, upper)
    assert s.ok
    out = outs[str(tmp_path / "en.yml")]
    assert out == ("# Rails locale file\nzh:\n  hello: \"HELLO WORLD\"   # a comment\n  messages:\n"
                   "    welcome: WELCOME, %{name}!\n    bye: 'GOOD BYE, SEE YOU'\n    count: 3\n  errors:\n"
                   "    - SOMETHING WENT WRONG\n    - \"PLEASE TRY AGAIN\"\n")
    YAML(typ="safe").load(out)


def test_yaml_values_that_need_quotes_get_them():
    doc = parse("yaml", "a: plain\nb: 'single'\n", "x.yml")
    out = doc.render({0: "yes: really # not a comment", 1: "it's"})
    from ruamel.yaml import YAML

    assert YAML(typ="safe").load(out) == {"a": "yes: really # not a comment", "b": "it's"}
    assert out == "a: \"yes: really # not a comment\"\nb: 'it''s'\n"


@pytest.mark.parametrize("fmt,text,msg", [
    ("json", "{\"a\": ", "not valid JSON"), ("yaml", "a: [b\n", "not valid YAML"),
])
def test_broken_locale_files_are_input_errors(fmt, text, msg):
    from chatglm3_cli.translate.formats import DocumentFormatError

    with pytest.raises(DocumentFormatError, match=msg):
        parse(fmt, text, "x")
