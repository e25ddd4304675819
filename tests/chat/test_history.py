"""Saved conversations and transcripts."""
from __future__ import annotations

import json

import pytest

from chatglm3_cli.chat.history import (
    Conversation,
    ConversationStore,
    load_transcript,
    messages_to_json,
    read_transcript,
    to_markdown,
)
from chatglm3_cli.engine.prompt import Message
from chatglm3_cli.errors import InputError


def test_store_round_trip_and_latest(tmp_path, monkeypatch):
    monkeypatch.setenv("CHATGLM3_DATA_DIR", str(tmp_path))
    store = ConversationStore()
    assert store.root == tmp_path / "conversations"
    a = Conversation(id="20260101-000000-aaaa", created=1, updated=1, model="m",
                     messages=[{"role": "user", "content": "hi"}])
    b = Conversation(id="20260101-000001-bbbb", created=2, updated=2, model="m", messages=[])
    store.save(a)
    store.save(b)
    assert store.latest().id == b.id
    assert store.load("20260101-000000").messages == a.messages  # unique prefix
    assert [c.id for c in store.list()] == [b.id, a.id]
    (store.root / "broken.json").write_text("{not json")
    assert len(store.list()) == 2  # a damaged file does not hide the rest
    with pytest.raises(InputError):
        store.load("nope")
    with pytest.raises(InputError):
        store.load("../etc/passwd")


def test_transcript_round_trip(tmp_path):
    msgs = [Message("system", "s"), Message("user", "u"), Message("assistant", "a", interrupted=True)]
    p = tmp_path / "t.json"
    p.write_text(messages_to_json(msgs))
    back = load_transcript(p)
    assert [m.to_dict() for m in back] == [m.to_dict() for m in msgs]
    wrapped = tmp_path / "w.json"
    wrapped.write_text(json.dumps({"messages": [{"role": "tool", "content": "r"}]}))
    assert load_transcript(wrapped)[0].role == "observation"


def test_transcript_with_its_model(tmp_path):
    p = tmp_path / "t.json"
    p.write_text(messages_to_json([Message("user", "u")], model="/models/a.gguf"))
    assert json.loads(p.read_text()) == {"model": "/models/a.gguf", "messages": [{"role": "user", "content": "u"}]}
    t = read_transcript(p)
    assert t.model == "/models/a.gguf" and [m.content for m in t.messages] == ["u"]
    p.write_text(json.dumps({"model": None, "messages": []}))  # another tool's file: no model named
    assert read_transcript(p).model == ""


@pytest.mark.parametrize("content,needle", [
    ("{oops", "not valid JSON"),
    ('{"a": 1}', "expected a list"),
    ('[{"role": "wizard", "content": "x"}]', "unknown role"),
    ('["just a string"]', "not a {role, content}"),
    ('{"model": 7, "messages": []}', '"model" is not a string'),
    ('{"model": "a\\u001b[2Jb", "messages": []}', "control characters"),
    ('{"model": "m\\u2028x", "messages": []}', "control characters"),
    ('{"model": "m\\ud800.gguf", "messages": []}', "control characters"),  # a lone surrogate
    ('{"model": "%s", "messages": []}' % ("x" * 1025), "longer than 1024"),
])
def test_bad_transcripts(tmp_path, content, needle):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(InputError, match=needle.replace("{", "\\{").replace("}", "\\}")):
        load_transcript(p)


def test_markdown_export():
    c = Conversation(id="x", created=0, updated=0, model="m.gguf",
                     messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "interrupted": True}])
    md = to_markdown(c)
    assert "## User\n\nq" in md and "## Assistant (interrupted)\n\na" in md


@pytest.mark.parametrize("name, content, why", [
    ("20260101-000002-cccc", '{"id": "x", "created": 1, "updated": 1, "messages": "abc"}',
     '"messages" is not a list'),
    ("20260101-000003-dddd", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ("20260101-000004-eeee", '{"id": "x", "created": 1, "updated": 1, "messages": [1]}',
     "message 1 is not"),
    ("20260101-000005-ffff", None, "not a regular file"),  # a directory named *.json
])
def test_a_malformed_conversation_is_skipped_and_reported(tmp_path, name, content, why):
    store = ConversationStore(tmp_path)
    good = Conversation(id="20260101-000000-aaaa", created=1, updated=1,
                        messages=[{"role": "user", "content": "hi"}])
    store.save(good)
    bad = store.root / f"{name}.json"
    if content is None:
        bad.mkdir()
    else:
        bad.write_text(content)
    assert [c.id for c in store.list()] == [good.id]
    assert [(p.name, w) for p, w in store.skipped if why in w] == [(bad.name, store.skipped[0][1])]
    assert store.latest().id == good.id
    with pytest.raises(InputError, match="not a valid saved conversation"):
        store.load(name)


def test_ids_are_never_glob_patterns_and_prefixes_must_be_unique(tmp_path):
    store = ConversationStore(tmp_path)
    for i in (1, 2):
        store.save(Conversation(id=f"20260101-00000{i}-a{i}", created=i, updated=i))
    for bad in ("*", "2026*", "[0-9]*", "?"):
        with pytest.raises(InputError, match="not a conversation id"):
            store.load(bad)
    with pytest.raises(InputError, match="ambiguous id '20260101': 20260101-000001-a1, 20260101-000002-a2"):
        store.load("20260101")
    assert store.load("20260101-000002").id == "20260101-000002-a2"


def test_deeply_nested_transcript_is_an_input_error(tmp_path):
    p = tmp_path / "deep.json"
    p.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match="nested too deeply"):
        load_transcript(p)
