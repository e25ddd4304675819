"""What `batch --ray` says about its workers, with a stand-in Ray (plumbing only, no cluster):
Ray Data stops the actor pool once its last batch is done, so a short job's only batch can
come back after Ray already counts 0 workers alive. The display then says how many workers
answered (never "0 workers alive" for a job they answered), and the summary says it too."""
from __future__ import annotations

import io
import json
import sys
from types import SimpleNamespace
from typing import Any, Iterator

import numpy as np
import pytest

from chatglm3_cli.batch.jobs import Job
from chatglm3_cli.batch.runner import Settings, Summary
from chatglm3_cli.cli import console
from chatglm3_cli.cli import progress as cli_progress
from chatglm3_cli.cli.batch import _summary_line
from chatglm3_cli.engine.sampling import SamplingParams
from chatglm3_cli.scale import driver
from chatglm3_cli.scale.batch import OnCluster, decode_on_cluster
from chatglm3_cli.scale.cluster import ClusterOptions
from chatglm3_cli.scale.driver import Totals, run
from chatglm3_cli.scale.workers import LoadOptions, ModelRef


class FakeDataset:
    def __init__(self, batches: list[dict[str, Any]]) -> None:
        self.batches = batches

    def map_batches(self, *args: Any, **kwargs: Any) -> "FakeDataset":
        return self

    def iter_batches(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        yield from self.batches


class FakeRay:
    """What the driver touches of ``ray``: the job's batches come back as given."""

    def __init__(self, batches: list[dict[str, Any]]) -> None:
        self.data = SimpleNamespace(
            DataContext=SimpleNamespace(get_current=lambda: SimpleNamespace()),
            from_items=lambda items: FakeDataset(batches),
            ActorPoolStrategy=lambda size: None)

    def remote(self, **kwargs: Any) -> Any:
        return lambda cls: SimpleNamespace(remote=lambda: object())

    def kill(self, actor: Any) -> None:
        pass


class FakeCluster:
    """Answers ``workers_alive()`` from a script (the last answer again once it runs out)."""

    def __init__(self, batches: list[dict[str, Any]], alive: list[int], workers: int = 2) -> None:
        self.ray = FakeRay(batches)
        self.options = ClusterOptions(workers=workers)
        self.alive = list(alive)
        self.asked = 0

    def workers_alive(self) -> int:
        self.asked += 1
        return self.alive.pop(0) if len(self.alive) > 1 else self.alive[0]


def answers(worker: str, keys: list[str]) -> dict[str, Any]:
    """One batch as a worker returns it (tokens on its first row, as workers._out does)."""
    n = len(keys)
    lines = [json.dumps({"id": k, "output": f"answer {k}", "finish_reason": "stop"}) for k in keys]
    tokens = np.zeros(n, dtype=np.int64)
    tokens[0] = 5 * n
    return {"key": np.array(keys, dtype=object), "answer": np.array(lines, dtype=object),
            "worker": np.array([worker] * n, dtype=object),
            "prompt_tokens": tokens, "evaluated_tokens": tokens, "generated_tokens": tokens}


def jobs(keys: list[str]) -> list[Job]:
    return [Job(line=i + 1, key=k, id=k, task="generate", record={"prompt": "hi"}) for i, k in enumerate(keys)]


class Err(io.StringIO):
    def isatty(self) -> bool:
        return False


def decode(cluster: FakeCluster, keys: list[str], *, tty: bool) -> tuple[Summary, str]:
    con = console.Console(sys.stdin, sys.stdout, Err(), stderr_tty=tty)
    progress = cli_progress.make_batch_progress(con)
    summary = Summary(total=len(keys), todo=len(keys), planned=len(keys))
    on = OnCluster(cluster, ModelRef(name="m", path="/m.gguf", sha256="0" * 64), LoadOptions())  # type: ignore[arg-type]
    progress.start(len(keys), summary)
    decode_on_cluster(jobs(keys), on, Settings(params=SamplingParams()), summary, progress, lambda line: None)
    summary.seconds = 1.0
    progress.finish(summary)
    return summary, con.stderr.getvalue()


@pytest.fixture(autouse=True)
def _every_time(monkeypatch):
    monkeypatch.setattr(driver, "WORKERS_EVERY_S", 0.0)  # the driver asks Ray at every batch
    monkeypatch.setattr(cli_progress, "STATUS_EVERY_S", 0.0)  # a plain status line at every record


def test_the_only_batch_back_after_the_pool_stopped_is_not_zero_workers():
    summary, err = decode(FakeCluster([answers("node1:11", ["a", "b", "c"])], alive=[0]), ["a", "b", "c"], tty=False)
    assert "0 workers alive" not in err
    assert "batch: 1/3 done, 0 failed, 1 worker used, 15 tokens" in err
    assert "this run: 3 records on 1 Ray worker, 15 tokens generated" in _summary_line(summary)

    cluster = FakeCluster([answers("node1:11", ["a", "b", "c"])], alive=[0])
    totals = Totals()
    rows = list(run(cluster, {k: "{}" for k in "abc"}, object, {}, batch_size=3, totals=totals))  # type: ignore[arg-type]
    assert [r.key for r in rows] == ["a", "b", "c"] and cluster.asked == 1
    assert totals.workers_alive == 0 and totals.workers_used == 1


def test_workers_alive_while_the_job_runs_then_the_ones_that_answered():
    batches = [answers("node1:11", ["a", "b"]), answers("node2:22", ["c", "d"])]
    summary, err = decode(FakeCluster(batches, alive=[2, 0]), ["a", "b", "c", "d"], tty=False)
    lines = [x for x in err.splitlines() if "/4 done" in x]
    assert "1/4 done, 0 failed, 2 workers alive" in lines[0]  # Ray's count while the pool runs
    assert "3/4 done, 0 failed, 2 workers used" in lines[-1]  # the pool has stopped: who answered
    assert "0 workers alive" not in err
    assert "this run: 4 records on 2 Ray workers" in _summary_line(summary)

    summary, err = decode(FakeCluster(batches, alive=[2, 0]), ["a", "b", "c", "d"], tty=True)
    assert "\x1b[" in err  # the rich bar: its last state is the finished job's
    assert "2 workers used" in err and "0 workers alive" not in err


def test_no_worker_count_off_the_cluster():
    summary = Summary(total=1, todo=1, planned=1, done_now=1, succeeded=1, seconds=1.0)
    assert cli_progress._workers(summary) == ""
    assert " on " not in _summary_line(summary)
