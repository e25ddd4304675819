"""The prompt cache on disk: what a later process restores gives the same logits, to the bit, as
evaluating without it; damaged, foreign and excess entries never get loaded."""
from __future__ import annotations

import hashlib
import json
import os
import struct

import numpy as np
import pytest

from chatglm3_cli.engine import promptcache
from chatglm3_cli.engine.decoder import DecodeRequest, ParallelDecoder
from chatglm3_cli.engine.llama import context, runtime
from chatglm3_cli.engine.prompt import Message
from chatglm3_cli.engine.sampling import SamplingParams

ONE = SamplingParams(temperature=0, max_tokens=1)
GREEDY = SamplingParams(temperature=0, max_tokens=12)
DOC = ("The philosophy of people is a sophisticated subject. 今天天气很好，我们去公园散步吧。\n"
       "```python\nprint('hi')\n```\n") * 6
ALL_RANDOM = ["tiny", "tiny-q4_0", "tiny-f16", "tiny-q4km"]


def _open(fixtures, kind, root=None, warnings=None, **kw):
    """A model in a fresh context (a process of its own, as far as the KV cache goes), with the
    disk cache at ``root`` (None: without it)."""
    from chatglm3_cli.engine.model import Model

    m = Model(fixtures.path(kind), n_ctx=1024, n_batch=64, **kw)
    if root is not None:
        pc = promptcache.PromptCache(m.path, root=root, warn=(warnings.append if warnings is not None else None))
        m.prompt_cache = pc
        m._kv.disk = pc
    return m


def _last_logits(model) -> np.ndarray:
    ptr = runtime.llama().llama_get_logits_ith(model._ctx.ptr, -1)
    return np.ctypeslib.as_array(ptr, shape=(model._llama.n_vocab,)).copy()


def _ask(m, question: str, params=ONE):
    r = m.generate([Message("system", "Answer from the document."), Message("user", DOC + question)],
                   params).complete()
    return r, _last_logits(m)


@pytest.mark.parametrize("kind", ALL_RANDOM)
def test_a_restored_prefix_gives_the_logits_of_a_run_without_the_cache(fixtures, tmp_path, kind):
    first = _open(fixtures, kind, tmp_path)
    try:
        r1, _ = _ask(first, "What is the first line?")
        assert r1.cached_tokens == 0
    finally:
        first.close()
    assert len(list(tmp_path.glob("*.kv"))) == 1
    later, plain = _open(fixtures, kind, tmp_path), _open(fixtures, kind)
    try:
        r2, restored = _ask(later, "Which language is the code in?")
        r3, alone = _ask(plain, "Which language is the code in?")
        # the whole document came from the file, cut to an aligned length
        assert r2.cached_tokens == later.prompt_cache.restored > len(r2.tokens) + 200
        assert r2.cached_tokens % context.PROMPT_ALIGN == 0 and r3.cached_tokens == 0
        assert np.array_equal(restored, alone), (
            f"{kind}: logits moved by {np.abs(restored - alone).max():.3g} after a restored prefix")
    finally:
        later.close()
        plain.close()


@pytest.mark.parametrize("kind", ["tiny", "tiny-q4km"])
def test_a_resumed_chat_answers_as_if_the_process_had_never_ended(fixtures, tmp_path, kind):
    """Saved at the end of each turn: the next turn in a new process gets the whole conversation
    from the file, and answers what the same process would have answered."""
    from chatglm3_cli.chat.session import ChatSession

    same = _open(fixtures, kind, tmp_path / "a")
    first = _open(fixtures, kind, tmp_path / "b")
    try:
        s = ChatSession(same, params=GREEDY)
        _turn(s, DOC)
        t = ChatSession(first, params=GREEDY)
        _turn(t, DOC)
        assert [m.content for m in t.messages] == [m.content for m in s.messages] and len(s.messages) == 2
        saved = list(t.messages)
        expected_r = _turn(s, "And then?")
        want = _last_logits(same)
    finally:
        same.close()
        first.close()
    resumed = _open(fixtures, kind, tmp_path / "b")
    try:
        u = ChatSession(resumed, params=GREEDY)
        u.load(saved)
        assert u.context_used > 200  # the real context use, before any new turn
        r = _turn(u, "And then?")
        # the conversation came from the file, up to the aligned end of what the turn evaluated
        assert r.cached_tokens == expected_r.cached_tokens == resumed.prompt_cache.restored > 200
        assert r.tokens == expected_r.tokens
        assert np.array_equal(_last_logits(resumed), want)
    finally:
        resumed.close()


