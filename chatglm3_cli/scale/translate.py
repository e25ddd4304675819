"""`translate --ray`: the pipeline unchanged, its decoder replaced by the cluster's workers.

The pipeline plans chunks, builds prompts (on the driver's copy of the model: only its
tokenizer is used), checks answers, splits what does not fit, keeps checkpoints and writes
files. ``ClusterDecoder`` has the decoder's shape (``run(requests)`` yields one result per
request, ``stats``): each ``run`` is one Ray Data job over the requests the pipeline has ready.
The first run carries every planned chunk of every file; later runs carry only the halves of
chunks whose answer did not fit (their workers load the model again: rare, and said so in
docs/scale-out.md).
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional

from ..engine.decoder import DecodeResult, DecoderStats
from .cluster import Cluster, ClusterOptions, connect
from .driver import Totals, batch_size_for, run
from .workers import DecodeWorker, LoadOptions, ModelRef, request_to_json, result_from_json

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.decoder import DecodeRequest


class ClusterDecoder:
    def __init__(self, options: ClusterOptions, ref: ModelRef, load: LoadOptions, *, n_parallel: int,
                 n_ctx: Optional[int], on_note: Any = None) -> None:
        self.options = options
        self.ref = ref
        self.load = load
        self.n_parallel = n_parallel
        self.n_ctx = n_ctx
        self.stats = DecoderStats()
        self.totals = Totals()
        self.on_note = on_note
        self._stack = contextlib.ExitStack()
        self._cluster: Optional[Cluster] = None

    def _connect(self) -> Cluster:
        if self._cluster is None:
            self._cluster = self._stack.enter_context(connect(self.options))
            note = self._cluster.check_room()
            if self.on_note:
                if note:
                    self.on_note(note)
                self.on_note(self.options.describe(self.n_parallel))
        return self._cluster

    def run(self, requests: Iterable["DecodeRequest"]) -> Iterator[DecodeResult]:
        from ..errors import GenerationError

        items = {r.key: request_to_json(r) for r in requests}
        if not items:
            return
        cluster = self._connect()
        kwargs = {"model": self.ref, "load": self.load, "n_parallel": self.n_parallel, "n_ctx": self.n_ctx}
        size = batch_size_for(len(items), self.n_parallel, self.options.workers)
        for row in run(cluster, items, DecodeWorker, kwargs, batch_size=size, totals=self.totals):
            t = self.totals
            self.stats.prompt_tokens = t.prompt_tokens
            self.stats.evaluated_prompt_tokens = t.evaluated_tokens
            self.stats.generated_tokens = t.generated_tokens
            self.stats.requests += 1
            if row.text is None:
                yield DecodeResult(row.key, error=GenerationError("no answer came back from the Ray workers"))
            else:
                yield result_from_json(row.text)

    def close(self) -> None:
        self._stack.close()
        self._cluster = None


def make_decoder_factory(options: ClusterOptions, worker_model: Callable[[], tuple[ModelRef, LoadOptions]],
                         on_note: Any = None) -> Any:
    """A ``make_decoder`` for ``translate.pipeline.translate``. ``worker_model()`` says how the
    workers find and load the model; it is asked once the driver has opened its own copy."""

    def make(model: Any, *, n_parallel: int, n_ctx: int) -> ClusterDecoder:
        ref, load = worker_model()
        return ClusterDecoder(options, ref, load, n_parallel=n_parallel, n_ctx=n_ctx, on_note=on_note)

    return make
