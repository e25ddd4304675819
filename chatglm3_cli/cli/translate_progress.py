"""The translate command's progress on stderr: a rich display on a terminal (an overall bar that
moves with tokens and one bar per file), plain lines otherwise. Shared parts (status lines,
the bar) are in cli/progress.py; this module imports the translate library, so the command
imports it only when it runs (``--help`` stays light)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from ..translate.progress import TranslateProgress
from .console import Console
from .progress import StatusLines, StderrBar, plural, rich_run_bar, run_fields

if TYPE_CHECKING:  # pragma: no cover
    from ..translate.results import FileResult
    from ..translate.results import Summary as TranslateSummary


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
        self.out = StatusLines(con, "translate")

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

        self._bar = rich_run_bar(self.con, TextColumn("{task.description}"))
        self._overall = self._bar.progress.add_task("all files", total=summary.chunks or 1,
                                                    **run_fields(summary, "chunks"))
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
            self._bar.progress.update(self._overall, **run_fields(stats, "chunks"))

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
