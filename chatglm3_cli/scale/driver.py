"""The Ray Data job: items in, answers out as they arrive, each key answered exactly once.

One ``map_batches`` over the items with a callable class (``workers.BatchWorker`` or
``workers.DecodeWorker``) on a fixed pool of ``--workers`` actors, each holding the model and
a ParallelDecoder for its whole life. Ray restarts an actor whose process dies and runs its
batch again (Ray Data's defaults for actor pools); the workers keep count of those starts in a
``Ledger`` actor beside the driver, so a batch that comes back runs one record at a time and a
record that kills its worker every time is answered as lost (its error line) instead of
being retried forever. Keys already answered are dropped here: a batch that Ray ran twice never
writes a line twice.
"""
from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

from ..errors import ChatGLM3Error, ClusterError
from .cluster import Cluster
from .workers import Ledger, error_from_dict

WORKERS_EVERY_S = 2.0  # how often the driver asks Ray which workers are alive


@dataclass
class Row:
    key: str
    text: Optional[str]  # the worker's answer (JSON); None: none came back
    worker: str = ""


@dataclass
class Totals:
    prompt_tokens: int = 0
    evaluated_tokens: int = 0
    generated_tokens: int = 0
    batches: int = 0
    # Ray's count of this job's actors at the driver's last look (every WORKERS_EVERY_S, when a
    # batch arrives): 0 once Ray Data has stopped the pool, which a short job's only batch can
    # outrun. ``workers_used`` says who took part.
    workers_alive: Optional[int] = None
    workers_seen: set[str] = field(default_factory=set)  # worker processes (host:pid) that answered
    missing: int = 0  # keys that no answer came back for (never expected: counted, not lost)

    @property
    def workers_used(self) -> int:
        """Worker processes that returned answers so far (a worker Ray restarted counts again)."""
        return len(self.workers_seen)


def batch_size_for(n_items: int, n_parallel: int, workers: int) -> int:
    """Records per call: enough to keep the decoder's sequences busy (a call ends with its
    last records decoding alone), few enough that every worker gets work and a lost actor loses
    little."""
    per_worker = max(1, -(-n_items // workers))  # ceil
    return max(1, min(4 * n_parallel, per_worker))


def _configure(ray: Any) -> None:
    ctx = ray.data.DataContext.get_current()
    for name, value in (("enable_progress_bars", False), ("print_on_execution_start", False),
                        ("enable_rich_progress_bars", False)):
        if hasattr(ctx, name):
            setattr(ctx, name, value)


_OUR_ERROR = re.compile(r"chatglm3_cli\.errors\.(\w+): (.+)")


def typed_failure(exc: BaseException) -> ChatGLM3Error:
    """What to tell the user when the job itself failed: our own error from a worker (a model
    that is not the driver's, not on that node, ...) when Ray carried one, else a ClusterError."""
    seen: set[int] = set()
    e: Optional[BaseException] = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ChatGLM3Error):
            return e
        e = e.__cause__ or e.__context__
    found = _OUR_ERROR.findall(str(exc))
    if found:
        name, message = found[-1]
        return error_from_dict({"type": name, "message": message.strip()})
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    return ClusterError(f"the Ray job failed: {lines[-1][:300] if lines else type(exc).__name__}")


def _stream(cluster: Cluster, items: Sequence[str], worker_cls: type, ctor_kwargs: dict[str, Any],
            batch_size: int, totals: Totals) -> Iterator[Row]:
    ray = cluster.ray
    o = cluster.options
    _configure(ray)
    ledger = ray.remote(num_cpus=0)(Ledger).remote()
    ds = ray.data.from_items([{"item": t} for t in items])
    ds = ds.map_batches(worker_cls, batch_size=batch_size, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=o.workers),
                        num_cpus=o.worker_cpus, num_gpus=o.worker_gpus or None,
                        fn_constructor_kwargs={**ctor_kwargs, "ledger": ledger})
    last_check = 0.0
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
            totals.batches += 1
            for k in ("prompt_tokens", "evaluated_tokens", "generated_tokens"):
                setattr(totals, k, getattr(totals, k) + int(batch[k].sum()))
            now = time.monotonic()
            if now - last_check >= WORKERS_EVERY_S:
                last_check = now
                totals.workers_alive = cluster.workers_alive()
            for key, text, worker in zip(batch["key"], batch["answer"], batch["worker"], strict=True):
                totals.workers_seen.add(str(worker))
                yield Row(str(key), str(text), str(worker))
    except (KeyboardInterrupt, GeneratorExit, ChatGLM3Error):
        raise
    except Exception as e:  # the job itself failed (a worker that cannot start, a bug, ...)
        raise typed_failure(e) from None
    finally:
        with contextlib.suppress(Exception):
            ray.kill(ledger)


def run(cluster: Cluster, items: dict[str, str], worker_cls: type, ctor_kwargs: dict[str, Any], *,
        batch_size: int, totals: Totals) -> Iterator[Row]:
    """Every key of ``items`` (key -> the item as JSON text) exactly once, as it arrives; a key
    no answer came back for (none is expected) is yielded last with ``text=None``."""
    done: set[str] = set()
    for row in _stream(cluster, list(items.values()), worker_cls, ctor_kwargs, batch_size, totals):
        if row.key in items and row.key not in done:
            done.add(row.key)
            yield row
    for k in items:
        if k not in done:
            totals.missing += 1
            yield Row(k, None)
