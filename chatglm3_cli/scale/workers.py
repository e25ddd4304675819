"""What runs on a Ray worker: the model found and checked on its node, and the two callable
classes Ray Data runs as actors (one per worker slot, the model loaded once per actor).

Nothing here imports Ray: Ray Data only needs the classes and picklable constructor arguments.
Rows travel as JSON text (the records are JSON already; typed errors keep their class by name),
so the driver and the workers never depend on pickling our exceptions.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from .. import __version__
from .. import errors as E

if TYPE_CHECKING:  # pragma: no cover
    from ..batch.runner import Settings as BatchSettings
    from ..engine.decoder import DecodeRequest, DecodeResult
    from ..engine.model import Model
    from ..engine.templates import ChatTemplate


# the model on each node -------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelRef:
    """How a worker finds the driver's model, and how it knows it found the same one."""

    name: str  # what the driver resolved (-m, CHATGLM3_MODEL, config, default): a path or a Hub name
    path: str  # the file on the driver
    sha256: str  # of that file: every worker's must match
    offline: Optional[bool] = None
    endpoint: Optional[str] = None
    version: str = __version__  # the driver's chatglm3: workers must run the same code


@dataclass(frozen=True)
class LoadOptions:
    n_ctx: Optional[int] = None
    n_threads: Optional[int] = None
    n_gpu_layers: Optional[int] = None
    verbose: bool = False
    chat_template: Optional["ChatTemplate"] = None  # --chat-template, read on the driver


def where() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def locate_model(ref: ModelRef) -> Path:
    """This node's copy of the driver's model: the driver's path when this node sees the same
    file there, else the name pulled into this node's Hugging Face cache (the code `pull` runs,
    resumable, one download per node thanks to its lock). Raises ModelMismatchError when the file
    found is not the driver's."""
    from ..files import file_sha256
    from ..hub.registry import parse_spec

    host = socket.gethostname()
    if ref.version != __version__:
        raise E.ClusterError(f"worker {host} runs chatglm3 {__version__}, the driver {ref.version}",
                             hint="install the same chatglm3 version on every node")
    here = Path(ref.path)
    if here.is_file() and file_sha256(here) == ref.sha256:
        return here
    spec = parse_spec(ref.name)
    if spec.is_local:
        if not here.is_file():
            raise E.ModelNotFoundError(
                f"worker {host}: model file not found: {ref.path}",
                hint="put the model on a path every node sees (a shared disk), or pass a model "
                     "name (-m chatglm3-6b:Q4_K_M) so that each node pulls it")
        found = here
    else:
        from ..hub.resolve import resolve_model

        found = Path(resolve_model(ref.name, offline=ref.offline, endpoint=ref.endpoint))
    sha = file_sha256(found)
    if sha != ref.sha256:
        raise E.ModelMismatchError(
            f"worker {host}: {found} has sha256 {sha[:12]}…, the driver's model {ref.sha256[:12]}…")
    return found


def open_model(ref: ModelRef, load: LoadOptions) -> "Model":
    from ..engine import promptcache
    from ..engine.model import Model

    model = Model(locate_model(ref), n_ctx=load.n_ctx, n_threads=load.n_threads,
                  n_gpu_layers=load.n_gpu_layers, verbose=load.verbose, chat_template=load.chat_template,
                  chat_context=False)  # the ParallelDecoder has its own context
    # Each node keeps its own disk cache: a rerun or resume there restores the job's shared
    # instructions instead of evaluating them again (as a local batch run does).
    promptcache.attach(model, warn=lambda line: print(f"chatglm3: warning: {line}", file=sys.stderr))
    return model


# typed errors and results as JSON ---------------------------------------------------------------

def error_to_dict(exc: E.ChatGLM3Error) -> dict[str, Any]:
    extra = {k: v for k, v in vars(exc).items() if isinstance(v, (int, float, str, bool)) or v is None}
    return {"type": type(exc).__name__, "message": exc.message, "attrs": extra}


