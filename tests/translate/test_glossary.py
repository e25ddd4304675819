"""Glossaries from TSV and JSON, and the check for terms the model did not use."""
from __future__ import annotations

import json

import pytest

from chatglm3_cli.errors import InputError
from chatglm3_cli.translate.glossary import Glossary, load_glossary


def test_tsv(tmp_path):
    p = tmp_path / "g.tsv"
    p.write_text("# term\ttranslation\n\nChatGLM\tChatGLM\nmodel\t模型\n  context window \t 上下文窗口\n",
                 encoding="utf-8")
    g = load_glossary(p)
    assert g.terms == (("ChatGLM", "ChatGLM"), ("model", "模型"), ("context window", "上下文窗口"))
    assert "- model → 模型" in g.block()


@pytest.mark.parametrize("data", [
    {"model": "模型", "token": "词元"},
    [["model", "模型"], ["token", "词元"]],
    [{"source": "model", "target": "模型"}, {"term": "token", "translation": "词元"}],
])
def test_json_shapes(tmp_path, data):
    p = tmp_path / "g.json"
    p.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    assert load_glossary(p).terms == (("model", "模型"), ("token", "词元"))


@pytest.mark.parametrize("name,content,needle", [
    ("g.tsv", "model 模型\n", "line 1: expected 'term<TAB>translation'"),
    ("g.tsv", "model\t\n", "line 1: a glossary entry needs"),
    ("g.json", "{\"a\": 1}", "needs a term and its translation"),
    ("g.json", "{oops", "not valid JSON (line 1"),
    ("g.json", "\"text\"", "an object or a list"),
])
def test_bad_glossaries(tmp_path, name, content, needle):
    p = tmp_path / name
    p.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=needle.replace("(", r"\(")):
        load_glossary(p)


def test_occurring_and_unused():
    g = Glossary((("model", "模型"), ("GPU", "显卡"), ("上下文", "context")))
    assert g.occurring("The Model runs on a GPU") == [("model", "模型"), ("GPU", "显卡")]
    assert g.occurring("models are not a model-less thing")[0] == ("model", "模型")  # whole word "model"
    assert g.occurring("remodel") == []
    assert g.unused("The model runs on a GPU", "模型在图形处理器上运行") == [("GPU", "显卡")]
    assert g.unused("上下文很长", "the context is long") == []
