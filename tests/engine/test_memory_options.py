"""Loading without mmap when most weights are repacked, KV cache types, the context warning."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from chatglm3_cli.engine import backend
from chatglm3_cli.engine.prompt import Message
from chatglm3_cli.engine.sampling import SamplingParams
from chatglm3_cli.errors import ModelLoadError


@dataclass
class _T:  # the fields of a GGUF tensor record that the placement rules read
    name: str
    ggml_type: int
    shape: tuple
    size: int

    def nbytes(self):
        return self.size


def _file(q4_share: float):
    big = 1000
    return [_T("token_embd.weight", 2, (4096, 65024), int(big * (1 - q4_share) / 2)),
            _T("output.weight", 14, (4096, 65024), int(big * (1 - q4_share) / 2)),
            _T("blk.0.ffn_up.weight", 2, (4096, 27392), int(big * q4_share)),
            _T("blk.0.attn_norm.weight", 0, (4096,), 1)]


def test_mmap_is_kept_unless_most_weights_are_repacked(monkeypatch):
    monkeypatch.delenv("CHATGLM3_MMAP", raising=False)
    monkeypatch.setattr(backend, "_cpu_extra_buffer_types", lambda: {"CPU_REPACK": 1})
    assert backend.repacked_share(_file(0.9)) == pytest.approx(0.9, abs=0.01)
    assert backend.use_mmap(0, _file(0.9)) is False  # a 6B Q4_0 file: 96% repacked
    assert backend.use_mmap(0, _file(0.2)) is True  # the tiny fixtures: mostly embeddings
    assert backend.use_mmap(99, _file(0.9)) is True  # on a GPU nothing is repacked
    monkeypatch.setattr(backend, "_cpu_extra_buffer_types", lambda: {})
    assert backend.use_mmap(0, _file(0.9)) is True  # no repacking kernels on this CPU
    monkeypatch.setenv("CHATGLM3_MMAP", "0")
    assert backend.use_mmap(0, _file(0.2)) is False


def test_a_model_read_without_mmap_answers_as_mapped(fixtures, monkeypatch):
    from chatglm3_cli.engine.model import Model

    out = {}
    for mm in ("1", "0"):
        monkeypatch.setenv("CHATGLM3_MMAP", mm)
        with Model(fixtures.path("tiny-q4_0"), n_ctx=256) as m:
            assert m._llama.mmap is (mm == "1")
            out[mm] = m.chat([Message("user", "hello")], SamplingParams(temperature=0, max_tokens=12)).tokens
    assert out["0"] == out["1"]


@pytest.mark.parametrize("cache_type", ["q8_0", "q4_0"])
def test_quantized_kv_cache(fixtures, cache_type):
    from chatglm3_cli.engine.decoder import DecodeRequest, ParallelDecoder
    from chatglm3_cli.engine.model import Model

    with Model(fixtures.path("scripted"), n_ctx=256, cache_type=cache_type) as m:
        assert m._ctx.cache_type == cache_type
        assert m._ctx.buffer_bytes["kv"] > 0
        r = m.chat([Message("user", "hi")], SamplingParams(temperature=0))
        assert r.text == fixtures.sidecar("scripted")["answer"]
        with ParallelDecoder(m, n_parallel=2, n_ctx=128) as d:
            assert d.ctx.cache_type == cache_type
            res = list(d.run([DecodeRequest(str(i), messages=[Message("user", "hi")],
                                            params=SamplingParams(temperature=0)) for i in range(3)]))
        assert all(x.completion.text == r.text for x in res)


def test_kv_cache_size_follows_the_type(fixtures):
    from chatglm3_cli.engine.model import Model

    sizes = {}
    for t in ("f16", "q8_0", "q4_0"):
        with Model(fixtures.path("tiny-q4_0"), n_ctx=512, cache_type=t) as m:  # heads of 64
            sizes[t] = m._ctx.buffer_bytes["kv"]
    assert sizes["f16"] > sizes["q8_0"] > sizes["q4_0"] > 0
    assert sizes["q8_0"] / sizes["f16"] == pytest.approx(34 / 64, rel=0.03)  # 34 bytes per 32 values (log in MiB)
    with pytest.raises(ModelLoadError, match="does not divide"):  # heads of 16 cannot be quantized
        Model(fixtures.path("tiny"), n_ctx=512, cache_type="q8_0")


def test_bad_cache_type_and_context_warning(fixtures):
    from chatglm3_cli.engine.model import Model

    with pytest.raises(ValueError, match="q8_0"):
        Model(fixtures.path("tiny"), cache_type="q3")
    with Model(fixtures.path("tiny"), n_ctx=256) as m:
        assert m.warnings == []
        train = m.n_ctx_train
    with Model(fixtures.path("tiny"), n_ctx=train * 2) as m:
        assert len(m.warnings) == 1 and str(train) in m.warnings[0]
