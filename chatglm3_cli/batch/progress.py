"""How a batch job reports itself: the records to run, then one ``advance`` per record written.
The methods do nothing here (no display); the CLI's renderers override them (cli/progress.py)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from ..progress import RunProgress

if TYPE_CHECKING:  # pragma: no cover
    from .runner import Summary


class BatchProgress(RunProgress):
    """A batch job: the records to run, then one ``advance`` per record written."""

    def start(self, todo: int, summary: Summary) -> None:
        pass

    def advance(self, ok: bool, key: Optional[str], error: Optional[str], summary: Summary) -> None:
        pass
