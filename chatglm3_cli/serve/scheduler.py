"""One owner of the ParallelDecoder for a server: requests in from any thread, results out to
asyncio, continuous batching in between.

A single thread runs ``ParallelDecoder.run`` for the life of the server. Requests wait in a
bounded queue and join the running batch whenever a sequence is free (the decoder asks for
more between steps); the decoder keeps the latest finished conversation as a shared prefix, so
a client that resends its growing conversation pays only for the new turn. A request can be
cancelled at any time (its client went away): queued, it is dropped; running, its sequence is
freed before the next step. One failing request gets its error and never disturbs the others.

Text reaches the request's asyncio queue as it is generated; stop strings are found by the
engine (sequence.StopScanner), on the decoding thread, so that the sequence ends at once.
"""
from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from ..engine.decoder import WAIT, DecodeRequest, DecodeResult
from ..errors import ChatGLM3Error, GenerationError, QueueFullError, ShuttingDownError

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.completion import Completion
    from ..engine.decoder import ParallelDecoder
    from ..engine.sampling import SamplingParams


@dataclass
class Event:
    kind: str  # "text" or "done"
    text: str = ""
    metadata: str = ""
    completion: "Completion | None" = None
    error: ChatGLM3Error | None = None
    finish_reason: str | None = None


class Job:
    """One request in the scheduler: what to decode, and where its events go (an asyncio queue
    on the server's loop; every call from the decoding thread goes through call_soon_threadsafe)."""

    def __init__(self, prompt_ids: Sequence[int], params: "SamplingParams", *, grammar: str | None = None,
                 raw: bool = False, stops: Sequence[str] = (), loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.prompt_ids = list(prompt_ids)
        self.params = params
        self.grammar = grammar
        self.raw = raw
        self.stops = list(stops)
        self.loop = loop or asyncio.get_running_loop()
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.key = ""
        self.text: list[str] = []  # what was released to the client, in order
        self._cancelled = threading.Event()
        self.queued_at = time.monotonic()
        self.started_at: float | None = None

    # called from the decoding thread ---------------------------------------------------------

    def _push(self, event: Event) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    def on_text(self, piece: str, metadata: str) -> bool:
        if self.started_at is None:
            self.started_at = time.monotonic()
        self.text.append(piece)
        self._push(Event("text", text=piece, metadata=metadata))
        return False

    def finish(self, result: DecodeResult | None, error: ChatGLM3Error | None = None) -> None:
        comp = result.completion if result is not None else None
        error = error or (result.error if result is not None else None)
        reason = comp.finish_reason if comp is not None else None
        self._push(Event("done", completion=comp, error=error, finish_reason=reason))

    # called from anywhere --------------------------------------------------------------------

    def cancel(self) -> None:
        self._cancelled.set()

    def is_cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()


@dataclass
class Counters:
    """What /metrics shows; written by the decoding thread, read by the server's."""

    admitted: int = 0
    rejected: int = 0  # queue full
    finished: dict[str, int] = field(default_factory=dict)  # by finish reason ("error" too)
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    generated_tokens: int = 0
    recent: deque = field(default_factory=lambda: deque(maxlen=4096))  # (finish time, tokens)


class Scheduler:
    """Owns the decoder and its thread. ``submit`` may be called from any thread."""

    RATE_WINDOW_S = 30.0
    STUCK_AFTER_S = 60.0  # no step finished for this long while requests wait: /health says 503

    def __init__(self, decoder: "ParallelDecoder", *, max_queue: int = 32) -> None:
        self.decoder = decoder
        self.max_queue = max_queue
        self.counters = Counters()
        self._queue: deque[Job] = deque()
        self._running: dict[str, Job] = {}
        self._cond = threading.Condition()
        self._closing = False
        self._failed: BaseException | None = None
        self._ids = itertools.count(1)
        self._durations: deque[float] = deque(maxlen=64)
        self._thread = threading.Thread(target=self._loop, name="chatglm3-decoder", daemon=True)
        self.started = time.monotonic()
        self._beat = self.started  # the last time the decoding thread was between steps

    # lifetime ----------------------------------------------------------------------------

    def start(self) -> "Scheduler":
        self._thread.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking requests, let those in flight finish (cancelled after ``timeout``
        seconds), then free the decoder."""
        with self._cond:
            self._closing = True
            for job in self._queue:
                job.cancel()
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                for job in list(self._running.values()):
                    job.cancel()
                self._thread.join(timeout)
        if not self._thread.is_alive():
            self.decoder.close()

    @property
    def accepting(self) -> bool:
        return not self._closing and self._failed is None and self._thread.is_alive()

    # requests ----------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue a job; QueueFullError when the queue is full, ShuttingDownError when draining."""
        with self._cond:
            if not self.accepting:
                raise ShuttingDownError("the server is shutting down" if self._closing
                                        else "the decoder has stopped")
            waiting = sum(1 for j in self._queue if not j.cancelled)
            # Full: the queue holds max_queue and no sequence is left for the next one.
            if waiting >= self.max_queue and self.decoder.live + waiting >= self.decoder.n_parallel:
                self.counters.rejected += 1
                raise QueueFullError(self._retry_after(waiting))
            job.key = f"r{next(self._ids)}"
            self._queue.append(job)
            self.counters.admitted += 1
            self._cond.notify_all()

    def _retry_after(self, waiting: int) -> int:
        """Seconds until a queue place is likely to be free: the queue ahead, served
        n_parallel at a time, at the recent mean request time."""
        mean = sum(self._durations) / len(self._durations) if self._durations else 1.0
        rounds = waiting / max(1, self.decoder.n_parallel)
        return max(1, min(60, round(mean * rounds)))

    # the decoding thread -----------------------------------------------------------------

    def _feed(self) -> Iterator[Any]:
        while True:
            with self._cond:
                while self._queue and self._queue[0].cancelled:
                    self._queue.popleft().finish(None, None)  # "done" with no completion: dropped
                    self.counters.finished["cancelled"] = self.counters.finished.get("cancelled", 0) + 1
                job = self._queue.popleft() if self._queue else None
                if job is None and self._closing:
                    return
            if job is None:
                yield WAIT
                continue
            self._running[job.key] = job
            yield DecodeRequest(job.key, prompt_ids=job.prompt_ids, params=job.params, grammar=job.grammar,
                                on_text=job.on_text, cancelled=self._beating(job.is_cancelled), raw=job.raw,
                                stops=job.stops)

    def _beating(self, poll: Any) -> Any:
        """``poll`` (asked between decode steps) that also records that a step ended."""
        def polled() -> bool:
            self._beat = time.monotonic()
            return bool(poll())
        return polled

    def stuck_for(self) -> float | None:
        """Seconds since the decoding thread was last between steps, when that is longer than
        STUCK_AFTER_S while requests are running or waiting; else None."""
        since = time.monotonic() - self._beat
        if since <= self.STUCK_AFTER_S or not (self._running or self._queue):
            return None
        return since

    def _idle(self) -> None:
        with self._cond:
            while not self._queue and not self._closing:
                self._beat = time.monotonic()
                self._cond.wait(1.0)
            self._beat = time.monotonic()

    def _loop(self) -> None:
        try:
            for res in self.decoder.run(self._feed(), idle=self._idle, retain=True):
                job = self._running.pop(res.key, None)
                if job is None:  # pragma: no cover - every result has its job
                    continue
                self._count(job, res)
                job.finish(res)
        except BaseException as e:  # llama.cpp failed under everyone: fail what is left
            self._failed = e
            err = e if isinstance(e, ChatGLM3Error) else GenerationError(f"the decoder stopped: {e}")
            with self._cond:
                left = list(self._running.values()) + list(self._queue)
                self._running.clear()
                self._queue.clear()
            for job in left:
                job.finish(None, err)

    def _count(self, job: Job, res: DecodeResult) -> None:
        c = self.counters
        comp = res.completion
        reason = "error" if comp is None else comp.finish_reason
        c.finished[reason] = c.finished.get(reason, 0) + 1
        if comp is not None:
            c.prompt_tokens += comp.prompt_tokens
            c.cached_prompt_tokens += comp.cached_tokens
            c.generated_tokens += comp.completion_tokens
            now = time.monotonic()
            c.recent.append((now, comp.completion_tokens))
            if job.started_at is not None:
                self._durations.append(now - job.queued_at)

    # what /metrics shows -----------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self._cond:
            queued = sum(1 for j in self._queue if not j.cancelled)
        now = time.monotonic()
        window = min(self.RATE_WINDOW_S, max(now - self.started, 1e-9))
        recent = sum(n for t, n in list(self.counters.recent) if now - t <= window)
        return {"queued": queued, "active": self.decoder.live, "slots": self.decoder.n_parallel,
                "tokens_per_second": recent / window, "counters": self.counters,
                "evaluated_prompt_tokens": self.decoder.stats.evaluated_prompt_tokens,
                "kept_prefixes": self.decoder.stats.kept_prefixes,
                "kept_prefix_tokens": self.decoder.stats.kept_prefix_tokens}
