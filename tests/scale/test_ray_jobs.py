"""`batch --ray` and `translate --ray` on a real local Ray cluster, against the local run.

A 200-record job on 2 workers answers every id exactly once, as the local run does at
temperature 0, even with a worker killed -9 mid-job; a driver killed -9 mid-job loses and
duplicates nothing; a directory translated over 2 workers (on a cluster the command starts
itself) is byte-identical to the local translation.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatglm3_cli.batch.jobs import parse_jobs
from chatglm3_cli.batch.runner import Settings, run_batch
from chatglm3_cli.cli.app import app
from chatglm3_cli.engine.sampling import SamplingParams

from .conftest import cmdline, needs_ray

pytestmark = needs_ray

N = 200
CTX = "512"
MAX_TOKENS = 12
WORDS = ["river", "cloud", "lamp", "garden", "engine", "violin", "harbor", "pencil", "winter", "tiger"]
LABELS = ["positive", "negative", "neutral"]


def job_records() -> list[dict]:
    recs: list[dict] = []
    for i in range(N):
        word = WORDS[i % len(WORDS)]
        if i % 25 == 7:
            recs.append({"id": f"r{i:03d}", "task": "classify", "text": f"The {word} number {i} is fine",
                         "labels": LABELS})
        elif i % 50 == 13:
            recs.append({"custom_id": f"r{i:03d}", "method": "POST", "url": "/v1/chat/completions",
                         "body": {"messages": [{"role": "user", "content": f"Tell me about {word} {i}"}],
                                  "max_tokens": MAX_TOKENS}})
        else:
            recs.append({"id": f"r{i:03d}", "task": "generate", "prompt": f"Write about the {word}, take {i}."})
    return recs


def key_of(line: dict) -> str:
    return str(line["custom_id"] if "custom_id" in line else line["id"])


def comparable(line: dict) -> tuple:
    """What must equal the local run: everything but request ids, timestamps, timings and how
    many prompt tokens came from a prefix shared with other records (that depends on which
    records a worker decoded together)."""
    if "custom_id" in line:
        r = line["response"]
        body = r["body"] or {}
        choice = (body.get("choices") or [{}])[0]
        return (r["status_code"], choice.get("message"), choice.get("finish_reason"), body.get("usage"),
                line["error"])
    usage = {k: v for k, v in (line["usage"] or {}).items() if k != "cached_tokens"}
    return (line["task"], line["output"], line["finish_reason"], usage, line["error"])


def read_lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def check_against_local(lines: list[dict], local: dict[str, dict]) -> None:
    keys = [key_of(x) for x in lines]
    assert len(keys) == len(set(keys)), "an id was written twice"
    assert sorted(keys) == sorted(local), "ids missing or extra"
    for line in lines:
        assert comparable(line) == comparable(local[key_of(line)]), key_of(line)


@pytest.fixture(scope="module")
def job(fixtures, tmp_path_factory):
    """The job file and its local results (the library run on this machine, -p 2)."""
    from chatglm3_cli.engine.model import Model

    d = tmp_path_factory.mktemp("job")
    path = d / "jobs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in job_records()), encoding="utf-8")
    model = fixtures.path("tiny")
    out = d / "local.results.jsonl"
    s = run_batch(parse_jobs(path.read_bytes(), str(path)), output=out, stdout=None, model_path=str(model),
                  open_model=lambda: Model(model, n_ctx=int(CTX)),
                  settings=Settings(params=SamplingParams(temperature=0, max_tokens=MAX_TOKENS), n_parallel=2,
                                    n_ctx=int(CTX)))
    assert (s.succeeded + s.cut_off, s.failed) == (N, 0)
    return path, {key_of(x): x for x in read_lines(out)}


def batch_cmd(fixtures, jobs: Path, out: Path, address: str) -> list[str]:
    return [sys.executable, "-m", "chatglm3_cli", "batch", str(jobs), "-o", str(out), "-m",
            str(fixtures.path("tiny")), "-c", CTX, "-t", "0", "--max-tokens", str(MAX_TOKENS), "-p", "2",
            "--ray", address, "--workers", "2", "--worker-cpus", "1"]


def env() -> dict[str, str]:
    """This test's environment (isolated caches; the test cluster's token) for a driver."""
    return {k: v for k, v in os.environ.items() if k not in ("CHATGLM3_DEBUG", "CHATGLM3_MODEL", "RAY_ADDRESS")}


def wait_for_lines(path: Path, at_least: int, proc: subprocess.Popen, timeout: float = 300) -> int:
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError):
            n = path.read_bytes().count(b"\n")
        if n >= at_least:
            return n
        time.sleep(0.05)
    return n


def test_200_records_on_two_workers_equal_the_local_run_even_with_a_worker_killed(ray_cluster, job, fixtures,
                                                                                  tmp_path):
    """A worker killed -9 mid-job loses and duplicates nothing, and everything else about the
    run (stdout, summary, manifest) is as without the kill: one job checks both, so the 200
    records go through Ray once here, not twice."""
    jobs, local = job
    out = tmp_path / "out.jsonl"
    p = subprocess.Popen(batch_cmd(fixtures, jobs, out, ray_cluster.address), env=env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        n = wait_for_lines(out, 10, p)
        assert p.poll() is None and n < N, "the job finished before a worker could be killed"
        victims = ray_cluster.workers()
        assert victims, "no Ray Data worker process found"
        os.kill(victims[0], signal.SIGKILL)
        stdout, err = p.communicate(timeout=900)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert stdout == ""  # results go to the file; Ray's own chatter nowhere near stdout
    check_against_local(read_lines(out), local)
    assert "ray: 2 workers (1 CPU each, 2 sequences in flight each)" in err
    assert f"{N} records: " in err and ", 0 failed" in err
    manifest = json.loads((tmp_path / "out.jsonl.manifest.json").read_text())
    assert manifest["model"]["path"] == str(fixtures.path("tiny").resolve())


def test_results_on_stdout_stay_clean(ray_cluster, job, fixtures, tmp_path):
    jobs, local = job
    few = tmp_path / "few.jsonl"
    few.write_text("".join(jobs.read_text().splitlines(keepends=True)[:6]))
    cmd = batch_cmd(fixtures, few, Path("-"), ray_cluster.address)
    p = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in p.stdout.splitlines()]  # nothing but result lines
    assert sorted(key_of(x) for x in lines) == sorted(list(local)[:6])
    for line in lines:
        assert comparable(line) == comparable(local[key_of(line)])


def test_the_driver_killed_mid_job_resumes_with_the_same_command(ray_cluster, job, fixtures, tmp_path):
    jobs, local = job
    out = tmp_path / "out.jsonl"
    cmd = batch_cmd(fixtures, jobs, out, ray_cluster.address)
    p = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         stdin=subprocess.DEVNULL)
    try:
        n = wait_for_lines(out, 10, p)
        assert p.poll() is None and n < N, "the job finished before the driver could be killed"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
    written = len(read_lines(out)) if out.exists() else 0
    again = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stderr
    check_against_local(read_lines(out), local)
    m = __import__("re").search(r"\((\d+) answered by an earlier run\)", again.stderr)
    assert m and int(m.group(1)) >= written > 0, again.stderr


def test_sigterm_to_the_driver_exits_by_the_signal_quietly_and_resumes(ray_cluster, job, fixtures, tmp_path):
    """As without --ray: SIGTERM ends the driver with the signal's status (143 in a shell), no
    Ray stack dump, every line written whole; the same command finishes the job."""
    jobs, local = job
    out = tmp_path / "out.jsonl"
    cmd = batch_cmd(fixtures, jobs, out, ray_cluster.address)
    p = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL)
    try:
        n = wait_for_lines(out, 10, p)
        assert p.poll() is None and n < N, "the job finished before the driver could be stopped"
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(60)
    assert p.returncode == -signal.SIGTERM, (p.returncode, err[-2000:])
    assert "Traceback" not in err and "sigterm" not in err.lower(), err[-2000:]
    again = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stderr
    check_against_local(read_lines(out), local)


def crashing_worker_class(poison: str):
    """The real worker, except that decoding ``poison`` kills its process (as a crash inside
    llama.cpp would). Defined in a function so that Ray sends the class itself to the workers."""
    from chatglm3_cli.scale.workers import BatchWorker

    class Crashing(BatchWorker):
        def _decode(self, items):
            if any(item.key == poison for item in items):
                os._exit(1)
            return super()._decode(items)

    return Crashing


def test_a_record_that_kills_its_worker_every_time_becomes_its_error_line_alone(ray_cluster, job, fixtures,
                                                                                tmp_path):
    from chatglm3_cli.files import file_sha256
    from chatglm3_cli.scale.batch import hooks
    from chatglm3_cli.scale.cluster import ClusterOptions
    from chatglm3_cli.scale.workers import LoadOptions, ModelRef

    jobs, local = job
    few = tmp_path / "few.jsonl"
    few.write_text("".join(jobs.read_text().splitlines(keepends=True)[:20]))
    model = fixtures.path("tiny")
    ref = ModelRef(name=str(model), path=str(model), sha256=file_sha256(model))
    open_cluster, decode = hooks(ClusterOptions(address=ray_cluster.address, workers=2), ref,
                                 LoadOptions(n_ctx=int(CTX), n_threads=1))

    @contextlib.contextmanager
    def crashing():
        with open_cluster() as on:
            on.worker_cls = crashing_worker_class("r005")
            yield on

    out = tmp_path / "out.jsonl"
    s = run_batch(parse_jobs(few.read_bytes(), str(few)), output=out, stdout=None, model_path=str(model),
                  open_model=crashing, decode=decode,
                  settings=Settings(params=SamplingParams(temperature=0, max_tokens=MAX_TOKENS), n_parallel=2,
                                    n_ctx=int(CTX)))
    lines = read_lines(out)
    assert sorted(key_of(x) for x in lines) == [f"r{i:03d}" for i in range(20)]
    assert (s.succeeded + s.cut_off, s.failed) == (19, 1)
    for line in lines:
        if key_of(line) == "r005":
            assert line["error"]["type"] == "GenerationError" and "died 2 times" in line["error"]["message"]
        else:
            assert comparable(line) == comparable(local[key_of(line)])


# translate ---------------------------------------------------------------------------------------

MD = """---
title: Notes
---

