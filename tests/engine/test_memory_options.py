"""Mapping the model file and dropping its dead pages, KV cache types, the context warning."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import pytest

from chatglm3_cli.engine.llama import placement, runtime
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


def test_the_file_is_mapped_unless_mmap_is_turned_off(monkeypatch):
    monkeypatch.delenv("CHATGLM3_MMAP", raising=False)
    monkeypatch.setattr(placement, "_cpu_extra_buffer_types", lambda: {"CPU_REPACK": 1})
    assert placement.repacked_share(_file(0.9)) == pytest.approx(0.9, abs=0.01)
    assert placement.use_mmap() is True  # mapped; its dead pages are dropped
    monkeypatch.setenv("CHATGLM3_MMAP", "0")
    assert placement.use_mmap() is False


def test_the_load_mode_reaches_llama_cpp():
    """ctypes structures accept any attribute: the choice must land in a real field (it once
    went to `use_mmap`, which this llama.cpp no longer has, and nothing changed)."""
    L = runtime.llama()
    params = L.llama_model_default_params()
    fields = {f[0] for f in type(params)._fields_}
    placement.set_load_mode(params, False)
    if "load_mode" in fields:
        assert params.load_mode == L.LLAMA_LOAD_MODE_NONE
        placement.set_load_mode(params, True)
        assert params.load_mode == L.LLAMA_LOAD_MODE_AUTO
    else:
        assert params.use_mmap is False


def _mapped_rss_kb(path):
    from chatglm3_cli.engine.pagedrop import file_mappings

    ranges = set(file_mappings(path))
    total, cur = 0, None
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split(None, 1)[0]
            if "-" in head and ":" not in head:
                lo, hi = (int(x, 16) for x in head.split("-"))
                cur = (lo, hi) in ranges
            elif head == "Rss:" and cur:
                total += int(line.split()[1])
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc are Linux's")
def test_dropped_pages_leave_memory_and_read_back_the_same(tmp_path):
    import mmap

    from chatglm3_cli.engine.pagedrop import PageDropper

    path = tmp_path / "weights.bin"
    data = os.urandom(8 * 2**20)
    path.write_bytes(data)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        assert bytes(mm[:]) == data  # every page touched: resident
        before = _mapped_rss_kb(path)
        assert before >= 8 * 1024 * 0.9
        dropper = PageDropper(path)
        dropper.drop()
        assert dropper.drops == 1
        assert _mapped_rss_kb(path) < before / 10
        assert bytes(mm[:]) == data  # faulted back in from the file, unchanged


def test_a_model_answers_the_same_mapped_read_and_with_pages_dropped(fixtures, monkeypatch):
    from chatglm3_cli.engine.model import Model

    out = {}
    for name, mm, min_share in (("mapped", "1", 2.0), ("dropped", "1", 0.0), ("read", "0", 0.0)):
        monkeypatch.setenv("CHATGLM3_MMAP", mm)
        monkeypatch.setattr(placement, "DROP_PAGES_MIN_REPACKED", min_share)
        with Model(fixtures.path("tiny-q4_0"), n_ctx=256) as m:
            assert m._llama.mmap is (mm == "1")
            assert m._llama.dropped_pages is (name == "dropped" and sys.platform.startswith("linux"))
            out[name] = m.chat([Message("user", "hello")], SamplingParams(temperature=0, max_tokens=12)).tokens
    assert out["dropped"] == out["mapped"] == out["read"]


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


def test_cpu_flash_attention_only_where_its_memory_matters(monkeypatch):
    """Off on a CPU for parity across prompt cuts, except with a quantized KV cache and past
    FA_CPU_MAX_CELLS_OFF cells, where the attention scores alone would take gigabytes."""
    monkeypatch.delenv("CHATGLM3_FLASH_ATTN", raising=False)
    limit = placement.FA_CPU_MAX_CELLS_OFF
    assert placement.flash_attn_type(False, 4096 * 5) == placement._FA_OFF  # batch's default context
    assert placement.flash_attn_type(False, limit) == placement._FA_OFF
    assert placement.flash_attn_type(False, limit + 1) == placement._FA_ON
    assert placement.flash_attn_type(False, 256, "q8_0") == placement._FA_ON
    assert placement.flash_attn_type(True, 256) == placement._FA_AUTO
    assert placement.uses_flash_attn(False, limit + 1) and not placement.uses_flash_attn(False, limit)
    monkeypatch.setenv("CHATGLM3_FLASH_ATTN", "off")
    assert placement.flash_attn_type(False, limit * 4) == placement._FA_OFF


def test_a_long_context_is_estimated_and_made_with_flash_attention(fixtures, monkeypatch):
    from chatglm3_cli.engine import memory
    from chatglm3_cli.engine.model import Model

    monkeypatch.delenv("CHATGLM3_FLASH_ATTN", raising=False)
    monkeypatch.setattr(placement, "FA_CPU_MAX_CELLS_OFF", 512)
    with Model(fixtures.path("tiny"), n_ctx=1024) as m:
        m.chat([Message("user", "hi")], SamplingParams(temperature=0, max_tokens=2))
        assert m._ctx.flash_attn
        # at long contexts the scores dominate the compute buffer; flash attention has none
        est = memory.estimate(m.info, 65536, n_batch=512, flash_attn=True)
        assert est.compute * 2 < memory.estimate(m.info, 65536, n_batch=512, flash_attn=False).compute
    with Model(fixtures.path("tiny"), n_ctx=256) as m:
        m.chat([Message("user", "hi")], SamplingParams(temperature=0, max_tokens=2))
        assert not m._ctx.flash_attn
