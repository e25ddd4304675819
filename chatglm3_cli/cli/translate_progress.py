"""The translate command's progress on stderr: a rich display on a terminal (an overall bar that
moves with tokens and one bar per file), plain lines otherwise. Shared parts (status lines,
the bar) are in cli/progress.py; this module imports the translate library, so the command
imports it only when it runs (``--help`` stays light)."""
from __future__ import annotations

from typing import Any, Optional, Sequence

from ..progress import RunStats
from ..translate.progress import FileProgress, TranslateProgress
from .console import Console
from .progress import StatusLines, StderrBar, plural, rich_run_bar, run_fields


def file_started_text(f: FileProgress) -> str:
    """"film.srt: 10 units in 1 chunk" (or "... 3 chunks, 1 from the checkpoint")."""
    return f"{f.label}: {plural(f.units, 'unit')} in {plural(f.chunks, 'chunk')}"


def file_done_text(f: FileProgress) -> str:
    where = f.output if f.output is not None else "stdout"
    if f.status == "failed":
        err = f.error or "failed"
        return err if err.startswith(f.label) else f"{f.label}: {err}"
    if f.status == "preview":
        return f"{f.label}: preview of {plural(f.chunks, 'chunk')} (stdout)"
    extra = f", {f.failed_units} kept in the source language" if f.failed_units else ""
    if f.unchanged:  # the model answered with the source text: probably not translated
        extra += f", {f.unchanged} came back identical to the source"
    cached = f", {plural(f.cached, 'answer')} from the checkpoint" if f.cached else ""
    return f"{f.label} -> {where} ({plural(f.units, 'unit')}, {plural(f.chunks, 'chunk')}{cached}{extra})"


class PlainTranslate(TranslateProgress):
    def __init__(self, con: Console) -> None:
        self.out = StatusLines(con, "translate")

    def note(self, text: str) -> None:
        self.out.con.error(text)

    def start(self, stats: RunStats, failed: Sequence[FileProgress]) -> None:
        for f in failed:  # unreadable, unsupported, unwritable: known before any work
            self.out.line(file_done_text(f))

    def file_started(self, file: FileProgress, stats: RunStats) -> None:
        self.out.line(file_started_text(file))

    def advance(self, file: FileProgress, stats: RunStats) -> None:
        self.tick(stats)

    def tick(self, stats: Any) -> None:
        self.out.status(stats, "chunks")

    def file_done(self, file: FileProgress, stats: RunStats) -> None:
        self.out.line(file_done_text(file))


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

    def start(self, stats: RunStats, failed: Sequence[FileProgress]) -> None:
        from rich.progress import TextColumn

        self._bar = rich_run_bar(self.con, TextColumn("{task.description}"))
        self._overall = self._bar.progress.add_task("all files", total=stats.planned or 1,
                                                    **run_fields(stats, "chunks"))
        for f in failed:
            self._print(file_done_text(f))

    def file_started(self, file: FileProgress, stats: RunStats) -> None:
        if self._bar is not None:
            label = file.label
            name = label if len(label) <= 40 else "…" + label[-39:]
            self._tasks[file.key] = self._bar.progress.add_task(
                name, total=file.chunks or 1, counts=f"0/{file.chunks} chunks", speed="", left="")

    def advance(self, file: FileProgress, stats: RunStats) -> None:
        task = self._tasks.get(file.key)
        if task is not None and self._bar is not None:
            self._bar.progress.update(task, completed=file.chunks_done,
                                      counts=f"{file.chunks_done}/{file.chunks} chunks")
        self.tick(stats)

    def tick(self, stats: Any) -> None:
        if self._bar is not None:
            self._bar.progress.update(self._overall, **run_fields(stats, "chunks"))

    def file_done(self, file: FileProgress, stats: RunStats) -> None:
        task = self._tasks.pop(file.key, None)
        if task is not None and self._bar is not None:
            self._bar.progress.remove_task(task)
        self._print(file_done_text(file))

    def finish(self, stats: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def make_translate_progress(con: Console) -> TranslateProgress:
    return RichTranslate(con) if con.stderr_isatty else PlainTranslate(con)
