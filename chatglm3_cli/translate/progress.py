"""How a translate run reports itself: files start, chunks finish, files finish. The methods
do nothing here (no display); the CLI's renderers override them (cli/progress.py)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..progress import RunProgress

if TYPE_CHECKING:  # pragma: no cover
    from .results import FileResult, Summary


class TranslateProgress(RunProgress):
    """A translate run: files start, chunks finish (``advance``), files finish."""

    def start(self, summary: Summary) -> None:
        pass

    def file_started(self, result: FileResult, summary: Summary) -> None:
        pass

    def advance(self, result: FileResult, summary: Summary) -> None:
        pass

    def file_done(self, result: FileResult, summary: Summary) -> None:
        pass
