"""`chatglm3 batch` as a user runs it: CliRunner for argv/files/exit codes, real processes for
signals (SIGKILL mid-run, Ctrl-C)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from chatglm3_cli.cli.app import app
from chatglm3_cli.cli.exit_codes import ExitCode

from ..startup import started

ANSWER = "Hello! I am ChatGLM3 🙂龘"
CMD = [sys.executable, "-m", "chatglm3_cli"]


def jsonl(records) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def gen(i, **kw):
    return {"id": f"g{i}", "task": "generate", "prompt": f"prompt {i}", "max_tokens": 4, **kw}


def read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def ids(lines):
    return [line.get("custom_id", line.get("id")) for line in lines]


@pytest.fixture
def batch(fixtures):
    runner = CliRunner()
    model = str(fixtures.path("scripted"))

    def invoke(*args, input=None, model_path=None):
        return runner.invoke(app, ["batch", "-m", model_path or model, "-t", "0", *args], input=input)

    return invoke


def test_results_beside_the_input(batch, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(jsonl([gen(0), gen(1), {"id": "c", "task": "chat",
                                            "messages": [{"role": "user", "content": "hi"}]}]))
    r = batch(str(jobs))
    assert r.exit_code == 0, r.output
    assert r.stdout == ""
    out = tmp_path / "jobs.results.jsonl"
    lines = read(out)
    assert sorted(ids(lines)) == ["c", "g0", "g1"]
    assert {line["id"]: line["output"] for line in lines}["c"] == ANSWER
    manifest = json.loads((tmp_path / "jobs.results.jsonl.manifest.json").read_text())
    assert manifest["model"]["sha256"] and len(manifest["model"]["sha256"]) == 64
    assert manifest["params"]["temperature"] == 0 and manifest["version"]
    # gen() records stop at max_tokens 4: cut off, and counted so, not as successes
    assert "3 records: 1 succeeded, 2 cut off at max_tokens, 0 failed" in r.stderr and "results: " in r.stderr
    assert "batch: 2 answers stopped at max_tokens before the model finished" in r.stderr
    assert not (tmp_path / ".jobs.results.jsonl.lock").exists()  # the lock goes with the run


def test_stdin_to_stdout(batch):
    r = batch("-", input=jsonl([gen(0), gen(1)]))
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.stdout.splitlines()]  # only JSON lines on stdout
    assert sorted(ids(lines)) == ["g0", "g1"] and lines[0]["output"]
    assert "results: stdout" in r.stderr


def test_openai_batch_file_round_trip(batch, tmp_path):
    jobs = tmp_path / "openai.jsonl"
    jobs.write_text(jsonl([{"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
                            "body": {"model": "gpt-4o-mini", "max_tokens": 30,
                                     "messages": [{"role": "system", "content": "Be brief."},
                                                  {"role": "user", "content": f"question {i}"}]}}
                           for i in range(3)]))
    r = batch(str(jobs), "-o", str(tmp_path / "out.jsonl"))
    assert r.exit_code == 0, r.output
    lines = read(tmp_path / "out.jsonl")
    assert sorted(ids(lines)) == ["req-0", "req-1", "req-2"]
    for line in lines:
        assert line["error"] is None and line["response"]["status_code"] == 200
        assert line["response"]["body"]["choices"][0]["message"]["content"] == ANSWER


def test_invalid_records_are_listed_and_the_rest_runs(batch, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(jsonl([gen(0)]) + "{not json\n" + jsonl([{"id": "u", "task": "poem"}, gen(0)]))
    r = batch(str(jobs))
    assert r.exit_code == ExitCode.PARTIAL_FAILURE, r.output
    assert "3 invalid records of 4" in r.stderr
    assert "line 2: invalid JSON" in r.stderr and "line 3: unknown task 'poem'" in r.stderr
    assert "line 4: duplicate id 'g0' (first on line 1)" in r.stderr
    assert "error: 3 of 4 records failed" in r.stderr and "--retry-errors" in r.stderr
    lines = read(tmp_path / "jobs.results.jsonl")
    assert len(lines) == 4
    errors = [line for line in lines if line["error"]]
    assert {e["error"]["type"] for e in errors} == {"InvalidRecordError"}
    assert sorted(e.get("line", 0) for e in errors) == [0, 2, 4]  # id-less reports carry their line


def test_strict_runs_nothing(batch, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(jsonl([gen(0), {"id": "x", "task": "classify", "text": "t"}]))
    r = batch(str(jobs), "--strict")
    assert r.exit_code == ExitCode.STRICT_INVALID_INPUT
    assert 'line 2: missing "labels"' in r.stderr and "nothing was run" in r.stderr
    assert not (tmp_path / "jobs.results.jsonl").exists()
    assert not (tmp_path / "jobs.results.jsonl.manifest.json").exists()


def test_tools_for_a_model_without_a_tool_format_are_that_records_error(batch, fixtures, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    tool = {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}
    jobs.write_text(jsonl([{"id": "t", "task": "chat", "messages": [{"role": "user", "content": "hi"}],
                            "tools": [tool]}, gen(0)]))
    r = batch(str(jobs), model_path=str(fixtures.path("template")))
    assert r.exit_code == ExitCode.PARTIAL_FAILURE, r.output
    lines = {line["id"]: line for line in read(tmp_path / "jobs.results.jsonl")}
    assert "has no tool-calling format" in lines["t"]["error"]["message"] and lines["g0"]["error"] is None


@pytest.mark.parametrize("content, message", [
    ("# Guide\n\nSome *Markdown* given by mistake.\n\n- one\n- two\n", "none of its 4 records is a valid job"),
    ("".join(f"line {i}\n" for i in range(12)) + jsonl([gen(0)]), "its first 12 records are all invalid"),
])
def test_a_file_that_is_not_jobs_stops_before_the_model_loads(batch, tmp_path, content, message):
    jobs = tmp_path / "guide.md"
    jobs.write_text(content)
    r = batch(str(jobs), model_path=str(tmp_path / "no-model-needed.gguf"))  # never opened
    assert r.exit_code == ExitCode.USAGE, r.output
    assert message in r.stderr and "JSON Lines" in r.stderr and "nothing was run" in r.stderr
    assert not (tmp_path / "guide.md.results.jsonl").exists()
    assert not list(tmp_path.glob("*.manifest.json"))


@pytest.mark.parametrize("content, message", [
    (b"\x00\x01\x02\x03binary", "looks like a binary file"),
    (b"", "has no records"),
])
def test_unusable_input_files(batch, tmp_path, content, message):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_bytes(content)
    r = batch(str(jobs))
    assert r.exit_code == ExitCode.INPUT_ERROR and message in r.stderr
    assert not (tmp_path / "jobs.results.jsonl").exists()


def test_non_utf8_line_fails_alone(batch, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_bytes(jsonl([gen(0)]).encode() + b'{"id": "z", "task": "generate", "prompt": "caf\xe9"}\n')
    r = batch(str(jobs))
    assert r.exit_code == ExitCode.PARTIAL_FAILURE
    assert "line 2: not valid UTF-8" in r.stderr


def test_missing_file_and_output_equal_to_input(batch, tmp_path):
    r = batch(str(tmp_path / "nope.jsonl"))
    assert r.exit_code == ExitCode.INPUT_ERROR and "file not found" in r.stderr
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(jsonl([gen(0)]))
    r = batch(str(jobs), "-o", str(jobs))
    assert r.exit_code == ExitCode.USAGE


def test_rerun_resumes_and_repairs_a_half_written_last_line(batch, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(jsonl([gen(i) for i in range(3)]))
    assert batch(str(jobs)).exit_code == 0
    out = tmp_path / "jobs.results.jsonl"
    first = read(out)
    # Drop the last answer and leave half of it, as a crash mid-write would.
    raw = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(raw[:-1]) + raw[-1][:25])
    jobs.write_text(jsonl([gen(i) for i in range(5)]))
    r = batch(str(jobs))
    assert r.exit_code == 0, r.output
    assert "removed a half-written last line" in r.stderr
    assert "(2 answered by an earlier run)" in r.stderr
    lines = read(out)
    assert sorted(ids(lines)) == ["g0", "g1", "g2", "g3", "g4"]  # each once
    assert lines[:2] == first[:2]  # earlier answers kept as they were
    r = batch(str(jobs))  # nothing left to do
    assert r.exit_code == 0 and "(5 answered by an earlier run)" in r.stderr and len(read(out)) == 5


def test_retry_errors(batch, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(jsonl([gen(0), gen(1)]))
    assert batch(str(jobs)).exit_code == 0
    out = tmp_path / "jobs.results.jsonl"
    lines = read(out)  # g1 failed, as a transient llama.cpp error would leave it
    failed = next(line for line in lines if line["id"] == "g1")
    failed.update(output=None, error={"type": "GenerationError", "message": "llama_decode failed"})
    out.write_text(jsonl(lines))
    r = batch(str(jobs))  # failed ids are kept without --retry-errors
    assert r.exit_code == ExitCode.PARTIAL_FAILURE and "(2 answered by an earlier run)" in r.stderr
    r = batch(str(jobs), "--retry-errors")
    assert r.exit_code == 0, r.output
    lines = read(out)
    assert sorted(ids(lines)) == ["g0", "g1"] and all(line["error"] is None for line in lines)


def test_a_record_edited_since_its_answer_is_redone(batch, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(jsonl([gen(0), gen(1), {"id": "x", "task": "summarise", "text": "t"}]))
    assert batch(str(jobs)).exit_code == ExitCode.PARTIAL_FAILURE
    out = tmp_path / "jobs.results.jsonl"
    before = {line["id"]: line for line in read(out)}
    manifest = json.loads((tmp_path / "jobs.results.jsonl.manifest.json").read_text())
    assert manifest["input"]["path"] == str(jobs) and len(manifest["input"]["sha256"]) == 64
    assert sorted(manifest["records"]) == ["g0", "g1", "x"]
    # g1 now asks something else, x is fixed: both are answered again, g0 is kept.
    jobs.write_text(jsonl([gen(0), gen(1, prompt="a much longer prompt than before, really"),
                           {"id": "x", "task": "summarize", "text": "t", "max_tokens": 4}]))
    r = batch(str(jobs))
    assert r.exit_code == 0, r.output
    assert "(1 answered by an earlier run)" in r.stderr
    assert "2 answers in" in r.stderr and "their records changed" in r.stderr
    after = {line["id"]: line for line in read(out)}
    assert sorted(after) == ["g0", "g1", "x"] and after["g0"] == before["g0"]
    assert after["g1"]["usage"]["prompt_tokens"] > before["g1"]["usage"]["prompt_tokens"]
    assert after["x"]["error"] is None


def test_another_jobs_results_file_is_refused(batch, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text(jsonl([gen(0), gen(1)]))
    b.write_text(jsonl([gen(0, prompt="other"), gen(1, prompt="other")]))
    assert batch(str(a)).exit_code == 0
    out = tmp_path / "a.results.jsonl"
    kept = out.read_bytes()
    r = batch(str(b), "-o", str(out))
    assert r.exit_code == ExitCode.MANIFEST_MISMATCH, r.output
    assert "holds the results of another job" in r.stderr and "a.jsonl -> " in r.stderr
    assert out.read_bytes() == kept
    r = batch("-", "-o", str(out), input=a.read_text())
    assert r.exit_code == ExitCode.MANIFEST_MISMATCH  # the path differs: a.jsonl -> stdin
    r = batch("-", "-o", str(out), "--force", input=a.read_text())
    assert r.exit_code == 0 and "(2 answered by an earlier run)" in r.stderr
    # a.jsonl overwritten with another job: the name cannot tell, the records do.
    a.write_text(b.read_text())
    r = batch(str(a))
    assert r.exit_code == ExitCode.MANIFEST_MISMATCH and "none of its 2 answers" in r.stderr
    assert out.read_bytes() == kept
    r = batch(str(b), "-o", str(out), "--force")  # forced: every answer is redone for b
    assert r.exit_code == 0, r.output
    assert "answered by an earlier run" not in r.stderr
    assert sorted(ids(read(out))) == ["g0", "g1"]


def test_the_lock_is_taken_on_the_real_file(batch, tmp_path):
    from chatglm3_cli.batch.results import ResultsFile

    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(jsonl([gen(0)]))
    real = tmp_path / "real" / "results.jsonl"
    real.parent.mkdir()
    (tmp_path / "link.jsonl").symlink_to(real)
    other = ResultsFile(real)
    other.lock()  # a run writing the real name
    try:
        r = batch(str(jobs), "-o", str(tmp_path / "link.jsonl"))
        r2 = batch(str(jobs), "-o", str(tmp_path / "real" / ".." / "real" / "results.jsonl"))
    finally:
        other.close()
    assert r.exit_code == ExitCode.USAGE and "another chatglm3 batch is writing" in r.stderr
    assert r2.exit_code == ExitCode.USAGE
    assert not real.exists()


def test_the_lock_holds_for_a_hard_link_to_the_same_results(batch, tmp_path):
    """Another name for the same file (a hard link, here in another folder) is the same
    results: a second run through it is refused, so no id is written twice."""
    from chatglm3_cli.batch.results import ResultsFile, manifest_path

    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(jsonl([gen(0)]))
    real = tmp_path / "a" / "results.jsonl"
    real.parent.mkdir()
    assert batch(str(jobs), "-o", str(real)).exit_code == 0
    jobs.write_text(jsonl([gen(0), gen(1)]))  # one more record: a run would resume and add it
    (tmp_path / "b").mkdir()
    link = tmp_path / "b" / "other-name.jsonl"
    os.link(real, link)
    os.link(manifest_path(real), manifest_path(link))
    other = ResultsFile(real)
    other.lock()  # a run writing through the first name
    try:
        r = batch(str(jobs), "-o", str(link))
    finally:
        other.close()
    assert r.exit_code == ExitCode.USAGE and "hard link" in r.stderr, r.output
    assert ids(read(real)) == ["g0"]  # nothing written through the other name


def test_force_on_a_foreign_file_does_not_count_its_lines(batch, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(jsonl([gen(0), gen(1)]))
    out = tmp_path / "jobs.results.jsonl"
    out.write_text(jsonl([{"id": "g0", "output": "not ours", "error": None},
                          {"id": "zz", "note": "unrelated"}]))
    r = batch(str(jobs), "--force")
    assert r.exit_code == 0, r.output
    assert "answered by an earlier run" not in r.stderr and "no manifest vouches" in r.stderr
    lines = {line["id"]: line for line in read(out)}
    assert lines["g0"]["output"] != "not ours" and lines["g0"]["error"] is None
    assert lines["g1"]["error"] is None and lines["g0"]["usage"]["completion_tokens"] > 0


def test_unloadable_lines_are_that_records_error(batch, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    deep = "[" * 100_000 + "]" * 100_000
    jobs.write_text(jsonl([gen(0)]) + '{"id": ' + "9" * 5000 + ', "task": "generate", "prompt": "x"}\n'
                    + '{"id": "d", "task": "chat", "messages": ' + deep + '}\n' + jsonl([gen(1)]))
    r = batch(str(jobs))
    assert r.exit_code == ExitCode.PARTIAL_FAILURE, r.output
    assert "line 2: invalid JSON" in r.stderr and "line 3: invalid JSON (nested too deeply)" in r.stderr
    lines = read(tmp_path / "jobs.results.jsonl")
    assert sorted(str(i) for i in ids(lines)) == ["None", "None", "g0", "g1"]
    assert sorted(line.get("line", 0) for line in lines if line["error"]) == [2, 3]


def test_manifest_mismatch_and_force(batch, fixtures, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(jsonl([gen(0)]))
    assert batch(str(jobs)).exit_code == 0
    jobs.write_text(jsonl([gen(0), gen(1)]))
    r = batch(str(jobs), "-t", "0.5")
    assert r.exit_code == ExitCode.MANIFEST_MISMATCH
    assert "temperature: 0.0 -> 0.5" in r.stderr and "--force" in r.stderr
    r = batch(str(jobs), model_path=str(fixtures.path("tiny")))
    assert r.exit_code == ExitCode.MANIFEST_MISMATCH and "model: " in r.stderr and "sha256" in r.stderr
    assert len(read(tmp_path / "jobs.results.jsonl")) == 1  # nothing written
    r = batch(str(jobs), "-t", "0.5", "--force")
    assert r.exit_code == 0, r.output
    assert "--force: resuming with other settings" in r.stderr
    manifest = json.loads((tmp_path / "jobs.results.jsonl.manifest.json").read_text())
    assert manifest["params"]["temperature"] == 0.5 and manifest["previous"][0]["params"]["temperature"] == 0
    assert sorted(ids(read(tmp_path / "jobs.results.jsonl"))) == ["g0", "g1"]


def test_a_manifest_without_results_is_replaced(batch, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(jsonl([gen(0)]))
    assert batch(str(jobs)).exit_code == 0
    (tmp_path / "jobs.results.jsonl").unlink()  # the user starts over
    r = batch(str(jobs), "-t", "0.5")
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "jobs.results.jsonl.manifest.json").read_text())
    assert manifest["params"]["temperature"] == 0.5


def test_a_second_run_of_the_same_job_at_once_is_refused(batch, tmp_path):
    from chatglm3_cli.batch.results import ResultsFile

    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(jsonl([gen(0)]))
    other = ResultsFile(tmp_path / "jobs.results.jsonl")
    other.lock()  # as a run in another terminal would
    try:
        r = batch(str(jobs))
    finally:
        other.close()
    assert r.exit_code == ExitCode.USAGE and "another chatglm3 batch is writing" in r.stderr


def test_foreign_results_file_is_not_touched(batch, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(jsonl([gen(0)]))
    (tmp_path / "jobs.results.jsonl").write_text("my own notes\n")
    r = batch(str(jobs))
    assert r.exit_code == ExitCode.MANIFEST_MISMATCH and "has no manifest" in r.stderr
    assert (tmp_path / "jobs.results.jsonl").read_text() == "my own notes\n"


# real processes -----------------------------------------------------------------------------

def _env():
    env = dict(os.environ)
    env.pop("CHATGLM3_DEBUG", None)
    env.pop("CHATGLM3_MODEL", None)
    return env


def _start(args, tmp_path):
    return subprocess.Popen(CMD + ["batch", *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env(), cwd=tmp_path)


def _wait_for_lines(path, n, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        if proc.poll() is not None:
            pytest.fail(f"finished before {n} lines: {proc.stderr.read().decode()}")
        time.sleep(0.02)
    pytest.fail("no progress")


def _job_on_tiny(tmp_path, n=40, max_tokens=6):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(jsonl([{"id": f"r{i:02d}", "task": "summarize", "text": f"record number {i}",
                            "max_tokens": max_tokens} for i in range(n)]))
    return jobs


def test_sigkill_mid_run_then_rerun_gives_every_id_once(fixtures, tmp_path):
    jobs = _job_on_tiny(tmp_path)
    out = tmp_path / "jobs.results.jsonl"
    args = [str(jobs), "-m", str(fixtures.path("tiny")), "-t", "0", "-c", "256"]
    p = _start(args, tmp_path)
    _wait_for_lines(out, 5, p)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    done = len(read(out))
    assert 5 <= done < 40
    p = subprocess.run(CMD + ["batch", *args], capture_output=True, text=True, env=_env(), timeout=300,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert f"({done} answered by an earlier run)" in p.stderr
    lines = read(out)
    assert sorted(ids(lines)) == [f"r{i:02d}" for i in range(40)]  # every id exactly once
    assert all(line["error"] is None for line in lines)


def test_ctrl_c_stops_between_lines_and_exits_130(fixtures, tmp_path):
    # A job that cannot finish between the third line and the signal, however busy the
    # machine: thousands of records of 64 tokens each (minutes of decoding).
    n = 3000
    jobs = _job_on_tiny(tmp_path, n=n, max_tokens=64)
    out = tmp_path / "jobs.results.jsonl"
    p = _start([str(jobs), "-m", str(fixtures.path("tiny")), "-t", "0", "-c", "256"], tmp_path)
    _wait_for_lines(out, 3, p)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == ExitCode.INTERRUPTED, err
    assert b"run the same command again to resume" in err
    assert out.read_bytes().endswith(b"\n")
    assert len(set(ids(read(out)))) == len(read(out)) < n


def test_batch_help_does_not_import_llama_cpp():
    p = started("batch", "--help")
    assert p.returncode == 0, p.stderr
    assert not any(m.startswith(("llama_cpp", "jsonschema", "sentencepiece")) for m in p.imported)
    assert "--retry-errors" in p.stdout


def test_job_system_prompt_applies_to_records_without_their_own(batch, tmp_path):
    records = [gen(0), {"id": "own", "task": "generate", "prompt": "hi", "system": "Mine."},
               {"id": "msg", "task": "chat", "messages": [{"role": "system", "content": "Mine."},
                                                          {"role": "user", "content": "hi"}]},
               {"id": "t", "task": "translate", "text": "Hello", "to": "French"}]
    (tmp_path / "a.jsonl").write_text(jsonl(records))
    (tmp_path / "b.jsonl").write_text(jsonl(records))
    assert batch(str(tmp_path / "a.jsonl")).exit_code == 0
    r = batch(str(tmp_path / "b.jsonl"), "-s", "Answer in one short sentence, please.")
    assert r.exit_code == 0, r.output
    plain = {line["id"]: line["usage"]["prompt_tokens"] for line in read(tmp_path / "a.results.jsonl")}
    with_s = {line["id"]: line["usage"]["prompt_tokens"] for line in read(tmp_path / "b.results.jsonl")}
    assert with_s["g0"] > plain["g0"] and with_s["t"] > plain["t"]  # the job's prompt was added
    assert with_s["own"] == plain["own"] and with_s["msg"] == plain["msg"]  # their own kept
    manifest = json.loads((tmp_path / "b.results.jsonl.manifest.json").read_text())
    assert manifest["params"]["system"] == "Answer in one short sentence, please."
    # Another system prompt changes the answers: resuming with it is refused.
    r = batch(str(tmp_path / "b.jsonl"), "-s", "Something else.")
    assert r.exit_code == ExitCode.MANIFEST_MISMATCH and "system" in r.stderr


def test_an_unwritable_output_dir_is_one_line_and_output_error(batch, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(jsonl([gen(0)]))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    targets = [blocker / "out" / "r.jsonl", "/proc/nope/r.jsonl"]
    if os.geteuid() != 0:  # root writes into a read-only directory anyway
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        targets.append(ro / "r.jsonl")
    for target in targets:
        r = batch(str(jobs), "-o", str(target))
        assert r.exit_code == ExitCode.OUTPUT_ERROR, r.output
        assert r.stderr.startswith(f"error: cannot write {target}") and r.stderr.count("\n") == 1
