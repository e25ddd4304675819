"""`chatglm3 bench` on the tiny model: the report's shape (the figures are not tested)."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from chatglm3_cli.bench.run import bytes_per_token
from chatglm3_cli.cli.app import app
from chatglm3_cli.cli.exit_codes import ExitCode
from chatglm3_cli.engine.gguf_file import read_gguf


def test_bench_json_schema(fixtures):
    r = CliRunner().invoke(app, ["bench", "-m", str(fixtures.path("tiny")), "--json", "--reps", "2",
                                 "--gen-tokens", "4", "--prompt-tokens", "16", "--parallel", "1,2",
                                 "--records", "3"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["schema"] == 1
    assert set(d) == {"schema", "model", "settings", "single", "parallel", "memory", "bandwidth"}
    for side in ("ours", "raw"):
        for k in ("prefill_tokens_per_s", "decode_tokens_per_s", "time_to_first_token_s"):
            assert len(d["single"][side][k]["runs"]) == 2
            assert d["single"][side][k]["median"] > 0
    assert [p["parallel"] for p in d["parallel"]] == [1, 2]
    assert d["parallel"][0]["ours"]["speedup_vs_1"] == 1.0
    assert d["memory"]["peak_rss_bytes"] > 0 and d["bandwidth"]["measured_read_gb_per_s"] > 0
    assert "bench: loading the model" in r.stderr


def test_bench_table_and_bad_parallel(fixtures):
    runner = CliRunner()
    bad = runner.invoke(app, ["bench", "-m", str(fixtures.path("tiny")), "--parallel", "one,two"])
    assert bad.exit_code == ExitCode.USAGE
    ok = runner.invoke(app, ["bench", "-m", str(fixtures.path("scripted")), "--reps", "1", "--gen-tokens", "4",
                             "--prompt-tokens", "16", "--parallel", "1", "--records", "2"])
    assert ok.exit_code == 0, ok.output
    assert "ours / raw" in ok.stdout and "GB read per token" in ok.stdout


def test_bytes_per_token_counts_one_embedding_row(fixtures):
    info = read_gguf(fixtures.path("tiny"))
    total = sum(t.nbytes() for t in info.tensors)
    embd = next(t for t in info.tensors if t.name == "token_embd.weight")
    assert bytes_per_token(info) == total - embd.nbytes() + embd.nbytes() // embd.shape[1]