def error_from_dict(d: dict[str, Any]) -> E.ChatGLM3Error:
    """The same class again when it is one of ours (the pipeline checks some by type)."""
    cls = getattr(E, str(d.get("type")), None)
    if not (isinstance(cls, type) and issubclass(cls, E.ChatGLM3Error)):
        cls = E.GenerationError
    exc = Exception.__new__(cls)
    exc.args = (str(d.get("message", "")),)
    for k, v in (d.get("attrs") or {}).items():
        setattr(exc, k, v)
    return exc


def request_to_json(req: "DecodeRequest") -> str:
    if req.prompt_ids is None:  # the driver tokenizes: workers get ids, never messages
        raise ValueError("a remote decode request needs prompt_ids")
    return json.dumps({"key": req.key, "prompt_ids": list(req.prompt_ids), "params": req.params.to_dict(),
                       "grammar": req.grammar})


def request_from_json(text: str) -> "DecodeRequest":
    from ..engine.decoder import DecodeRequest
    from ..engine.sampling import SamplingParams

    d = json.loads(text)
    return DecodeRequest(d["key"], prompt_ids=d["prompt_ids"], params=SamplingParams(**d["params"]),
                         grammar=d.get("grammar"))


def result_to_json(res: "DecodeResult") -> str:
    comp = dataclasses.asdict(res.completion) if res.completion is not None else None
    err = error_to_dict(res.error) if res.error is not None else None
    return json.dumps({"key": res.key, "completion": comp, "error": err}, ensure_ascii=False)


def result_from_json(text: str) -> "DecodeResult":
    from ..engine.completion import Completion, Timings
    from ..engine.decoder import DecodeResult

    d = json.loads(text)
    comp = None
    if d.get("completion") is not None:
        c = dict(d["completion"])
        c["timings"] = Timings(**c["timings"])
        comp = Completion(**c)
    err = error_from_dict(d["error"]) if d.get("error") is not None else None
    return DecodeResult(d["key"], completion=comp, error=err)


def job_to_json(job: Any) -> str:
    return json.dumps(dataclasses.asdict(job), ensure_ascii=False)


def job_from_json(text: str) -> Any:
    from ..batch.jobs import Job

    return Job(**json.loads(text))


# the actors -------------------------------------------------------------------------------------

SOLO_TRIES = 2  # a record whose worker died this many times while decoding it alone is lost


def lost_error() -> E.GenerationError:
    return E.GenerationError(f"the Ray worker decoding this record died {SOLO_TRIES} times "
                             f"while it ran alone")


class Ledger:
    """How often each key was started, across worker deaths and restarts: one small actor
    beside the driver (Ray's own retries are unbounded for a dying actor, and would run a
    record that kills its worker forever)."""

    def __init__(self) -> None:
        self.batch: dict[str, int] = {}
        self.solo_started: dict[str, int] = {}
        self.solo_done: dict[str, int] = {}

    def begin_batch(self, keys: list[str]) -> int:
        """Count a start of these keys together; the most any of them has been started."""
        most = 0
        for k in keys:
            self.batch[k] = self.batch.get(k, 0) + 1
            most = max(most, self.batch[k])
        return most

    def begin_one(self, key: str) -> int:
        """Count a start of ``key`` alone; how often its worker died while it ran alone before."""
        deaths = self.solo_started.get(key, 0) - self.solo_done.get(key, 0)
        self.solo_started[key] = self.solo_started.get(key, 0) + 1
        return deaths

    def end_one(self, key: str) -> None:
        self.solo_done[key] = self.solo_done.get(key, 0) + 1


def _texts(column: Any) -> list[str]:
    return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in column]


def _out(pairs: list[tuple[str, str]], stats: dict[str, int]) -> dict[str, Any]:
    """A batch of answers: the key and JSON text per row; the batch's token counts on its first
    row (the driver sums columns, so the totals come out right whatever the batching)."""
    import numpy as np

    n = len(pairs)
    col = {k: np.zeros(n, dtype=np.int64) for k in stats}
    for k, v in stats.items():
        if n:
            col[k][0] = v
    return {"key": np.array([k for k, _ in pairs], dtype=object),
            "answer": np.array([t for _, t in pairs], dtype=object),
            "worker": np.array([where()] * n, dtype=object), **col}