# A title

Some text with `code` and a [link](http://example.org).

```sh
echo keep me
```

- one item
- another item
"""
SRT = "1\n00:00:01,000 --> 00:00:02,000\nHello there.\n\n2\n00:00:03,000 --> 00:00:04,500\nSee you soon.\n"


def ray_daemons() -> set[int]:
    return {int(d.name) for d in Path("/proc").iterdir()
            if d.name.isdigit() and ("raylet" in cmdline(int(d.name)) or "gcs_server" in cmdline(int(d.name)))}


def test_translate_a_directory_over_two_workers_gives_the_local_files(fixtures, tmp_path):
    src = tmp_path / "docs"
    (src / "sub").mkdir(parents=True)
    (src / "notes.md").write_text(MD)
    (src / "story.txt").write_text("".join(f"Paragraph {k} has a few words.\n\n" for k in range(12)))
    (src / "sub" / "talk.srt").write_text(SRT)
    args = ["translate", str(src), "--to", "zh", "-m", str(fixtures.path("scripted")), "-c", CTX, "-p", "2"]
    local = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "local")])  # the reference: in this process
    before = ray_daemons()
    # a bare --ray: the command starts a local cluster of its own, and stops it. A user's
    # environment has no Ray token: the command makes one for its cluster (before importing
    # Ray, which reads it only then).
    user_env = {k: v for k, v in env().items() if not k.startswith("RAY_AUTH")}
    on_ray = subprocess.run([sys.executable, "-m", "chatglm3_cli", *args, "-o", str(tmp_path / "ray"), "--workers",
                             "2", "--ray"], env=user_env, capture_output=True, text=True, timeout=900,
                            stdin=subprocess.DEVNULL)
    assert on_ray.returncode == local.exit_code, (on_ray.stderr, local.output)
    files = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*") if p.is_file())
    assert [str(f) for f in files] == ["notes.md", "story.txt", "sub/talk.srt"]
    for f in files:
        assert (tmp_path / "ray" / f).read_bytes() == (tmp_path / "local" / f).read_bytes(), f
    assert (tmp_path / "ray" / "story.txt").read_text() != (src / "story.txt").read_text()  # translated
    deadline = time.monotonic() + 60
    while ray_daemons() - before and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_daemons() - before, "the local cluster was not stopped"