def _turn(session, text):
    turn = session.ask(text)
    for _ in turn:  # the session records the answer when the turn ends
        pass
    return turn.result


def _entry(root):
    (p,) = list(root.glob("*.kv"))
    return p


def _rewrite_header(path, change):
    """Edit an entry's header and give it a valid checksum (a well-formed foreign entry)."""
    data = path.read_bytes()
    n = struct.unpack("<I", data[len(promptcache.MAGIC):len(promptcache.MAGIC) + 4])[0]
    start = len(promptcache.MAGIC) + 4
    header = json.loads(data[start:start + n])
    change(header)
    raw = json.dumps(header).encode()
    path.write_bytes(promptcache.MAGIC + struct.pack("<I", len(raw)) + raw + hashlib.sha256(raw).digest()
                     + data[start + n + 32:])


def _flip_last_byte(p):
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))


DAMAGE = {
    "corrupted": (_flip_last_byte, "checksum mismatch"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:-100]), "truncated"),
    "header": (lambda p: p.write_bytes(p.read_bytes()[:20] + b"x" + p.read_bytes()[21:]), "checksum mismatch"),
    "version": (lambda p: _rewrite_header(p, lambda h: h["key"].update(llama_cpp="0.0.1")), "another version"),
    "model": (lambda p: _rewrite_header(p, lambda h: h["key"]["model"].update(size=1)), "another model"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_or_foreign_entry_is_removed_with_one_warning_and_never_loaded(fixtures, tmp_path, damage):
    spoil, why = DAMAGE[damage]
    first = _open(fixtures, "tiny", tmp_path)
    try:
        _ask(first, "What is the first line?")
    finally:
        first.close()
    p = _entry(tmp_path)
    spoil(p)
    warnings: list[str] = []
    later, plain = _open(fixtures, "tiny", tmp_path, warnings), _open(fixtures, "tiny")
    try:
        r, logits = _ask(later, "Which language is the code in?")
        _, alone = _ask(plain, "Which language is the code in?")
        assert r.cached_tokens == 0 and later.prompt_cache.restored == 0
        assert np.array_equal(logits, alone)
        assert len(warnings) == 1 and why in warnings[0] and p.name in warnings[0], warnings
        assert not p.exists() or p.read_bytes()[:0] == b""  # removed (a new entry may take its name)
        # the answer's own entry replaced it, valid
        assert all(promptcache.read_header(q) for q in tmp_path.glob("*.kv"))
    finally:
        later.close()
        plain.close()


def test_entries_are_private_and_bounded_least_recently_used_first(fixtures, tmp_path):
    m = _open(fixtures, "tiny", tmp_path)
    try:
        pc = m.prompt_cache
        docs = [m.tokenize(text * 40)[:200] for text in (DOC, "Another document. ", "A third, different one. ")]
        m.generate(prompt_ids=docs[0], params=ONE).complete()
        (a,) = list(tmp_path.glob("*.kv"))
        assert a.stat().st_mode & 0o777 == 0o600
        pc.limit = int(a.stat().st_size * 2.5)  # room for two entries of this size
        m.generate(prompt_ids=docs[1], params=ONE).complete()
        assert len(list(tmp_path.glob("*.kv"))) == 2
        os.utime(a, (1, 1))  # a: the least recently used
        m.generate(prompt_ids=docs[2], params=ONE).complete()
        left = list(tmp_path.glob("*.kv"))
        assert len(left) == 2 and a not in left
        assert sum(q.stat().st_size for q in left) <= pc.limit
        assert all(q.stat().st_mode & 0o777 == 0o600 for q in left)
    finally:
        m.close()


def test_the_folder_is_made_private(fixtures, tmp_path):
    m = _open(fixtures, "tiny", tmp_path / "prompts")
    try:
        m.generate(prompt_ids=m.tokenize(DOC), params=ONE).complete()
        assert (tmp_path / "prompts").stat().st_mode & 0o777 == 0o700
    finally:
        m.close()


def test_a_write_that_fails_is_one_warning_and_the_answer_is_unchanged(fixtures, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    warnings: list[str] = []
    m = _open(fixtures, "tiny", blocker / "prompts", warnings)
    try:
        r1 = m.generate(prompt_ids=m.tokenize(DOC), params=GREEDY).complete()
        r2 = m.generate(prompt_ids=m.tokenize(DOC + " more"), params=GREEDY).complete()
        assert r1.finish_reason in ("stop", "length") and r2.cached_tokens > 0  # in-process reuse goes on
        assert len(warnings) == 1 and "could not save" in warnings[0]
    finally:
        m.close()


def test_switched_off_by_the_environment(fixtures, monkeypatch, tmp_path):
    from chatglm3_cli.engine.model import Model

    m = Model(fixtures.path("tiny"), n_ctx=256)
    try:
        monkeypatch.setenv("CHATGLM3_PROMPT_CACHE", "0")
        assert promptcache.attach(m) is None and m._kv.disk is None
        monkeypatch.setenv("CHATGLM3_PROMPT_CACHE", "1")
        pc = promptcache.attach(m)
        assert pc is not None and m._kv.disk is pc and pc.root == promptcache.cache_root()
    finally:
        m.close()


def test_size_values(monkeypatch, capsys):
    from chatglm3_cli import env

    assert env.parse_size("4G") == 4 << 30
    assert env.parse_size("500MiB") == 500 << 20
    assert env.parse_size("1024") == 1024
    with pytest.raises(ValueError):
        env.parse_size("lots")
    monkeypatch.setattr(env, "_warned", set())
    monkeypatch.setenv("CHATGLM3_PROMPT_CACHE_SIZE", "lots")
    assert promptcache.max_bytes() == promptcache.DEFAULT_MAX_BYTES
    assert promptcache.max_bytes() == promptcache.DEFAULT_MAX_BYTES
    assert capsys.readouterr().err.count("CHATGLM3_PROMPT_CACHE_SIZE='lots' is not a size") == 1


def test_a_jobs_shared_instructions_survive_the_run(fixtures, tmp_path):
    """batch/translate: the instructions the decoder keeps are saved, and the next run's decoder
    (a new context) restores them instead of evaluating them; answers stay the same."""
    system = "You are a careful assistant. " + DOC

    def run(root):
        m = _open(fixtures, "tiny-q4_0", root)
        if root is None:
            m.prompt_cache = None
        try:
            with ParallelDecoder(m, n_parallel=2, n_ctx=512, n_batch=64) as dec:
                reqs = [DecodeRequest(str(i), [Message("system", system), Message("user", f"Item {i}")],
                                      params=GREEDY) for i in range(3)]
                out = {r.key: r.completion.tokens for r in dec.run(reqs)}
                return out, dec.stats.evaluated_prompt_tokens
        finally:
            m.close()

    plain, evaluated = run(None)
    first, ev1 = run(tmp_path)
    assert first == plain and ev1 == evaluated and list(tmp_path.glob("*.kv"))
    second, ev2 = run(tmp_path)
    assert second == plain
    assert ev2 < ev1 - 200  # the instructions came from the file


def test_a_servers_kept_conversations_survive_a_restart(fixtures, tmp_path):
    """serve keeps each finished conversation (retain=True); a restarted server (a new decoder
    and context) gets the next turn's beginning from the file, with the same answer."""
    turn1 = [Message("system", "Be brief."), Message("user", DOC)]

    def serve(root, messages):
        m = _open(fixtures, "tiny", root)
        if root is None:
            m.prompt_cache = None
        try:
            with ParallelDecoder(m, n_parallel=2, n_ctx=768, n_batch=64) as dec:
                (r,) = list(dec.run([DecodeRequest("a", messages, params=GREEDY)], retain=True))
                return r.completion
        finally:
            m.close()

    first = serve(tmp_path, turn1)
    turn2 = turn1 + [Message("assistant", first.text, token_ids=first.tokens), Message("user", "Shorter?")]
    restarted = serve(tmp_path, turn2)
    plain = serve(None, turn2)
    assert plain.cached_tokens == 0 and restarted.cached_tokens > len(first.tokens) + 200
    assert restarted.tokens == plain.tokens


def test_entries_are_kept_apart_by_kv_cache_type_and_skipped_where_they_do_not_fit(fixtures, tmp_path):
    from chatglm3_cli.engine.model import Model

    first = _open(fixtures, "tiny-q4_0", tmp_path)
    try:
        _ask(first, "What is the first line?")
    finally:
        first.close()
    (f16_entry,) = list(tmp_path.glob("*.kv"))
    warnings: list[str] = []
    # a quantized KV cache (flash attention on, V not transposed; heads of 64): another key
    q8 = _open(fixtures, "tiny-q4_0", tmp_path, warnings, cache_type="q8_0")
    try:
        r, _ = _ask(q8, "Which language is the code in?")
        assert r.cached_tokens == 0
    finally:
        q8.close()
    later, plain = (_open(fixtures, "tiny-q4_0", tmp_path, warnings, cache_type="q8_0"),
                    _open(fixtures, "tiny-q4_0", None, cache_type="q8_0"))
    try:  # its own entry, from disk, exact
        r, logits = _ask(later, "Which language is the code in, again?")
        _, alone = _ask(plain, "Which language is the code in, again?")
        assert r.cached_tokens == later.prompt_cache.restored > 200 and np.array_equal(logits, alone)
    finally:
        later.close()
        plain.close()
    # the f16 entry, and one q8_0 entry (the second question's covers all the first one could give)
    assert f16_entry.exists() and len(list(tmp_path.glob("*.kv"))) == 2
    # a context too small to load the entry whole: not used, not removed, no warning
    small = Model(fixtures.path("tiny-q4_0"), n_ctx=256, n_batch=64)
    try:
        pc = promptcache.PromptCache(small.path, root=tmp_path, warn=warnings.append)
        small.prompt_cache, small._kv.disk = pc, pc
        ids = small.prompt_ids([Message("system", "Answer from the document."), Message("user", DOC)])[:200]
        r = small.generate(prompt_ids=ids, params=ONE).complete()
        assert r.cached_tokens == 0 and f16_entry.exists()
    finally:
        small.close()
    assert warnings == []


@pytest.mark.parametrize("kind", ["tiny", "tiny-q4_0"])
def test_an_entry_saved_by_one_sequence_serves_the_parallel_decoder(fixtures, tmp_path, kind):
    """The chat context (one sequence) and the decoder's (a unified cache of many) write the
    same state layout: `run -f doc` in one process, a batch over the same document in the next."""
    system = "Answer from the document."
    first = _open(fixtures, kind, tmp_path)
    try:
        first.generate([Message("system", system), Message("user", DOC + "Intro?")], ONE).complete()
    finally:
        first.close()

    def batch(root):
        m = _open(fixtures, kind, root)
        if root is None:
            m.prompt_cache = None
        try:
            with ParallelDecoder(m, n_parallel=2, n_ctx=512, n_batch=64) as dec:
                reqs = [DecodeRequest("a", [Message("system", system), Message("user", DOC + "Summary?")],
                                      params=GREEDY)]
                (r,) = list(dec.run(reqs))
                return r.completion
        finally:
            m.close()

    restored, plain = batch(tmp_path), batch(None)
    assert restored.cached_tokens > 200 and plain.cached_tokens == 0
    assert restored.tokens == plain.tokens


def test_an_entry_whose_cells_do_not_match_its_tokens_is_removed(fixtures, tmp_path):
    """A header edited to list other tokens than the cells hold (its checksum made valid):
    llama.cpp would load the cells, but they are checked against the tokens first."""
    first = _open(fixtures, "tiny", tmp_path)
    try:
        _ask(first, "What is the first line?")
    finally:
        first.close()
    p = _entry(tmp_path)
    _rewrite_header(p, lambda h: h.update(tokens=h["tokens"] + h["tokens"][:40]))
    warnings: list[str] = []
    later = _open(fixtures, "tiny", tmp_path, warnings)
    try:
        # a prompt that starts with what the header now claims, so that the entry is chosen
        ids = later.prompt_ids([Message("system", "Answer from the document."),
                                Message("user", DOC + "What is the first line?")])
        forged = promptcache.read_header(p).tokens
        r = later.generate(prompt_ids=forged + later.tokenize(" more"), params=ONE).complete()
        assert r.cached_tokens == 0 and len(ids) < len(forged)
        assert len(warnings) == 1 and "do not match" in warnings[0] and not p.exists()
    finally:
        later.close()


def test_a_full_disk_is_one_warning_and_leaves_no_partial_file(fixtures, tmp_path, monkeypatch):
    import errno

    def full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    warnings: list[str] = []
    m = _open(fixtures, "tiny", tmp_path, warnings)
    try:
        monkeypatch.setattr(promptcache.os, "fsync", full)  # the write reaches a full disk
        r1, _ = _ask(m, "What is the first line?", GREEDY)
        r2, _ = _ask(m, "Which language is the code in?", GREEDY)
        assert r1.finish_reason != "interrupted" and r2.cached_tokens > 200  # in-process reuse goes on
        assert warnings == [f"prompt cache: could not save an evaluated prompt in {tmp_path} "
                            "(No space left on device)"]
        assert [p.name for p in tmp_path.iterdir()] == [".lock"]  # no entry, no temp file
    finally:
        m.close()
