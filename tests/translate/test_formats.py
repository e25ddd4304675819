"""Parsing each format into units and rendering it back: everything outside the units is the
input's bytes, checked by parsing input and output."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatglm3_cli.errors import SubtitleFormatError
from chatglm3_cli.translate.formats import format_for, parse
from chatglm3_cli.translate.formats.subtitles import SRT_TIMING

from .helpers import shout

MD = """---
title: Guide
tags: [a, b]
---

# Getting started ##

Install the tool with `pip install x` and read [the docs](https://example.com/docs "Docs").
See https://example.com/a_b. Also <https://auto.link/x> and <b>bold</b> &amp; more.

```python
print("do not translate me")
```

    indented code stays

> A quote that
> spans two lines.

- first item
- second item with ![logo](img/logo.png)
  and a continuation

1. numbered `code` item

| Name | Meaning |
|:-----|--------:|
| apple | a red fruit |
| `x` | 1.5 |

<div align="center">
  html block
</div>

Setext heading
--------------
"""

SRT = ("1\r\n00:00:01,000 --> 00:00:02,500\r\nHello there.\r\n\r\n"
       "2\r\n00:00:03,000 --> 00:00:04,000 X1:10\r\n<i>Second</i> cue,\r\ntwo lines.\r\n\r\n"
       "3\r\n00:00:05,000 --> 00:00:06,000\r\n♪ ♪\r\n")

VTT = """WEBVTT - with header

NOTE a comment
that spans lines

STYLE
::cue { color: red }

intro
00:00:01.000 --> 00:00:02.000 align:start
<v Bob>Hello</v> everyone

00:02.500 --> 00:03.000
Second cue
"""


def fake_translate(doc):
    return {u.index: shout(u.text) for u in doc.units}


@pytest.mark.parametrize("fmt,text", [("md", MD), ("md", MD.replace("\n", "\r\n")), ("srt", SRT), ("vtt", VTT),
                                      ("txt", "a\n\nb  \n")])
def test_render_without_translations_is_the_input(fmt, text):
    assert parse(fmt, text, "x").render({}) == text


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(list("ab #>-|`*[]()!:/\n\r\t 1.<&;") + ["http://x.y", "```", "    ", "---\n", "<p>",
                                                                       "</p>", "<b>", "<code>", "<!--", "-->",
                                                                       '<img alt="x">', "&amp;", "<td>"]),
                max_size=80).map("".join))
def test_any_text_round_trips(text):
    for fmt in ("md", "txt", "html"):
        doc = parse(fmt, text, "x")
        assert doc.render({}) == text
        # regions are ordered and inside the text
        ends = [(u.start, u.end) for u in doc.units]
        assert all(0 <= a <= b <= len(text) for a, b in ends)
        assert all(ends[k][1] <= ends[k + 1][0] for k in range(len(ends) - 1))
        doc.render(fake_translate(doc))  # never fails


def _md_blocks(text):
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    return tokens


def test_markdown_structure_survives():
    doc = parse("md", MD, "guide.md")
    out = doc.render(fake_translate(doc))
    # front matter byte-for-byte
    assert out.startswith("---\ntitle: Guide\ntags: [a, b]\n---\n")
    src_tokens, out_tokens = _md_blocks(MD[MD.index("\n---\n") + 5:]), _md_blocks(out[out.index("\n---\n") + 5:])
    # the same block structure, code and HTML identical
    assert [t.type for t in src_tokens] == [t.type for t in out_tokens]
    for a, b in zip(src_tokens, out_tokens):
        if a.type in ("fence", "code_block", "html_block"):
            assert a.content == b.content and a.info == b.info
        if a.type == "inline":
            # inline code, link targets, images, autolinks and URLs are all still there
            for pat in (r"`[^`]+`", r"\]\([^)]*\)", r"!\[[^\]]*\]\([^)]*\)", r"<https?://[^>]+>", r"https?://\S+"):
                assert re.findall(pat, a.content) == re.findall(pat, b.content), (pat, a.content, b.content)
    assert "# GETTING STARTED ##" in out
    assert "[THE DOCS](https://example.com/docs \"Docs\")" in out
    assert "READ" in out and "`pip install x`" in out and "https://example.com/a_b." in out
    assert "> A QUOTE THAT\n> SPANS TWO LINES." in out
    assert "- SECOND ITEM WITH ![logo](img/logo.png)\n  AND A CONTINUATION" in out
    assert "<b>BOLD</b> &amp; MORE" in out
    # table layout: same rows, same pipes and alignment row; cells translated
    src_rows = [line for line in MD.splitlines() if line.startswith("|")]
    out_rows = [line for line in out.splitlines() if line.startswith("|")]
    assert len(src_rows) == len(out_rows) and src_rows[1] == out_rows[1]
    assert [r.count("|") for r in src_rows] == [r.count("|") for r in out_rows]
    assert "| APPLE | A RED FRUIT |" in out and "| `x` | 1.5 |" in out
    assert "SETEXT HEADING\n--------------" in out


def test_markdown_with_crlf_keeps_its_line_endings():
    crlf = MD.replace("\n", "\r\n")
    doc = parse("md", crlf, "w.md")
    out = doc.render(fake_translate(doc))
    lf = parse("md", MD, "w.md")
    assert out == lf.render(fake_translate(lf)).replace("\n", "\r\n")
    assert out.count("\r\n") == crlf.count("\r\n") and "\n" not in out.replace("\r\n", "")


def test_markdown_units_protect_code_and_urls():
    doc = parse("md", MD, "guide.md")
    texts = [u.text for u in doc.units]
    assert "Install the tool with {{1}} and read [the docs]{{2}}.\nSee {{3}}. Also {{4}} and {{5}}bold{{6}} {{7}} more." in texts
    assert not any("print" in t or "indented code" in t or "title:" in t or "html block" in t for t in texts)
    assert [u.kind for u in doc.units].count("cell") == 4  # "1.5" and `x` have no words
    for u in doc.units:
        for token, value in u.placeholders.items():
            assert token in u.text and value in MD


def test_markdown_multiline_translation_gets_the_line_prefixes():
    doc = parse("md", "> one\n> two\n\n- item\n", "q.md")
    quote, item = doc.units
    out = doc.render({quote.index: "A\nB\nC", item.index: "X\nY"})
    assert out == "> A\n> B\n> C\n\n- X\n  Y\n"


def test_markdown_table_cell_with_a_pipe_is_escaped():
    doc = parse("md", "| a | b |\n|---|---|\n| x | y |\n", "t.md")
    out = doc.render({u.index: "p|q" for u in doc.units})
    assert out.splitlines()[2] == "| p\\|q | p\\|q |"


def test_bilingual_markdown_and_text():
    doc = parse("md", "# Title\n\nPara one.\n\n| c |\n|---|\n| d |\n", "b.md")
    out = doc.render(fake_translate(doc), bilingual=True)
    assert out == "# Title / TITLE\n\nPara one.\n\nPARA ONE.\n\n| c<br>C |\n|---|\n| d<br>D |\n"
    doc = parse("txt", "Hello.\r\n\r\nWorld.\r\n", "b.txt")
    assert doc.render(fake_translate(doc), bilingual=True) == "Hello.\r\n\r\nHELLO.\r\n\r\nWorld.\r\n\r\nWORLD.\r\n"


def test_text_paragraphs_and_blank_lines_kept():
    text = "\ufeffnot a bom here\n\n\n  Indented para\n  second line   \n\n\nLast"
    doc = parse("txt", text, "t.txt")
    assert [u.text for u in doc.units] == ["\ufeffnot a bom here", "Indented para\nsecond line", "Last"]
    out = doc.render({0: "A", 1: "B\nC", 2: "D"})
    assert out == "A\n\n\n  B\n  C   \n\n\nD"


def _cues(text, timing_re):
    lines = text.splitlines()
    return [(lines[k - 1] if k else "", line) for k, line in enumerate(lines) if timing_re.match(line)]


def test_srt_cues_numbering_and_timings_identical():
    doc = parse("srt", SRT, "a.srt")
    assert [u.text for u in doc.units] == ["Hello there.", "{{1}}Second{{2}} cue,\ntwo lines."]
    out = doc.render({0: "你好。", 1: "{{1}}第二{{2}}条，\n两行。"})
    assert _cues(out, SRT_TIMING) == _cues(SRT, SRT_TIMING)
    assert len(_cues(out, SRT_TIMING)) == 3
    assert "<i>第二</i>条，\r\n两行。\r\n" in out  # the cue's own line ending
    assert out.count("\r\n\r\n") == SRT.count("\r\n\r\n")
    # a translation with more lines stays inside its cue
    out = doc.render({0: "a\nb\nc"})
    assert parse("srt", out, "o.srt").render({}) == out and len(_cues(out, SRT_TIMING)) == 3


def test_srt_bilingual_keeps_cue_count():
    doc = parse("srt", SRT, "a.srt")
    out = doc.render(fake_translate(doc), bilingual=True)
    assert _cues(out, SRT_TIMING) == _cues(SRT, SRT_TIMING)
    assert "Hello there.\r\nHELLO THERE.\r\n" in out


@pytest.mark.parametrize("text,line,needle", [
    ("1\n00:00:01,000 --> 00:00:02,000\nok\n\nx\n00:00:03,000 --> 00:00:04,000\nno\n", 5, "expected a cue number"),
    ("1\n00:00:01,000 --> 00:00:02,000\nok\n\n2\n00:00:03 --> 00:00:04,000\nno\n", 6, "expected a timing line"),
    ("1\n", 2, "expected a timing line"),
])
def test_malformed_srt_names_the_line(text, line, needle):
    with pytest.raises(SubtitleFormatError) as e:
        parse("srt", text, "bad.srt")
    assert f"bad.srt: line {line}: {needle}" in e.value.message


def test_srt_missing_blank_line_between_cues_is_tolerated():
    text = "1\n00:00:01,000 --> 00:00:02,000\nfirst\n2\n00:00:03,000 --> 00:00:04,000\nsecond\n"
    doc = parse("srt", text, "a.srt")
    assert [u.text for u in doc.units] == ["first", "second"]


def test_vtt_header_notes_styles_identifiers_and_settings_kept():
    doc = parse("vtt", VTT, "a.vtt")
    assert [u.text for u in doc.units] == ["{{1}}Hello{{2}} everyone", "Second cue"]
    out = doc.render(fake_translate(doc))
    assert out == VTT.replace("Hello</v> everyone", "HELLO</v> EVERYONE").replace("Second cue", "SECOND CUE")


def test_vtt_without_header_is_refused():
    with pytest.raises(SubtitleFormatError, match="line 1"):
        parse("vtt", "00:01.000 --> 00:02.000\nhi\n", "a.vtt")


def test_format_by_extension():
    assert [format_for(p) for p in ("a.MD", "b.markdown", "c.srt", "d.vtt", "e.txt", "f.pdf", "g")] == \
        ["md", "md", "srt", "vtt", "txt", None, None]
