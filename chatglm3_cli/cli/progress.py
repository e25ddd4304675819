"""Progress on stderr: the pieces every command's progress shares (a rich display on a terminal,
the time-left text), and the download progress (a bar with size, speed and time left on a
terminal, one plain line per file otherwise: logs and pipes get no control codes, no redraws)."""
from __future__ import annotations

import time
from typing import Any, Optional

from ..hub import human_size
from .console import Console


def time_left(done: int, total: int, started: float) -> str:
    """", about 2m05s left" at the pace so far since ``started`` (time.monotonic); "" before the
    first item is done or after the last."""
    if done <= 0 or done >= total:
        return ""
    secs = int((time.monotonic() - started) / done * (total - done))
    return f", about {secs // 60}m{secs % 60:02d}s left" if secs >= 60 else f", about {secs}s left"


class StderrBar:
    """A rich progress display on the terminal's stderr; text printed through it goes above."""

    def __init__(self, con: Console, *columns: Any) -> None:
        from rich.console import Console as RichConsole
        from rich.progress import Progress

        self.progress = Progress(*columns, console=RichConsole(file=con.stderr), transient=False)
        self.progress.start()

    def print(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False)

    def stop(self) -> None:
        self.progress.stop()


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


def make_progress(con: Console) -> "PlainProgress | RichProgress":
    return RichProgress(con) if con.stderr_isatty else PlainProgress(con)
