"""How a translate run reports itself: files start, chunks finish, files finish. The methods
do nothing here (no display); the CLI's renderers override them (cli/translate_progress.py).

A renderer gets plain values: ``FileProgress`` (what a file's line says) and the run's
``RunStats`` (counts, tokens, speed, time left), never the run's own objects."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from ..progress import RunProgress, RunStats


@dataclass(frozen=True)
class FileProgress:
    key: int  # the same for every report on one file
    label: str  # the path as given, or "stdin"
    output: Optional[str]  # where it is written; None: stdout
    status: str  # running, translated, partial, failed, preview
    error: Optional[str]
    units: int
    chunks: int
    chunks_done: int
    cached: int  # answers from the checkpoint
    unchanged: int  # answers identical to their source
    failed_units: int


class TranslateProgress(RunProgress):
    """A translate run: files start, chunks finish (``advance``), files finish."""

    def start(self, stats: RunStats, failed: Sequence[FileProgress]) -> None:
        """Before any work; ``failed``: the files that cannot be used (reported first)."""

    def file_started(self, file: FileProgress, stats: RunStats) -> None:
        pass

    def advance(self, file: FileProgress, stats: RunStats) -> None:
        pass

    def file_done(self, file: FileProgress, stats: RunStats) -> None:
        pass
