"""Requests and answers: chunking to a budget, sentence splits, markers, chatter, placeholders."""
from __future__ import annotations

import pytest

from chatglm3_cli.translate.chunks import (
    Mismatch,
    Piece,
    build_chunks,
    format_request,
    join_parts,
    make_pieces,
    parse_answer,
    split_sentences,
    strip_chatter,
)
from chatglm3_cli.translate.formats import parse


def count(text):
    return len(text) // 4 + 1


def pieces(*texts):
    return [Piece(k, 0, t, count(t)) for k, t in enumerate(texts)]


def test_sentences_split_and_join_back_exactly():
    text = "First one. Second one!  Third? 第一句。第二句！\"Quoted.\" Last"
    parts = split_sentences(text)
    assert "".join(s + w for s, w in parts) == text
    assert [s for s, _ in parts] == ["First one.", "Second one!", "Third?", "第一句。", "第二句！",
                                     "\"Quoted.\"", "Last"]


def test_unit_over_budget_is_split_at_sentences():
    doc = parse("txt", "One sentence here. " * 20 + "\n\nshort\n", "t.txt")
    ps = make_pieces(doc.units, count, 16)
    first = [p for p in ps if p.unit == 0]
    assert len(first) > 1 and all(p.tokens <= 16 for p in first)
    assert all(p.text.endswith("here.") for p in first)
    assert [p.unit for p in ps][-1] == 1 and ps[-1].part == 0
    # the parts' translations are joined like the source parts
    assert join_parts([(p.text, p.sep) for p in first], spaced=True) == doc.units[0].text
    assert join_parts([("甲。", " "), ("乙。", "")], spaced=False) == "甲。乙。"


def test_a_sentence_without_spaces_is_split_but_never_inside_a_placeholder():
    text = "字" * 30 + "{{1}}" + "字" * 30
    from chatglm3_cli.translate.formats.base import Unit

    u = Unit(0, "paragraph", text, 0, len(text), placeholders={"{{1}}": "`x`"})
    ps = make_pieces([u], count, 6)
    assert "".join(p.text for p in ps) == text
    assert sum("{{1}}" in p.text for p in ps) == 1


def test_chunks_respect_budget_and_unit_limit():
    ps = pieces(*["word " * 5] * 10)
    chunks = build_chunks(ps, budget=30, max_units=16)
    assert [len(c) for c in chunks] == [2] * 5
    assert [len(c) for c in build_chunks(ps, budget=10_000, max_units=4)] == [4, 4, 2]
    assert sum(chunks, []) == ps  # every piece once, in order


def test_request_and_answer_round_trip():
    ps = pieces("Hello", "two\nlines", "x {{1}} y")
    assert format_request(ps) == "[1] Hello\n[2] two\nlines\n[3] x {{1}} y"
    answer = "以下是翻译：\n[1] 你好\n[2] 两\n行\n[3] 甲 {{1}} 乙\n"
    assert parse_answer(answer, ps) == ["你好", "两\n行", "甲 {{1}} 乙"]


@pytest.mark.parametrize("answer", [
    "Here is the translation:\n\n[1] A\n[2] B",
    "Sure! Here are the translations:\n[1] A\n[2] B",
    "好的，以下是翻译结果：\n[1] A\n[2] B",
    "```\n[1] A\n[2] B\n```",
    "  [1] A\n  [2] B  ",
])
def test_chatter_is_removed(answer):
    assert parse_answer(answer, pieces("a", "b")) == ["A", "B"]


def test_one_unit_may_come_back_plain():
    assert parse_answer("以下是翻译：\n你好，世界", pieces("Hello, world")) == ["你好，世界"]
    assert parse_answer("Translation: Bonjour", pieces("Hello")) == ["Bonjour"]
    assert strip_chatter("Hello! I am ChatGLM3 🙂龘") == "Hello! I am ChatGLM3 🙂龘"


@pytest.mark.parametrize("answer,needle", [
    ("[1] A B", "expected units 1..2"),  # merged
    ("[1] A\n[2] B\n[3] C", "expected units 1..2"),  # split
    ("[2] B\n[1] A", "expected units 1..2"),  # reordered
    ("A and B", "no [n] markers"),
    ("", "empty"),
    ("[1] A\n[2] ", "the translation is empty"),
])
def test_mismatches(answer, needle):
    with pytest.raises(Mismatch, match=needle.replace("[", r"\[").replace(".", r"\.")):
        parse_answer(answer, pieces("a", "b"))


def test_placeholders_are_checked():
    ps = pieces("use {{1}} and {{2}}")
    assert parse_answer("用 {{2}} 和 {{1}}", ps) == ["用 {{2}} 和 {{1}}"]  # order may change
    with pytest.raises(Mismatch, match=r"missing \{\{2\}\}"):
        parse_answer("用 {{1}}", ps)
    with pytest.raises(Mismatch, match=r"unknown \{\{3\}\}"):
        parse_answer("用 {{1}} {{2}} {{3}}", ps)
    with pytest.raises(Mismatch, match="repeated"):
        parse_answer("用 {{1}} {{1}} {{2}}", ps)


def test_a_1mb_paragraph_without_sentence_ends_is_planned_in_linear_work():
    """Each character is tokenized a few times, not once per word of its part (74 s for 1 MB)."""
    import random

    from chatglm3_cli.translate.formats.base import Unit

    rng = random.Random(1)
    text = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "kappa", "omega"]) for _ in range(170_000))
    counted = [0]

    def counting(t):
        counted[0] += len(t)
        return count(t)

    ps = make_pieces([Unit(0, "paragraph", text, 0, len(text))], counting, 1000)
    assert join_parts([(p.text, p.sep) for p in ps], spaced=True) == text
    assert all(p.tokens == count(p.text) <= 1000 for p in ps)
    assert counted[0] < 5 * len(text), counted[0] / len(text)
