"""Download progress on stderr: a rich bar (size, speed, time left) on a terminal, one plain line
per file otherwise (logs and pipes get no control codes and no redraws)."""
from __future__ import annotations

from typing import Any, Optional

from ..hub import human_size
from .console import Console


class PlainProgress:
    def __init__(self, con: Console) -> None:
        self.con = con

    def start(self, name: str, total: int, done: int) -> None:
        resume = f", resuming at {human_size(done)}" if done else ""
        self.con.error(f"downloading {name} ({human_size(total)}{resume})")

    def advance(self, nbytes: int) -> None:
        pass

    def end(self, ok: bool) -> None:
        pass

    def note(self, text: str) -> None:
        self.con.error(text)


class RichProgress:
    def __init__(self, con: Console) -> None:
        self.con = con
        self._bar: Optional[Any] = None
        self._task: Any = None

    def start(self, name: str, total: int, done: int) -> None:
        from rich.console import Console as RichConsole
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)

        self.end(True)
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                             TransferSpeedColumn(), TimeRemainingColumn(),
                             console=RichConsole(file=self.con.stderr), transient=False)
        self._bar.start()
        self._task = self._bar.add_task(name.rsplit("/", 1)[-1], total=total, completed=done)

    def advance(self, nbytes: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, nbytes)

    def end(self, ok: bool) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def note(self, text: str) -> None:
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False)
        else:
            self.con.error(text)


def make_progress(con: Console) -> "PlainProgress | RichProgress":
    return RichProgress(con) if con.stderr_isatty else PlainProgress(con)
