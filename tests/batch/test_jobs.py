"""Reading and validating batch input: both shapes, and every problem reported at once."""
from __future__ import annotations

import json
import time

import pytest

from chatglm3_cli.batch.jobs import parse_jobs
from chatglm3_cli.errors import InputError

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name"]}

GOOD = [
    {"id": "c", "task": "chat", "messages": [{"role": "user", "content": "hi"}]},
    {"id": "g", "task": "generate", "prompt": "Write a haiku", "max_tokens": 8, "temperature": 0},
    {"id": "t", "task": "translate", "text": "Hello", "to": "French", "from": "English"},
    {"id": "s", "task": "summarize", "text": "A text.", "length": 20, "style": "bullets"},
    {"id": "k", "task": "classify", "text": "great", "labels": ["positive", "negative"]},
    {"id": "e", "task": "extract", "text": "Ann is 31", "schema": SCHEMA},
    {"id": "q", "task": "qa", "question": "Who?", "context": "Ann went home.", "seed": 1},
    {"id": 7, "task": "rewrite", "text": "hey", "instruction": "formal", "top_p": 0.5,
     "system": "Be brief."},
    {"custom_id": "o", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "gpt-x", "messages": [{"role": "developer", "content": "Be brief."},
                                             {"role": "user", "content": "hi"}],
              "max_completion_tokens": 5, "temperature": 0.2}},
]


def jsonl(*records) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records).encode()


def test_every_task_and_the_openai_shape_are_valid():
    jf = parse_jobs(jsonl(*GOOD), "jobs.jsonl")
    assert jf.problems == []
    assert [j.task for j in jf.jobs] == ["chat", "generate", "translate", "summarize", "classify",
                                         "extract", "qa", "rewrite", "chat"]
    assert [j.line for j in jf.jobs] == list(range(1, 10))
    by = {j.key: j for j in jf.jobs}
    assert by["7"].id == 7 and by["7"].overrides == {"top_p": 0.5}
    assert by["g"].overrides == {"max_tokens": 8, "temperature": 0}
    o = by["o"]
    assert o.openai and o.overrides == {"max_tokens": 5, "temperature": 0.2}
    assert [m.role for m in o.messages()] == ["system", "user"]


def test_blank_lines_are_skipped_and_line_numbers_kept():
    data = b"\n" + jsonl(GOOD[0]) + b"   \n" + jsonl(GOOD[1])
    jf = parse_jobs(data, "x")
    assert [j.line for j in jf.jobs] == [2, 4]


def test_bad_input_matrix_is_reported_at_once_with_line_numbers():
    records = [
        GOOD[0],                                                    # 1 ok
        '{"id": "broken", "task": ',                                # 2 invalid JSON
        {"task": "generate", "prompt": "x"},                        # 3 missing id
        {"id": "c", "task": "generate", "prompt": "x"},             # 4 duplicate id
        {"id": "u", "task": "poem", "text": "x"},                   # 5 unknown task
        {"id": "m", "task": "translate", "text": "x"},              # 6 missing field
        {"id": "b", "task": "extract", "text": "x", "schema": {"type": "strin"}},  # 7 bad schema
        {"id": "l", "task": "classify", "text": "x", "labels": ["only"]},         # 8 one label
        {"id": "p", "task": "generate", "prompt": "x", "temperature": -1},        # 9 bad sampling
        '[1, 2]',                                                   # 10 not an object
        {"custom_id": "o", "url": "/v1/embeddings", "body": {"input": "x"}},      # 11 wrong url
        {"id": "n", "task": "chat", "messages": []},                # 12 empty messages
        {"id": "s", "task": "extract", "text": "x", "schema": "a string"},        # 13 schema not an object
    ]
    jf = parse_jobs(jsonl(*records), "jobs.jsonl")
    assert [j.key for j in jf.jobs] == ["c"]
    got = {p.line: p for p in jf.problems}
    assert sorted(got) == list(range(2, 14))
    assert "invalid JSON" in got[2].message and got[2].key is None
    assert 'missing "id"' in got[3].message
    assert "duplicate id 'c' (first on line 1)" in got[4].message and got[4].key is None
    assert "unknown task 'poem'" in got[5].message and got[5].key == "u"
    assert 'missing "to"' in got[6].message
    assert '"schema" is not a valid JSON Schema' in got[7].message
    assert '"labels" must be an array of at least two' in got[8].message
    assert '"temperature" must be a number >= 0' in got[9].message
    assert "expected a JSON object, got an array" in got[10].message
    assert '"url" must be "/v1/chat/completions"' in got[11].message and got[11].openai
    assert '"messages" must be a non-empty array' in got[12].message
    assert '"schema" must be a JSON Schema object' in got[13].message
    assert all(p.describe().startswith(f"line {p.line}: ") for p in jf.problems)


