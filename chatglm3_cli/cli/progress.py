"""Every progress display of the CLI, on stderr. The library reports through the base classes
of ``chatglm3_cli.progress``; these render them: a rich display when stderr is a terminal,
plain lines otherwise (logs, pipes, CI: no control codes, no redraws).

Plain lines show life on their own: a line when a job or file starts, a status line at least
every ``STATUS_EVERY_S`` seconds while tokens are being generated (items done, tokens, tok/s,
time left), and one line per finished file or failed record. The rich bars move with tokens,
not only with finished items. Speed and time left come from ``RunStats``, so what the bar
says and what the summary says at the end are the same numbers.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Optional

from ..batch.progress import BatchProgress
from ..hub import human_size
from ..progress import DownloadProgress, RunStats, format_seconds_left
from .console import Console

if TYPE_CHECKING:  # pragma: no cover
    from ..batch.runner import Summary as BatchSummary

STATUS_EVERY_S = 5.0  # plain status lines while generating
MAX_FAILURE_LINES = 20  # batch failures reported one by one while the job runs


def plural(k: int, word: str) -> str:
    return f"{k} {word}{'' if k == 1 else 's'}"


def status_text(stats: RunStats, unit: str) -> str:
    """"3/10 chunks, 1234 tokens, 9.4 tok/s, about 2m05s left" (time left only when honest)."""
    return (f"{stats.done_now}/{stats.planned} {unit}, {plural(stats.tokens_so_far, 'token')}, "
            f"{stats.tokens_per_second:.1f} tok/s{format_seconds_left(stats.seconds_left())}")


class StderrBar:
    """A rich progress display on the terminal's stderr; text printed through it goes above."""

    def __init__(self, con: Console, *columns: Any) -> None:
        from rich.console import Console as RichConsole
        from rich.progress import Progress

        rich_console = RichConsole(file=con.stderr, force_terminal=con.stderr_isatty)
        self.progress = Progress(*columns, console=rich_console, transient=False)
        self.progress.start()

    def print(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False)

    def stop(self) -> None:
        self.progress.stop()


class StatusLines:
    """Plain lines, and a status line when ``STATUS_EVERY_S`` has passed since the last one."""

    def __init__(self, con: Console, prefix: str) -> None:
        self.con = con
        self.prefix = prefix
        self._last = time.monotonic()

    def line(self, text: str) -> None:
        self.con.error(f"{self.prefix}: {text}")

    def status(self, stats: RunStats, unit: str) -> None:
        now = time.monotonic()
        if now - self._last >= STATUS_EVERY_S and stats.done_now < stats.planned:
            self._last = now
            self.line(status_text(stats, unit))


def rich_run_bar(con: Console, *first: Any) -> StderrBar:
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

    return StderrBar(con, *first, BarColumn(), TextColumn("{task.fields[counts]}"),
                     TextColumn("{task.fields[speed]}"), TimeElapsedColumn(), TextColumn("{task.fields[left]}"))


def run_fields(stats: RunStats, unit: str) -> dict[str, Any]:
    left = stats.seconds_left()
    return {"completed": stats.items_progress(),
            "counts": f"{stats.done_now}/{stats.planned} {unit}",
            "speed": f"{plural(stats.tokens_so_far, 'token')} {stats.tokens_per_second:.1f} tok/s",
            "left": format_seconds_left(left).lstrip(", ") if left is not None else ""}


# downloads ------------------------------------------------------------------------------------

class PlainDownload(DownloadProgress):
    """One line per file (and the notes): nothing that redraws."""

    def __init__(self, con: Console) -> None:
        self.con = con

    def start(self, name: str, total: int, done: int) -> None:
        resume = f", resuming at {human_size(done)}" if done else ""
        self.con.error(f"downloading {name} ({human_size(total)}{resume})")

    def note(self, text: str) -> None:
        self.con.error(text)


