"""Memory before allocation: the estimate, and a refusal instead of the OOM killer."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from chatglm3_cli.cli.exit_codes import ExitCode
from chatglm3_cli.engine import memory
from chatglm3_cli.engine.gguf_file import GGUFInfo
from chatglm3_cli.errors import InsufficientMemoryError

GiB = 1 << 30


def _info_6b() -> GGUFInfo:
    """ChatGLM3-6B's header numbers (the tensor table is left out: weights count 0)."""
    meta = {"general.architecture": "chatglm", "chatglm.block_count": 28,
            "chatglm.embedding_length": 4096, "chatglm.attention.head_count": 32,
            "chatglm.attention.head_count_kv": 2, "chatglm.feed_forward_length": 13696,
            "tokenizer.ggml.tokens": ["t"] * 65024}
    return GGUFInfo(path=Path("6b.gguf"), version=3, file_size=0, metadata=meta)


def test_kv_cache_of_the_6b_model():
    info = _info_6b()
    # 28 layers x 2 KV heads x (128 + 128) values x 2 bytes = 28 KiB per cell
    assert memory.kv_bytes(info, 1) == 28 * 1024
    # the case: --parallel 256 --ctx 4096 is 257 x 4096 cells, about 28 GiB
    assert 28 * GiB <= memory.kv_bytes(info, 257 * 4096) <= 29 * GiB
    # the chat context alone, 8192 tokens: 224 MiB
    assert memory.kv_bytes(info, 8192) == 224 << 20
    # cache types (for --cache-type): q8_0 and q4_0 blocks of 32 values
    assert memory.kv_bytes(info, 8192, "q8_0") == int(224 * (1 << 20) * 34 / 64)
    assert memory.kv_bytes(info, 8192, "q4_0") == int(224 * (1 << 20) * 18 / 64)
    with pytest.raises(ValueError, match="unknown KV cache type"):
        memory.kv_bytes(info, 1, "q3_x")


def test_refusal_names_the_estimate_the_memory_and_what_to_lower():
    info = _info_6b()
    est = memory.check_context(info, n_cells=4096 * 5, n_batch=512, available=64 * GiB)
    assert est.kv == memory.kv_bytes(info, 4096 * 5) and est.compute > 0
    with pytest.raises(InsufficientMemoryError) as e:
        memory.check_context(info, n_cells=257 * 4096, n_batch=512, available=16 * GiB,
                             what="256 parallel sequences of 4096 tokens", lower="--parallel or --ctx")
    msg = e.value.message
    assert "256 parallel sequences of 4096 tokens" in msg and "16.0 GiB is available" in msg
    assert "KV cache 28." in msg and "lower --parallel or --ctx" in e.value.hint
    # q4_0 needs less: the same context fits where f16 does not
    kv16 = memory.estimate(info, 32768, cache_type="f16").context
    kv4 = memory.estimate(info, 32768, cache_type="q4_0").context
    assert kv4 < kv16
    memory.check_context(info, n_cells=32768, n_batch=512, cache_type="q4_0", available=kv16)


def test_available_memory_is_read_from_the_system():
    free = memory.available_bytes()
    assert free is None or free > 0


def test_a_batch_too_big_for_memory_is_refused_before_allocation(fixtures, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text('{"id": "a", "task": "generate", "prompt": "hi", "max_tokens": 2}\n')
    # 255 sequences of 1M tokens: hundreds of GiB of attention scores, more than any machine
    p = subprocess.run([sys.executable, "-m", "chatglm3_cli", "batch", str(jobs), "-m",
                        str(fixtures.path("tiny")), "-p", "255", "-c", "1000000"],
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert p.returncode == ExitCode.MODEL_ERROR, p.stderr
    assert "not enough memory for a context of 255 parallel sequences of 1000000 tokens" in p.stderr
    # one error line, the last, after the warning that 1M is beyond the model's trained context
    lines = p.stderr.strip().splitlines()
    assert "lower --parallel or --ctx" in lines[-1]
    assert sum("not enough memory" in line for line in lines) == 1
    assert any(line.startswith("warning: --ctx 1000000 is more than the 2048 tokens") for line in lines)
    assert not (tmp_path / "jobs.results.jsonl").exists() or (tmp_path / "jobs.results.jsonl").read_text() == ""


def test_batch_does_not_create_the_chat_context(fixtures):
    from chatglm3_cli.engine.decoder import ParallelDecoder
    from chatglm3_cli.engine.model import Model

    with Model(fixtures.path("tiny"), n_ctx=512, chat_context=False) as m:
        assert m.chat_context is None and m.n_ctx == 512
        with ParallelDecoder(m, n_parallel=2, n_ctx=128) as d:
            assert d.ctx.n_ctx >= 3 * 128
        assert m.chat_context is None  # still none: only the decoder's context was made
        from chatglm3_cli.engine.prompt import Message
        from chatglm3_cli.engine.sampling import SamplingParams

        comp = m.chat([Message("user", "hi")], SamplingParams(temperature=0, max_tokens=2))
        assert comp.completion_tokens >= 1 and m.chat_context is not None  # made on first use