class _Worker:
    """The model and one ParallelDecoder (one llama.cpp context) for the actor's whole life."""

    def __init__(self, model: ModelRef, load: LoadOptions, n_parallel: int, n_ctx: Optional[int],
                 ledger: Any = None) -> None:
        from ..engine.decoder import ParallelDecoder

        self.model = open_model(model, load)
        self.decoder = ParallelDecoder(self.model, n_parallel=n_parallel, n_ctx=n_ctx)
        self.ledger = ledger

    # what each kind of worker answers
    def _key(self, item: Any) -> str:
        raise NotImplementedError

    def _decode(self, items: list[Any]) -> list[tuple[str, str]]:
        raise NotImplementedError

    def _lost(self, item: Any) -> tuple[str, str]:
        raise NotImplementedError

    def _answer(self, items: list[Any]) -> dict[str, Any]:
        s = self.decoder.stats
        before = (s.prompt_tokens, s.evaluated_prompt_tokens, s.generated_tokens)
        pairs = self._guarded(items)
        return _out(pairs, {"prompt_tokens": s.prompt_tokens - before[0],
                            "evaluated_tokens": s.evaluated_prompt_tokens - before[1],
                            "generated_tokens": s.generated_tokens - before[2]})

    def _guarded(self, items: list[Any]) -> list[tuple[str, str]]:
        """All at once, as usual; but when this batch was started before (its worker died), one
        record at a time, so that the record that kills the worker is found and answered as
        lost, and the others are not."""
        if self.ledger is None or not items:
            return self._decode(items)
        import ray

        if ray.get(self.ledger.begin_batch.remote([self._key(i) for i in items])) <= 1:
            return self._decode(items)
        out: list[tuple[str, str]] = []
        for item in items:
            key = self._key(item)
            if ray.get(self.ledger.begin_one.remote(key)) >= SOLO_TRIES:
                out.append(self._lost(item))
                continue
            out.extend(self._decode([item]))
            ray.get(self.ledger.end_one.remote(key))  # it did not kill the worker
        return out


class BatchWorker(_Worker):
    """Batch records in, result lines out: the runner's own per-record code (prompt, grammar,
    parse, error lines) on this worker's model."""

    def __init__(self, model: ModelRef, load: LoadOptions, settings: "BatchSettings", ledger: Any = None) -> None:
        super().__init__(model, load, settings.n_parallel, settings.n_ctx, ledger)
        self.settings = settings

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return self._answer([job_from_json(t) for t in _texts(batch["item"])])

    def _key(self, item: Any) -> str:
        return str(item.key)

    def _decode(self, items: list[Any]) -> list[tuple[str, str]]:
        from ..batch.progress import BatchProgress
        from ..batch.results import line_key
        from ..batch.runner import Summary, decode_jobs

        out: list[tuple[str, str]] = []
        decode_jobs(items, self.model, self.settings, Summary(), BatchProgress(),
                    lambda line: out.append((str(line_key(line)), json.dumps(line, ensure_ascii=False))),
                    decoder=self.decoder)
        return out

    def _lost(self, item: Any) -> tuple[str, str]:
        from ..batch.runner import result_line

        line = result_line(item, model_name=self.model.name, comp=None, error=lost_error())
        return str(item.key), json.dumps(line, ensure_ascii=False)


class DecodeWorker(_Worker):
    """Decode requests (prompt ids made on the driver) in, decode results out: translate's
    chunks, answered by this worker's ParallelDecoder."""

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return self._answer([request_from_json(t) for t in _texts(batch["item"])])

    def _key(self, item: Any) -> str:
        return str(item.key)

    def _decode(self, items: list[Any]) -> list[tuple[str, str]]:
        return [(r.key, result_to_json(r)) for r in self.decoder.run(items)]

    def _lost(self, item: Any) -> tuple[str, str]:
        from ..engine.decoder import DecodeResult

        return item.key, result_to_json(DecodeResult(item.key, error=lost_error()))
