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
from ..translate.progress import TranslateProgress
from .console import Console

if TYPE_CHECKING:  # pragma: no cover
    from ..batch.runner import Summary as BatchSummary
    from ..translate.results import FileResult
    from ..translate.results import Summary as TranslateSummary

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


class _Lines:
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


def _rich_run_bar(con: Console, *first: Any) -> StderrBar:
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

    return StderrBar(con, *first, BarColumn(), TextColumn("{task.fields[counts]}"),
                     TextColumn("{task.fields[speed]}"), TimeElapsedColumn(), TextColumn("{task.fields[left]}"))


def _run_fields(stats: RunStats, unit: str) -> dict[str, Any]:
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
        self.out = _Lines(con, "batch")
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

        self._bar = _rich_run_bar(self.con, TextColumn("batch"))
        self._task = self._bar.progress.add_task("batch", total=todo, **_run_fields(summary, "done"))

    def advance(self, ok: bool, key: Optional[str], error: Optional[str], summary: BatchSummary) -> None:
        if not ok and error is not None:
            self._failures += 1
            if self._failures <= MAX_FAILURE_LINES:
                self.note(f"failed: {_failure_text(key, error)}")
        self.tick(summary)

    def tick(self, stats: Any) -> None:
        if self._bar is not None:
            failed = f", [red]{stats.failed_now} failed[/]" if stats.failed_now else ""
            self._bar.progress.update(self._task, **_run_fields(stats, "done" + failed + _workers(stats)))

    def finish(self, stats: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def make_batch_progress(con: Console) -> BatchProgress:
    return RichBatch(con) if con.stderr_isatty else PlainBatch(con)


# translate ---------------------------------------------------------------------------------------

def file_started_text(r: FileResult) -> str:
    """"film.srt: 10 units in 1 chunk" (or "... 3 chunks, 1 from the checkpoint")."""
    return f"{r.task.label}: {plural(r.units, 'unit')} in {plural(r.chunks, 'chunk')}"


def file_done_text(r: FileResult) -> str:
    t = r.task
    where = str(t.output) if t.output is not None else "stdout"
    if r.status == "failed":
        err = r.error or "failed"
        return err if err.startswith(t.label) else f"{t.label}: {err}"
    if r.status == "preview":
        return f"{t.label}: preview of {plural(r.chunks, 'chunk')} (stdout)"
    extra = f", {len(r.failures)} kept in the source language" if r.failures else ""
    if r.unchanged:  # the model answered with the source text: probably not translated
        extra += f", {r.unchanged} came back identical to the source"
    cached = f", {plural(r.cached, 'answer')} from the checkpoint" if r.cached else ""
    return f"{t.label} -> {where} ({plural(r.units, 'unit')}, {plural(r.chunks, 'chunk')}{cached}{extra})"


class PlainTranslate(TranslateProgress):
    def __init__(self, con: Console) -> None:
        self.out = _Lines(con, "translate")

    def note(self, text: str) -> None:
        self.out.con.error(text)

    def start(self, summary: TranslateSummary) -> None:
        for r in summary.files:
            if r.status == "failed":  # unreadable, unsupported, unwritable: known before any work
                self.out.line(file_done_text(r))

    def file_started(self, result: FileResult, summary: TranslateSummary) -> None:
        self.out.line(file_started_text(result))

    def advance(self, result: FileResult, summary: TranslateSummary) -> None:
        self.tick(summary)

    def tick(self, stats: Any) -> None:
        self.out.status(stats, "chunks")

    def file_done(self, result: FileResult, summary: TranslateSummary) -> None:
        self.out.line(file_done_text(result))


class RichTranslate(TranslateProgress):
    """An overall bar that moves with tokens, and one bar per file being translated."""

    def __init__(self, con: Console) -> None:
        self.con = con
        self._bar: Optional[StderrBar] = None
        self._overall: Any = None
        self._tasks: dict[int, Any] = {}

    def _print(self, text: str) -> None:
        if self._bar is not None:
            self._bar.print(f"translate: {text}")
        else:
            self.con.error(f"translate: {text}")

    def note(self, text: str) -> None:
        self._print(text)

    def start(self, summary: TranslateSummary) -> None:
        from rich.progress import TextColumn

        self._bar = _rich_run_bar(self.con, TextColumn("{task.description}"))
        self._overall = self._bar.progress.add_task("all files", total=summary.chunks or 1,
                                                    **_run_fields(summary, "chunks"))
        for r in summary.files:
            if r.status == "failed":
                self._print(file_done_text(r))

    def file_started(self, result: FileResult, summary: TranslateSummary) -> None:
        if self._bar is not None:
            label = result.task.label
            name = label if len(label) <= 40 else "…" + label[-39:]
            self._tasks[id(result)] = self._bar.progress.add_task(
                name, total=result.chunks or 1, counts=f"0/{result.chunks} chunks", speed="", left="")

    def advance(self, result: FileResult, summary: TranslateSummary) -> None:
        task = self._tasks.get(id(result))
        if task is not None and self._bar is not None:
            self._bar.progress.update(task, completed=result.chunks_done,
                                      counts=f"{result.chunks_done}/{result.chunks} chunks")
        self.tick(summary)

    def tick(self, stats: Any) -> None:
        if self._bar is not None:
            self._bar.progress.update(self._overall, **_run_fields(stats, "chunks"))

    def file_done(self, result: FileResult, summary: TranslateSummary) -> None:
        task = self._tasks.pop(id(result), None)
        if task is not None and self._bar is not None:
            self._bar.progress.remove_task(task)
        self._print(file_done_text(result))

    def finish(self, stats: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def make_translate_progress(con: Console) -> TranslateProgress:
    return RichTranslate(con) if con.stderr_isatty else PlainTranslate(con)
