"""Bounds from the model file and the machine: a context claim of 2^31 tokens or more (llama.cpp
reads it into an int32: -2147483648) loads with the default context instead of asking for
std::bad_alloc; --threads past what the machine can run is a usage error, not a crash."""
from __future__ import annotations

import subprocess
import sys

import pytest

from chatglm3_cli.engine.model import DEFAULT_MAX_CTX, Model

from ..gguf_edit import copy_with


@pytest.mark.parametrize("claim", [2**31, 2**32 - 1])
def test_a_context_claim_past_int32_loads_with_the_default(fixtures, tmp_path, claim):
    import gguf

    path = copy_with(fixtures.path("scripted"), tmp_path / "huge.gguf",
                     {".context_length": (claim, gguf.GGUFValueType.UINT32)})
    with Model(path) as m:
        assert 0 < m.n_ctx_train <= DEFAULT_MAX_CTX
        assert m.n_ctx > 0
    run = subprocess.run([sys.executable, "-m", "chatglm3_cli", "run", "-m", str(path), "-t", "0",
                          "--max-tokens", "4", "hi"], capture_output=True, text=True, timeout=300,
                         stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("threads", ["32768", "65535"])
def test_threads_past_what_the_machine_can_run_is_a_usage_error(fixtures, threads):
    """libgomp exited 1 at --threads 32768 and llama.cpp crashed (SIGSEGV) at 65535."""
    run = subprocess.run([sys.executable, "-m", "chatglm3_cli", "run", "-m", str(fixtures.path("tiny")),
                          "--threads", threads, "--max-tokens", "1", "hi"], capture_output=True, text=True,
                         timeout=300, stdin=subprocess.DEVNULL)
    assert run.returncode == 2, (run.returncode, run.stderr[-500:])
    assert f"--threads {threads} is more than this machine can run" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
