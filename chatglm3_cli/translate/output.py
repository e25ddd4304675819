"""A file whose chunks are all resolved: its translation joined, checked as a whole and written."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ChatGLM3Error, OutputWriteError
from .chunks import join_parts
from .formats import BILINGUAL
from .inputs import check_overwrite, write_atomic
from .job import Settings
from .progress import TranslateProgress
from .results import Summary
from .validate import same_text

if TYPE_CHECKING:  # pragma: no cover
    from .run import FileState


def finish_file(f: "FileState", settings: Settings, summary: Summary, progress: TranslateProgress) -> None:
    """Join each unit's parts, refuse an output that is no translation (every unit failed, or
    every answer the source itself), render and write it (or keep it for stdout)."""
    f.done = True
    r = f.result
    translations: dict[int, str] = {}
    spaced = settings.target.spaced
    glossary = settings.glossary
    for unit, n in f.n_parts.items():
        got = f.parts.get(unit, {})
        if unit in f.failed_units or len(got) != n:
            continue
        translations[unit] = join_parts([(got[k], f.seps.get((unit, k), "")) for k in range(n)], spaced)
        if glossary:
            for pair in glossary.unused(f.doc.units[unit].text, translations[unit]):
                summary.unused_terms[pair] += 1
    preview = settings.preview is not None
    wanted = [u for u in f.n_parts if not preview or u <= f.last_unit]
    if wanted and not translations:
        # Every unit failed: the output would be the input under a new name. Write nothing.
        r.status = "failed"
        r.error = (f"{r.task.label}: nothing was translated (all {len(wanted)} units failed, "
                   f"listed above); no output written")
        progress.file_done(r.view(), summary)
        return
    if r.wordy and r.unchanged == r.wordy and not r.failures:
        # A weak model may copy its input back: every answer the same as its source text.
        r.status = "failed"
        r.error = (f"{r.task.label}: the model returned the text untranslated (all {r.wordy} "
                   f"units came back identical to the source; is it already in "
                   f"{settings.target.name}?); no output written")
        progress.file_done(r.view(), summary)
        return
    if wanted and all(same_text(f.doc.units[u].text, tr) for u, tr in translations.items()):
        # Some units failed and the rest came back as they were: the output would be the input.
        r.status = "failed"
        r.error = (f"{r.task.label}: nothing was translated ({len(r.failures)} units failed, listed above; "
                   f"the other {len(translations)} came back identical to the source); no output written")
        progress.file_done(r.view(), summary)
        return
    bilingual = settings.bilingual and f.fmt in BILINGUAL  # a catalogue or locale file has one language
    if preview:
        r.text = f.doc.render(translations, bilingual=bilingual, upto=f.last_unit)
        r.status = "preview"
    else:
        if r.task.output is not None:
            try:
                check_overwrite(r.task, settings.overwrite)  # again: hours may have passed
                write_atomic(r.task.output, f.doc.to_bytes(translations, bilingual=bilingual))
            except (OSError, ChatGLM3Error) as e:
                r.status = "failed"
                err = e if isinstance(e, ChatGLM3Error) else OutputWriteError(
                    f"cannot write {r.task.output}: {e.strerror or e}")
                r.error = err.describe()
                progress.file_done(r.view(), summary)
                return
        else:
            r.text = f.doc.render(translations, bilingual=bilingual)
        r.status = "partial" if r.failures else "translated"
        if not r.failures:
            f.checkpoint.remove()
    progress.file_done(r.view(), summary)