class RichDownload(DownloadProgress):
    """A bar with size, speed and time left."""

    def __init__(self, con: Console) -> None:
        self.con = con
        self._bar: Optional[StderrBar] = None
        self._task: Any = None

    def start(self, name: str, total: int, done: int) -> None:
        from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeRemainingColumn, TransferSpeedColumn

        self.end(True)
        self._bar = StderrBar(self.con, TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                              TransferSpeedColumn(), TimeRemainingColumn())
        self._task = self._bar.progress.add_task(name.rsplit("/", 1)[-1], total=total, completed=done)

    def advance(self, nbytes: int) -> None:
        if self._bar is not None:
            self._bar.progress.advance(self._task, nbytes)

    def end(self, ok: bool) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def note(self, text: str) -> None:
        if self._bar is not None:
            self._bar.print(text)
        else:
            self.con.error(text)


def make_progress(con: Console) -> DownloadProgress:
    """The download display for this stderr."""
    return RichDownload(con) if con.stderr_isatty else PlainDownload(con)


# batch ------------------------------------------------------------------------------------------

def _failure_text(key: Optional[str], error: str) -> str:
    return f"{key if key is not None else '(no id)'}: {error}"


def _workers(stats: Any) -> str:
    """On a Ray cluster (--ray): while records are left, how many workers are alive (the driver
    asks Ray now and then); once Ray says none (Ray Data stops the pool when its last batch is
    done, which a short job's only batch can do before the driver asks) or the job is done, how
    many returned answers: "0 workers alive" only when none has answered either."""
    alive = getattr(stats, "workers", None)
    used = getattr(stats, "workers_used", None) or 0
    if alive and stats.done_now < stats.planned:
        return f", {plural(alive, 'worker')} alive"
    if used:
        return f", {plural(used, 'worker')} used"
    return "" if alive is None else f", {plural(alive, 'worker')} alive"


class PlainBatch(BatchProgress):
    def __init__(self, con: Console) -> None:
        self.out = StatusLines(con, "batch")
        self._failures = 0

    def note(self, text: str) -> None:
        self.out.con.error(text)

    def start(self, todo: int, summary: BatchSummary) -> None:
        if todo:
            self.out.line(f"{plural(todo, 'record')} to run")

    def advance(self, ok: bool, key: Optional[str], error: Optional[str], summary: BatchSummary) -> None:
        if not ok and error is not None:
            self._failures += 1
            if self._failures <= MAX_FAILURE_LINES:
                self.out.line(_failure_text(key, error))
            elif self._failures == MAX_FAILURE_LINES + 1:
                self.out.line("more failures: see the error lines in the results")
        self.tick(summary)

    def tick(self, stats: Any) -> None:
        self.out.status(stats, f"done, {stats.failed_now} failed{_workers(stats)}")


class RichBatch(BatchProgress):
    """A bar that moves with tokens: done, failed, tokens and tok/s, elapsed and time left."""

    def __init__(self, con: Console) -> None:
        self.con = con
        self._bar: Optional[StderrBar] = None
        self._task: Any = None
        self._failures = 0

    def note(self, text: str) -> None:
        if self._bar is not None:
            self._bar.print(text)
        else:
            self.con.error(text)

    def start(self, todo: int, summary: BatchSummary) -> None:
        if todo == 0:
            return
        from rich.progress import TextColumn

        self._bar = rich_run_bar(self.con, TextColumn("batch"))
        self._task = self._bar.progress.add_task("batch", total=todo, **run_fields(summary, "done"))

    def advance(self, ok: bool, key: Optional[str], error: Optional[str], summary: BatchSummary) -> None:
        if not ok and error is not None:
            self._failures += 1
            if self._failures <= MAX_FAILURE_LINES:
                self.note(f"failed: {_failure_text(key, error)}")
        self.tick(summary)

    def tick(self, stats: Any) -> None:
        if self._bar is not None:
            failed = f", [red]{stats.failed_now} failed[/]" if stats.failed_now else ""
            self._bar.progress.update(self._task, **run_fields(stats, "done" + failed + _workers(stats)))

    def finish(self, stats: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def make_batch_progress(con: Console) -> BatchProgress:
    return RichBatch(con) if con.stderr_isatty else PlainBatch(con)