def test_schema_the_grammar_converter_cannot_express_is_bad():
    rec = {"id": "x", "task": "extract", "text": "t", "schema": {"$ref": "https://example.com/s.json"}}
    jf = parse_jobs(jsonl(rec), "x")
    assert jf.jobs == [] and "cannot be turned into a grammar" in jf.problems[0].message


def test_several_problems_of_one_record_are_all_named():
    jf = parse_jobs(jsonl({"id": "q", "task": "qa", "max_tokens": 0}), "x")
    msg = jf.problems[0].message
    assert 'missing "question"' in msg and 'missing "context"' in msg and '"max_tokens"' in msg


def test_binary_file_is_refused_as_a_whole():
    with pytest.raises(InputError, match="binary"):
        parse_jobs(b'{"id": 1}\n\x00\x01\x02', "bin.jsonl")


def test_non_utf8_bytes_make_only_their_line_invalid():
    data = jsonl(GOOD[0]) + b'{"id": "z", "task": "generate", "prompt": "caf\xe9"}\n' + jsonl(GOOD[1])
    jf = parse_jobs(data, "latin1.jsonl")
    assert [j.key for j in jf.jobs] == ["c", "g"]
    assert len(jf.problems) == 1 and jf.problems[0].line == 2
    assert "not valid UTF-8" in jf.problems[0].message


@pytest.mark.parametrize("data", [b"", b"\n\n  \n", b"\xef\xbb\xbf"])
def test_empty_input_is_an_input_error(data):
    with pytest.raises(InputError, match="has no records"):
        parse_jobs(data, "empty.jsonl")


def test_utf8_bom_is_accepted():
    jf = parse_jobs(b"\xef\xbb\xbf" + jsonl(GOOD[0]), "bom.jsonl")
    assert [j.key for j in jf.jobs] == ["c"]


def test_ten_thousand_lines_validate_quickly():
    recs = []
    for i in range(10_000):
        if i % 3 == 0:
            recs.append({"id": f"e{i}", "task": "extract", "text": f"record {i}", "schema": SCHEMA})
        elif i % 3 == 1:
            recs.append({"id": f"k{i}", "task": "classify", "text": f"record {i}", "labels": ["a", "b"]})
        else:
            recs.append({"custom_id": f"o{i}", "method": "POST", "url": "/v1/chat/completions",
                         "body": {"messages": [{"role": "user", "content": f"record {i}"}]}})
    data = jsonl(*recs) + b"not json\n"
    t = time.perf_counter()
    jf = parse_jobs(data, "big.jsonl")
    elapsed = time.perf_counter() - t
    assert len(jf.jobs) == 10_000 and [p.line for p in jf.problems] == [10_001]
    assert elapsed < 5, elapsed  # about 0.3 s here


def test_openai_response_format_json_schema_is_checked():
    body = {"messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": SCHEMA}}}
    jf = parse_jobs(jsonl({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body}), "x")
    assert jf.jobs[0].record["schema"] == SCHEMA and jf.jobs[0].grammar() is not None
    body["response_format"]["json_schema"]["schema"] = {"type": 5}
    jf = parse_jobs(jsonl({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body}), "x")
    assert "json_schema.schema" in jf.problems[0].message


def test_unloadable_lines_are_problems_of_their_own():
    huge_id = '{"id": ' + "7" * 5000 + ', "task": "generate", "prompt": "x"}'
    deep = '{"id": "d", "task": "generate", "prompt": ' + "[" * 100_000 + "]" * 100_000 + "}"
    deep_schema = ('{"id": "s", "task": "extract", "text": "t", "schema": '
                   + '{"type": "object", "properties": {"a": ' * 2000 + "{}" + "}}" * 2000 + "}")
    jf = parse_jobs(jsonl({"id": "a", "task": "generate", "prompt": "x"}, huge_id, deep, deep_schema,
                          {"id": "b", "task": "generate", "prompt": "y"}), "jobs.jsonl")
    assert [j.key for j in jf.jobs] == ["a", "b"]
    assert [p.line for p in jf.problems] == [2, 3, 4]
    assert "invalid JSON" in jf.problems[0].message and "digits" in jf.problems[0].message
    assert "nested too deeply" in jf.problems[1].message and "nested too deeply" in jf.problems[2].message


def test_each_record_has_a_content_hash():
    a = parse_jobs(jsonl({"id": "a", "task": "generate", "prompt": "x"},
                         {"id": "b", "task": "generate", "prompt": "y"}), "jobs.jsonl")
    b = parse_jobs(jsonl({"id": "a", "task": "generate", "prompt": "x"},
                         {"id": "b", "task": "generate", "prompt": "z"}), "jobs.jsonl")
    assert a.jobs[0].digest == b.jobs[0].digest and a.jobs[1].digest != b.jobs[1].digest
    assert len(a.jobs[0].digest) == 64 and a.sha256 != b.sha256
