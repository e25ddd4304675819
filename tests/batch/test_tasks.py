"""Task prompts (shared instructions first), grammars, and reading answers back."""
from __future__ import annotations

import pytest

from chatglm3_cli.batch import tasks as T
from chatglm3_cli.engine import grammar as G
from chatglm3_cli.errors import OutputFormatError

SCHEMA = {"type": "object", "properties": {"mood": {"enum": ["happy", "sad"]}, "loud": {"type": "boolean"}},
          "required": ["mood", "loud"], "additionalProperties": False}

RECORDS = {
    "translate": {"text": "{x}", "to": "French"},
    "summarize": {"text": "{x}", "length": 30},
    "classify": {"text": "{x}", "labels": ["positive", "negative"]},
    "extract": {"text": "{x}", "schema": SCHEMA},
    "qa": {"question": "{x}", "context": "Ann went home."},
    "rewrite": {"text": "{x}", "instruction": "formal"},
}


def _fill(rec: dict, x: str) -> dict:
    return {k: (v.replace("{x}", x) if isinstance(v, str) else v) for k, v in rec.items()}


@pytest.mark.parametrize("task", sorted(RECORDS))
def test_instructions_first_record_text_last(task):
    a = T.build_messages(task, _fill(RECORDS[task], "first record"))
    b = T.build_messages(task, _fill(RECORDS[task], "another one"))
    assert a[0].role == "system" and a[0].content.startswith(T.INSTRUCTIONS[task])
    assert a[:-1] == b[:-1]  # everything but the record's own text is shared
    assert a[-1].role == "user" and a[-1].content in ("first record",)


def test_record_system_comes_after_the_shared_instructions():
    msgs = T.build_messages("rewrite", {"text": "t", "instruction": "formal", "system": "Be brief."})
    assert msgs[0].content.startswith(T.INSTRUCTIONS["rewrite"]) and msgs[0].content.endswith("Be brief.")


def test_chat_and_generate_prompts():
    msgs = T.build_messages("chat", {"messages": [{"role": "user", "content": "hi"}], "system": "S"})
    assert [(m.role, m.content) for m in msgs] == [("system", "S"), ("user", "hi")]
    msgs = T.build_messages("generate", {"prompt": "p"})
    assert [(m.role, m.content) for m in msgs] == [("user", "p")]


def test_label_grammar_escapes_and_accepts_the_metadata_line():
    g = G.labels_grammar(['say "hi"', "back\\slash", "中文", "two\nlines"])
    assert g.startswith('root ::= "\\n" " "? (')
    assert '"say \\"hi\\""' in g and '"back\\\\slash"' in g and '"中文"' in g and '"two\\nlines"' in g


def test_grammars_parse_in_llama_cpp():
    from chatglm3_cli.engine.llama import runtime

    llama_grammar = pytest.importorskip("llama_cpp.llama_grammar")
    for g in (G.labels_grammar(["a b", 'q"', "中文"]), G.schema_grammar(SCHEMA),
              G.schema_grammar({"type": "array", "items": {"type": "integer"}, "maxItems": 3})):
        assert llama_grammar.LlamaGrammar.from_string(g, verbose=False) is not None
    assert runtime  # imported: the same llama.cpp build


def test_parse_label():
    assert T.parse_label(" positive\n", ["positive", "negative"]) == "positive"
    assert T.parse_label("Negative.", ["positive", "negative"]) == "negative"
    with pytest.raises(OutputFormatError, match="not one of the labels"):
        T.parse_label("Hello! I am ChatGLM3", ["positive", "negative"])


def test_parse_json_checks_the_schema():
    assert T.parse_json('{"mood": "sad", "loud": false}', SCHEMA) == {"mood": "sad", "loud": False}
    assert T.parse_json('```json\n{"mood": "sad", "loud": true}\n```', SCHEMA)["loud"] is True
    with pytest.raises(OutputFormatError, match="not valid JSON"):
        T.parse_json('{"mood": "sa', SCHEMA)
    with pytest.raises(OutputFormatError, match="does not match the schema: 'angry' is not one of"):
        T.parse_json('{"mood": "angry", "loud": true}', SCHEMA)


def test_check_schema():
    assert G.check_schema(SCHEMA) is None
    assert "not a valid JSON Schema" in G.check_schema({"type": "strin"})
    assert "not a valid JSON Schema" in G.check_schema({"properties": {"a": {"minLength": -1}}})
    assert G.check_schema([1]) == "must be a JSON Schema object"
