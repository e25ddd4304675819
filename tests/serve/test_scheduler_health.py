"""The scheduler says when its decoding thread is stuck (what /health reports as 503). The
decoder here is a stand-in whose step blocks: the plumbing is what is tested."""
from __future__ import annotations

import asyncio
import threading
import time

from chatglm3_cli.engine.decoder import WAIT
from chatglm3_cli.engine.sampling import SamplingParams
from chatglm3_cli.serve.scheduler import Job, Scheduler


class BlockingDecoder:
    """Takes one request, polls it once (a step ends), then blocks inside the next step."""

    n_parallel = 1
    live = 0

    def __init__(self) -> None:
        self.release = threading.Event()

    def run(self, feed, idle, retain):
        for req in feed:
            if req is WAIT:
                idle()
                continue
            req.cancelled()  # between steps
            self.release.wait(30)  # a step that does not end
            return
        return

    def close(self) -> None:
        pass


def test_stuck_for_names_a_step_that_does_not_end_and_only_while_requests_wait():
    decoder = BlockingDecoder()
    sched = Scheduler(decoder, max_queue=4)  # type: ignore[arg-type]
    sched.STUCK_AFTER_S = 0.5
    sched.start()
    try:
        time.sleep(1.0)
        assert sched.stuck_for() is None  # idle is not stuck
        sched.submit(Job([1, 2, 3], SamplingParams(), loop=asyncio.new_event_loop()))
        deadline = time.monotonic() + 20
        while sched.stuck_for() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (sched.stuck_for() or 0) > 0.5
    finally:
        decoder.release.set()
        sched.close(5)
