"""What a translate run reports: per file (``FileResult``, its failed units) and for the run
(``Summary``), and the advice a run with failures ends with."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

from ..progress import RunStats
from .job import FileTask
from .progress import FileProgress

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.sampling import SamplingParams


@dataclass
class UnitFailure:
    line: int  # where the unit starts in the input (in ``where``, for a file of several documents)
    reason: str
    excerpt: str
    where: str = ""  # the document inside the file (an EPUB's chapter), or ""


@dataclass
class FileResult:
    task: FileTask
    status: str = "pending"  # translated, partial, failed, preview, interrupted
    error: Optional[str] = None
    units: int = 0
    chunks: int = 0
    chunks_done: int = 0
    cached: int = 0
    retries: int = 0
    input_error: bool = False  # it failed before any work: missing, unreadable, not its format
    resumable: bool = True  # False: its checkpoint could not be written (a rerun starts over)
    wordy: int = 0  # pieces with enough letters to tell whether they were translated
    unchanged: int = 0  # of those, answers identical to the source (a weak model echoing it)
    requests: int = 0
    failures: list[UnitFailure] = field(default_factory=list)
    text: Optional[str] = None  # the rendered output when it is not written to a file

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "partial", "interrupted")

    def view(self) -> FileProgress:
        """What a progress display shows of this file, as plain values."""
        t = self.task
        return FileProgress(key=id(self), label=t.label, output=str(t.output) if t.output is not None else None,
                            status=self.status, error=self.error, units=self.units, chunks=self.chunks,
                            chunks_done=self.chunks_done, cached=self.cached, unchanged=self.unchanged,
                            failed_units=len(self.failures))


@dataclass
class Summary(RunStats):
    """The run's counts: items are chunks (``chunks`` planned, ``chunks_done``); tokens, speed
    and time left come from RunStats."""

    files: list[FileResult] = field(default_factory=list)
    cached: int = 0  # answers taken from the checkpoint
    requests: int = 0  # requests decoded this run
    retries: int = 0  # chunks split after a mismatch
    unused_terms: Counter = field(default_factory=Counter)  # (term, translation) -> times

    @property
    def chunks(self) -> int:  # planned chunks, all files
        return self.planned

    @chunks.setter
    def chunks(self, n: int) -> None:
        self.planned = n

    @property
    def chunks_done(self) -> int:
        return self.done_now

    @chunks_done.setter
    def chunks_done(self, n: int) -> None:
        self.done_now = n

    @property
    def failed_files(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def failed_units(self) -> int:
        return sum(len(f.failures) for f in self.files)

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(not f.failed for f in self.files)



def retry_advice(summary: Summary, params: "SamplingParams") -> str:
    """What would change the outcome of a run with failed units. Units that failed were already
    retried alone (chunks split down to one unit), so "smaller chunks" cannot help; at
    temperature 0 the same command gives the same answers."""
    reasons = [u.reason for f in summary.files for u in f.failures]
    ctx = any("context" in r for r in reasons)
    if params.temperature > 0:
        if not all(f.resumable for f in summary.files):
            return ("see the list above; run the same command again to retry (resume is off where the checkpoint "
                    "could not be written: those files are translated again from the start)")
        return "see the list above; run the same command again to retry only what failed (sampling gives other answers)"
    tips = (["raise --ctx for units that do not fit the context"] if ctx else []) + [
        "use a larger model", "or a --temperature above 0 (which translates every chunk again)"]
    return ("see the list above; at temperature 0 the same command repeats the same answers: "
            + ", ".join(tips))

