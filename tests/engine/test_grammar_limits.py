"""What may become a grammar: bounds checked before any conversion, caches bounded by bytes,
and JSON strings without raw control characters (llama.cpp's own json.gbnf excludes them)."""
from __future__ import annotations

import pytest

from chatglm3_cli.engine import grammar as G
from chatglm3_cli.engine.bytecache import ByteLRU
from chatglm3_cli.engine.grammar_limits import MAX_GRAMMAR_NESTING, grammar_nesting, schema_problem


def test_the_byte_cache_holds_bytes_not_entries():
    cache = ByteLRU(3 * 1024 * 1024)
    for i in range(10):
        cache.put(f"k{i}", "x" * (1024 * 1024 - 16))
    assert cache.bytes <= 3 * 1024 * 1024 and len(cache) == 3
    assert cache.get("k9") is not None and cache.get("k0") is None
    cache.put("huge", "x" * (4 * 1024 * 1024))  # larger than the whole budget: not kept
    assert cache.get("huge") is None and cache.bytes <= 3 * 1024 * 1024


def test_the_schema_grammar_cache_stays_within_its_bytes():
    for i in range(300):  # ~8 kB grammars: 300 of them would be 2.4 MB of entries
        G.schema_grammar({"type": "object", "properties": {f"p{i}": {"type": "string", "maxLength": 1000}}})
    cache = G._schema_grammars
    assert cache.bytes <= cache.max_bytes
    # entries may be grammars or the errors of schemas other tests asked for: measured as the cache does
    from chatglm3_cli.engine.bytecache import _size

    assert sum(_size(k) + _size(v) for k, (v, _) in cache._items.items()) <= cache.max_bytes


@pytest.mark.parametrize("schema", [
    {"type": "string", "maxLength": 1000}, {"type": "string", "pattern": "^a{0,1000}$"},
    {"type": "array", "maxItems": 1000, "items": {"type": "string", "maxLength": 1000}}])
def test_what_the_bounds_allow_stays_within_the_parsers_nesting(schema):
    assert schema_problem(schema) is None
    assert grammar_nesting(G.schema_grammar(schema)) <= MAX_GRAMMAR_NESTING


def test_json_strings_exclude_control_characters_in_llama_cpp_too(fixtures):
    """The grammar as llama.cpp runs it: inside a JSON string, no byte 0x00-0x1F is allowed."""
    from chatglm3_cli.engine.llama import model, runtime, sampler

    vocab = model.LlamaModel(str(fixtures.path("tiny")), 0, vocab_only=True)
    s = sampler.Sampler(temperature=0, top_p=1, top_k=0, repeat_penalty=1.0, seed=None, n_vocab=vocab.n_vocab,
                        grammar=G.schema_grammar({"type": "object"}), vocab=vocab.vocab)
    import numpy as np

    s._cand = np.zeros(vocab.n_vocab, dtype=np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")]))
    single = {}  # one-byte tokens by their byte
    for t in range(vocab.n_vocab):
        b = vocab.token_bytes(t)
        if len(b) == 1:
            single.setdefault(b, t)
    for ch in (b"\n", b"{", b'"'):  # the metadata line's end, then an object's first key opens
        assert s._allowed([single[ch]])[0], ch
        runtime.llama().llama_sampler_accept(s.grammar, single[ch])
    controls = [t for b, t in single.items() if b[0] < 0x20]
    letters = [single[b"a"], single[b"b"]]
    assert len(controls) >= 16
    assert not s._allowed(controls).any()
    assert s._allowed(letters).all()
    s.close()
