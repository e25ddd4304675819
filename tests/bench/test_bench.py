"""`chatglm3 bench` on the tiny model: the report's shape (the figures are not tested)."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from chatglm3_cli.bench.measure import bytes_per_token
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
    assert set(d) == {"schema", "model", "settings", "single", "parallel", "memory", "bandwidth",
                      "noisy", "warnings", "load", "grammar", "speculation", "attention"}
    assert d["attention"] == {"ours_flash_attn": False, "raw_flash_attn": "auto"}
    assert isinstance(d["noisy"], bool) and d["noisy"] == bool(d["warnings"])
    assert all(isinstance(d["single"]["ours"][k]["noisy"], bool) for k in d["single"]["ours"])
    assert [g["name"] for g in d["grammar"]] == ["classify", "text", "extract (JSON)"]
    for row in d["grammar"] + d["speculation"]["workloads"]:
        assert row["target"] > 0 and len(row["ratio"]["runs"]) <= 2
    assert d["speculation"]["draft_tokens"] == 3 and len(d["speculation"]["workloads"]) == 4
    assert all(0 <= w["acceptance"] <= 1 for w in d["speculation"]["workloads"])
    assert d["load"] is None  # no --load
    mem = d["memory"]
    assert mem["steady_rss_bytes"] > 0 and mem["load_peak_rss_bytes"] > 0 and mem["load_s"] > 0
    assert mem["kv_cache_bytes"] > 0 and mem["compute_buffer_bytes"] > 0 and mem["mapped"] is True
    for side in ("ours", "raw"):
        for k in ("prefill_tokens_per_s", "decode_tokens_per_s", "time_to_first_token_s"):
            assert len(d["single"][side][k]["runs"]) == 2
            assert d["single"][side][k]["median"] > 0
    assert [p["parallel"] for p in d["parallel"]] == [1, 2]
    assert all(len(p["ours_over_raw_runs"]) == 2 for p in d["parallel"])  # --reps alternating runs
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


def _report(decode_runs):
    from chatglm3_cli.bench.report import BenchReport, Side, Spread

    def side(dec):
        return Side(prefill_tps=Spread([20.0, 21.0]), decode_tps=Spread(dec), ttft_s=Spread([1.0, 1.1]))

    return BenchReport(model="m.gguf", family="chatglm3", quant="Q4_0", size_bytes=10**9, threads=2,
                       gpu_layers=0, prompt_tokens=64, gen_tokens=32, reps=len(decode_runs), records=4,
                       ours=side(decode_runs), raw=side([3.0, 3.1]), parallel=[], peak_rss_bytes=1,
                       bandwidth_gbps=10.0, bytes_per_token=10**9)


def test_a_run_too_noisy_to_trust_is_flagged():
    """The issue's run: decode from 0.47 to 55 tok/s, and a ratio reported as a fact."""
    from chatglm3_cli.bench.format import format_report

    noisy = _report([0.47, 30.0, 55.0])
    assert noisy.ours.decode_tps.noisy and not noisy.raw.decode_tps.noisy
    text = format_report(noisy)
    assert text.startswith("warning: too noisy to trust")
    assert "ours decode: runs from 0.47 to 55.00 (117.0x apart)" in text
    assert "(ours / raw) (noisy: see the warning)" in text
    d = noisy.to_dict()
    assert d["noisy"] is True and d["single"]["ours"]["decode_tokens_per_s"]["noisy"] is True
    calm = _report([3.0, 3.1, 3.05])
    assert calm.warnings() == [] and "warning" not in format_report(calm) and calm.to_dict()["noisy"] is False
    assert _report([3.0]).warnings() == []  # one run: no spread to judge


def test_bench_under_load_reports_both(fixtures, monkeypatch):
    """--load 1: single-stream decode alone and beside another process generating, alternating.
    The table is checked on the same run's report (the table path itself is tested above), so
    the competing processes run once, not twice."""
    from chatglm3_cli.bench import run as bench_run
    from chatglm3_cli.bench.format import format_report

    reports = []

    def keep_report(*args, **kwargs):
        reports.append(real_run_bench(*args, **kwargs))
        return reports[-1]

    real_run_bench = bench_run.run_bench
    monkeypatch.setattr(bench_run, "run_bench", keep_report)
    r = CliRunner().invoke(app, ["bench", "-m", str(fixtures.path("tiny")), "--json", "--reps", "2",
                                 "--gen-tokens", "24", "--prompt-tokens", "16", "--parallel", "1",
                                 "--records", "1", "--load", "1"])
    assert r.exit_code == 0, r.output
    ld = json.loads(r.stdout)["load"]
    assert ld["competitors"] == 1 and ld["omp_wait_policy"]
    assert len(ld["alone_decode_tokens_per_s"]["runs"]) == 2 and len(ld["loaded_over_alone"]["runs"]) == 2
    assert ld["loaded_decode_tokens_per_s"]["median"] > 0
    assert ld["competitor_decode_tokens_per_s"]["runs"]  # the other process did generate meanwhile
    assert len(reports) == 1 and json.loads(json.dumps(reports[0].to_dict()))["load"] == ld
    table = format_report(reports[0])
    assert "loaded / alone" in table and "steady" in table


def test_the_table_leads_with_what_a_user_asks_then_the_comparison():
    from chatglm3_cli.bench.format import format_report

    lines = format_report(_report([3.0, 3.1, 3.05])).splitlines()
    assert lines[0].startswith("m.gguf (chatglm3, Q4_0, 1.00 GB), 2 threads")
    assert [line.split()[0] for line in lines[1:5]] == ["prompt", "answer", "first", "memory"]
    assert "20.50 tokens/s" in lines[1] and "3.05 tokens/s" in lines[2] and "1.05 s" in lines[3]
    comparison = lines.index("compared with a raw llama.cpp loop on the same model")
    assert comparison > 4 and any("(ours / raw)" in line for line in lines[comparison:])
