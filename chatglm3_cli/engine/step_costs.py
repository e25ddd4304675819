"""Decode-step times by row count, measured as the engine runs, and the row padding they justify.

What a decode step of k rows costs depends on the CPU and the weights' type: llama.cpp's CPU
kernels multiply repacked rows in groups of four (GEMM) and the rest one at a time (GEMV), so
on some CPUs and types a step of 4 rows costs less than one of 3, and on others more than one
of 1 (figures: docs/benchmarks.md, scripts/bench_steps.py). So
nothing is assumed: the engine times its own steps (StepTimes, shared with the speculation
policy), and RowPadding pads a step of k rows to the next multiple of four only where this
machine measured that cheaper. The padding rows belong to a scratch sequence; nobody reads
their results and their cells are dropped after the step.
"""
from __future__ import annotations

from collections import deque
from typing import Literal

PadMode = Literal["auto", "on", "off"]


class StepTimes:
    """Decode-step seconds by row count: the fastest of the latest few steps of each count.

    The fastest, not an average: on a shared machine other processes only ever add time, and
    a step that ran while another process held a core says nothing about the kernels. (A
    longer context slows every row count alike, and the window follows it.)"""

    EXPLORE = 3  # steps of a row count timed before its cost is trusted
    WINDOW = 8  # the latest steps of a row count that its cost is taken from

    def __init__(self) -> None:
        self._s: dict[int, deque[float]] = {}  # rows -> seconds of its latest steps

    def timed(self, rows: int, seconds: float) -> None:
        self._s.setdefault(rows, deque(maxlen=self.WINDOW)).append(seconds)

    def cost(self, rows: int) -> float | None:
        """What a step of ``rows`` rows costs, once EXPLORE of them were timed."""
        got = self._s.get(rows)
        return min(got) if got and len(got) >= self.EXPLORE else None


class RowPadding:
    """How many rows to decode in a step that generates for k sequences.

    ``auto``: first time k rows, then the padded count m (a real step of m rows counts as well),
    and pad from then on only if m rows measured at least GAIN cheaper. Only one missing row
    (3 to 4, 7 to 8) is tried on purpose; padding one or two rows to four is decided only when
    real steps of m rows were timed anyway: where those lose (by far, on the AVX2 machines
    here: docs/benchmarks.md), trial steps cost more than they could find. A choice is checked
    again every RECHECK steps while the two were within CLOSE of each other (a busy moment
    during the first measurements must not decide forever); a clear loss is never retried.
    ``on`` always pads (tests, measurements), ``off`` never does."""

    GROUP = 4
    GAIN = 0.95
    CLOSE = 1.25
    RECHECK = 64

    def __init__(self, times: StepTimes, mode: PadMode = "auto") -> None:
        self.times = times
        self.mode = mode
        self._steps: dict[int, int] = {}  # k -> steps decided for k rows

    def rows(self, k: int) -> int:
        m = -(-k // self.GROUP) * self.GROUP
        if m == k or self.mode == "off":
            return k
        if self.mode == "on":
            return m
        base, padded = self.times.cost(k), self.times.cost(m)
        if base is None:
            return k
        if padded is None:
            return m if k % self.GROUP == self.GROUP - 1 else k
        pad = padded < self.GAIN * base
        n = self._steps.get(k, 0) + 1
        self._steps[k] = n
        if n % self.RECHECK == 0 and max(base, padded) < self.CLOSE * min(base, padded):
            pad = not pad  # time the other choice once more
        return m if pad else k
