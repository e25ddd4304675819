"""`chatglm3 run` through Typer's CliRunner: argv, stdin and files to the library and back."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from chatglm3_cli.cli import console
from chatglm3_cli.cli.app import app
from chatglm3_cli.cli.exit_codes import ExitCode

ANSWER = "Hello! I am ChatGLM3 🙂龘"


@pytest.fixture
def run(fixtures):
    runner = CliRunner()
    model = str(fixtures.path("scripted"))

    def invoke(*args, input=None, model_arg=True, env=None):
        argv = ["run"] + (["-m", model] if model_arg else []) + list(args)
        return runner.invoke(app, argv, input=input, env=env)

    return invoke


def test_answer_on_stdout_only(run):
    r = run("Who are you?", "-t", "0")
    assert r.exit_code == 0, r.output
    assert r.stdout == ANSWER + "\n"
    assert r.stderr == ""


def test_default_sampling_still_follows_the_script(run):
    r = run("hi")  # temperature 0.8 / top_p 0.8: the scripted logits are sharp enough
    assert r.stdout == ANSWER + "\n"


def test_model_from_env(run, fixtures):
    r = run("hi", model_arg=False, env={"CHATGLM3_MODEL": str(fixtures.path("scripted"))})
    assert r.exit_code == 0 and r.stdout == ANSWER + "\n"


def test_stdin_joined_before_arguments(run):
    r = run("--json", "review this", input="diff --git a b\n+line\n")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["messages"] == [{"role": "user", "content": "diff --git a b\n+line\n\nreview this"}]


def test_prompt_from_file_and_system_file(run, tmp_path):
    (tmp_path / "q.txt").write_text("question from a file\n", encoding="utf-8")
    (tmp_path / "sys.txt").write_text("You are terse.\n", encoding="utf-8")
    r = run("-f", str(tmp_path / "q.txt"), "--system-file", str(tmp_path / "sys.txt"), "--json", "and more")
    out = json.loads(r.stdout)
    assert out["messages"] == [{"role": "system", "content": "You are terse."},
                               {"role": "user", "content": "question from a file\n\nand more"}]


def test_file_dash_reads_stdin(run):
    r = run("-f", "-", "--json", input="from stdin")
    assert json.loads(r.stdout)["messages"][-1]["content"] == "from stdin"


def test_json_shape(run, fixtures):
    n_answer = len(fixtures.sidecar("scripted")["answer_ids"])
    r = run("-s", "Be nice.", "hi", "--json", "-t", "0")
    out = json.loads(r.stdout)
    assert set(out) == {"model", "family", "messages", "response", "metadata", "segments", "finish_reason",
                        "usage", "timings"}
    assert out["response"] == ANSWER and out["metadata"] == "" and out["finish_reason"] == "stop"
    assert out["family"] == "chatglm3"
    assert out["usage"]["completion_tokens"] == n_answer
    assert out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"] + n_answer
    assert out["timings"]["generated_tokens"] == n_answer and out["timings"]["prompt_ms"] >= 0
    assert r.stdout.count("\n") == 1  # one JSON object, one line


def test_stats_and_verbose_prompt_go_to_stderr(run):
    r = run("hi", "--stats", "--verbose-prompt", "-t", "0")
    assert r.stdout == ANSWER + "\n"
    assert "64790 64792 64795" in r.stderr
    assert "[[gMASK]][sop][<|user|>]" in r.stderr
    assert "generation: 15 tokens" in r.stderr and "tok/s" in r.stderr


def test_max_tokens(run):
    r = run("hi", "--max-tokens", "3", "--json")
    out = json.loads(r.stdout)
    assert out["response"] == "Hello!" and out["finish_reason"] == "length"


def test_tool_call_json(fixtures):
    r = CliRunner().invoke(app, ["run", "-m", str(fixtures.path("scripted-tool")), "x", "--json"])
    out = json.loads(r.stdout)
    # No tool was offered: the call's text is the answer (as on every path), its name the metadata.
    assert out["metadata"] == "search" and out["finish_reason"] == "stop"
    assert "tool_call(" in out["response"] and out["segments"][0]["metadata"] == "search"


def test_no_prompt_on_a_terminal_prints_usage(run):
    with console.terminal(stdin=True):
        r = run()
    assert r.exit_code == ExitCode.USAGE
    assert "Usage: chatglm3 run" in r.stderr and r.stdout == ""


def test_empty_stdin_is_a_usage_error(run):
    r = run(input="   \n")
    assert r.exit_code == ExitCode.USAGE
    assert "prompt is empty" in r.stderr


@pytest.mark.parametrize("content,needle", [
    (b"\x7fELF\x02\x01\x01\x00\x00\x00binary", "binary"),
    (b"caf\xe9 au lait\n", "not valid UTF-8 (line 1"),
])
def test_bad_prompt_files(run, tmp_path, content, needle):
    p = tmp_path / "bad.txt"
    p.write_bytes(content)
    r = run("-f", str(p))
    assert r.exit_code == ExitCode.INPUT_ERROR
    assert needle in r.stderr and r.stderr.count("\n") == 1 and r.stdout == ""


def test_missing_prompt_file(run, tmp_path):
    r = run("-f", str(tmp_path / "none.txt"))
    assert r.exit_code == ExitCode.INPUT_ERROR and "file not found" in r.stderr


def test_non_utf8_stdin(run):
    r = run("x", input=b"\xff\xfe bad")
    assert r.exit_code == ExitCode.INPUT_ERROR and "stdin is not valid UTF-8" in r.stderr


@pytest.mark.parametrize("make,needle", [
    (lambda d, fx: d / "missing.gguf", "model file not found"),
    (lambda d, fx: (d / "x.gguf").write_text("hello") and d / "x.gguf", "not a GGUF"),
    (lambda d, fx: (d / "cut.gguf").write_bytes(fx.path("scripted").read_bytes()[:-10]) and d / "cut.gguf", "truncated"),
])
def test_bad_model_files(tmp_path, fixtures, make, needle):
    path = make(tmp_path, fixtures)
    r = CliRunner().invoke(app, ["run", "-m", str(path), "hi"])
    assert r.exit_code == ExitCode.MODEL_ERROR
    assert needle in r.stderr and r.stderr.count("\n") == 1
    assert "Traceback" not in r.output


def test_no_model_at_all(run):
    r = run("hi", model_arg=False, env={"HF_HUB_OFFLINE": "1"})  # the default model, not on disk
    assert r.exit_code == ExitCode.MODEL_ERROR and "chatglm3-6b is not on disk" in r.stderr


def test_prompt_longer_than_context(run):
    r = run("--ctx", "256", "word " * 400)
    assert r.exit_code == ExitCode.PROMPT_TOO_LONG
    assert "context holds 256" in r.stderr and "--ctx" in r.stderr


def test_debug_shows_traceback(run, tmp_path):
    r = run("-f", str(tmp_path / "none.txt"), env={"CHATGLM3_DEBUG": "1"})
    assert r.exit_code == ExitCode.INPUT_ERROR and "Traceback" in r.stderr


def test_bad_sampling_value_is_usage_error(run):
    r = run("hi", "--top-p", "0")
    assert r.exit_code == ExitCode.USAGE


def test_system_and_system_file_conflict(run, tmp_path):
    (tmp_path / "s.txt").write_text("x")
    r = run("hi", "-s", "a", "--system-file", str(tmp_path / "s.txt"))
    assert r.exit_code == ExitCode.USAGE


def test_exit_codes_are_stable():
    assert {c.name: int(c) for c in ExitCode} == {
        "OK": 0, "FAILURE": 1, "USAGE": 2, "MODEL_ERROR": 3, "INPUT_ERROR": 4,
        "PROMPT_TOO_LONG": 5, "GENERATION_ERROR": 6, "NETWORK_ERROR": 7, "DISK_FULL": 8,
        "DOWNLOAD_ERROR": 9, "PARTIAL_FAILURE": 10, "STRICT_INVALID_INPUT": 11,
        "MANIFEST_MISMATCH": 12, "CONFIG_ERROR": 13, "OUTPUT_ERROR": 14, "SERVE_ERROR": 15, "CLUSTER_ERROR": 16,
        "TRANSLATE_FAILED": 20,
        "INTERRUPTED": 130, "BROKEN_PIPE": 141}


def test_cache_type_speculation_and_the_context_warning(run, fixtures):
    for args in (["--cache-type", "q8_0"], ["--cache-type", "q4_0", "--speculate"], ["--no-speculate"]):
        r = run("hi", "-t", "0", *args)
        assert r.exit_code == 0, r.output
        assert r.stdout == ANSWER + "\n" and r.stderr == ""
    bad = run("hi", "--cache-type", "q3_k")
    assert bad.exit_code == ExitCode.USAGE and "f16, q8_0, q4_0" in bad.stderr
    from chatglm3_cli.engine.gguf_file import read_gguf

    train = read_gguf(fixtures.path("scripted")).get("chatglm.context_length")
    r = run("hi", "-t", "0", "--ctx", str(train * 2))
    assert r.exit_code == 0, r.output
    assert r.stdout == ANSWER + "\n"
    assert "warning: --ctx" in r.stderr and str(train) in r.stderr
