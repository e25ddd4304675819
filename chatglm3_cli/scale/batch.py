"""`batch --ray`: the runner's job with the records answered by the cluster's workers.

``run_batch`` keeps everything that makes a job safe to stop and re-run (the lock, the manifest,
repairing the results file, skipping answered ids, appending each line as it arrives); this
module only supplies its ``open_model`` (join the cluster) and ``decode`` (the Ray Data job).
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

from ..errors import GenerationError
from .cluster import Cluster, ClusterOptions, connect
from .driver import Totals, batch_size_for, run
from .workers import BatchWorker, LoadOptions, ModelRef, job_to_json

if TYPE_CHECKING:  # pragma: no cover
    from ..batch.jobs import Job
    from ..batch.progress import BatchProgress
    from ..batch.runner import Settings, Summary


def model_ref(name: str, path: str, *, offline: Optional[bool] = None,
              endpoint: Optional[str] = None) -> ModelRef:
    """The driver's model as workers will look for it (its sha256 computed once, cached)."""
    from ..files import file_sha256

    return ModelRef(name=name, path=str(path), sha256=file_sha256(path), offline=offline, endpoint=endpoint)


@dataclass
class OnCluster:
    """What ``open_model`` gives the runner on the Ray path: where the records go."""

    cluster: Cluster
    ref: ModelRef
    load: LoadOptions
    note: Optional[str] = None
    worker_cls: type = BatchWorker  # tests swap in a subclass that crashes on purpose


def hooks(options: ClusterOptions, ref: ModelRef, load: LoadOptions
          ) -> tuple[Callable[[], Any], Callable[..., None]]:
    """(open_model, decode) for ``run_batch``: the job on the cluster instead of this machine."""

    @contextlib.contextmanager
    def open_cluster() -> Iterator[OnCluster]:
        with connect(options) as cluster:
            yield OnCluster(cluster, ref, load, cluster.check_room())

    return open_cluster, decode_on_cluster


def missing_error() -> GenerationError:
    return GenerationError("no answer came back from the Ray workers for this record")


def _finish_reason(line: dict[str, Any]) -> Any:
    if "custom_id" in line:  # an OpenAI Batch line
        body = (line.get("response") or {}).get("body") or {}
        return ((body.get("choices") or [{}])[0]).get("finish_reason")
    return line.get("finish_reason")


def decode_on_cluster(todo: "list[Job]", on: OnCluster, settings: "Settings", summary: "Summary",
                      progress: "BatchProgress", write: Callable[[dict[str, Any]], None]) -> None:
    """Like ``runner.decode_jobs``: one line per record of ``todo``, written as it arrives."""
    from ..batch.results import line_failed
    from ..batch.runner import result_line

    o = on.cluster.options
    if on.note:
        progress.note(f"batch: ray: {on.note}")
    progress.note(f"batch: ray: {o.describe(settings.n_parallel)}")
    by_key = {job.key: job for job in todo}
    items = {job.key: job_to_json(job) for job in todo}
    totals = Totals()
    kwargs = {"model": on.ref, "load": on.load, "settings": settings}
    size = batch_size_for(len(todo), settings.n_parallel, o.workers)
    for row in run(on.cluster, items, on.worker_cls, kwargs, batch_size=size, totals=totals):
        if row.text is None:
            line = result_line(by_key[row.key], model_name="", comp=None, error=missing_error())
        else:
            line = json.loads(row.text)
        write(line)
        failed = line_failed(line)
        summary.done_now += 1
        if failed:
            summary.failed += 1
            summary.failed_now += 1
            summary.failure_kinds[str((line.get("error") or {}).get("type"))] += 1
        elif _finish_reason(line) == "length":  # answered, but cut off at max_tokens
            summary.cut_off += 1
            summary.cut_off_now += 1
        else:
            summary.succeeded += 1
        summary.prompt_tokens = totals.prompt_tokens
        summary.evaluated_prompt_tokens = totals.evaluated_tokens
        summary.generated_tokens = totals.generated_tokens
        summary.workers = totals.workers_alive
        summary.workers_used = totals.workers_used
        error = (line.get("error") or {}).get("message") if failed else None
        progress.advance(not failed, row.key, error, summary)
