"""The translate run: files in, translated files out, through the shared parallel decoder.

1. Each file is read, parsed into units (``formats``) and checked (type, UTF-8, empty, where
   the output goes); a bad file is reported and the others go on.
2. Units become chunks up to a token budget that leaves room for the answer (``chunks``). The
   instructions are the same for every chunk of a format and come first (the system message),
   so the decoder evaluates them once and shares them across requests.
3. Chunks answered by an earlier run come from the checkpoint; the rest go to the decoder.
   An answer that does not fit (units, ids, placeholders) or is not a translation of its unit
   (``validate``) is retried as two halves, down to one unit; a unit that still fails keeps
   its source text and is listed, never dropped and never written as a translation.
4. A file whose chunks are all done is rendered and written through a temp file and a rename.

Where each step lives: ``inputs`` (1 and the writing of 4), ``instructions`` and ``chunks``
(2), ``run`` (3), ``validate`` (the answer checks), ``output`` (4), ``results`` (what is
reported), ``job`` (the settings and tasks this module takes).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from ..errors import ChatGLM3Error, InputError
from .checkpoint import Checkpoint, checkpoint_path
from .formats import Document
from .glossary import Glossary
from .inputs import load, write_atomic
from .instructions import instructions
from .job import FileTask, Settings
from .languages import Language
from .progress import TranslateProgress
from .results import FileResult, Summary, UnitFailure, retry_advice
from .run import FileState, Run

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.model import Model


def _default_decoder(model: "Model", *, n_parallel: int, n_ctx: int) -> Any:
    from ..engine.decoder import ParallelDecoder

    return ParallelDecoder(model, n_parallel=n_parallel, n_ctx=n_ctx)


def translate(tasks: Sequence[FileTask], *, open_model: Callable[[], "Model"], settings: Settings,
              model_id: Optional[str] = None, progress: Optional[TranslateProgress] = None,
              make_decoder: Optional[Callable[..., Any]] = None) -> Summary:
    """Translate every task; a file that fails is reported in its FileResult and the rest go on.

    ``open_model`` is called only when some file can be translated. ``model_id`` keys the
    checkpoints (default: the sha256 of the opened model's file, cached by path, size and
    mtime). Ctrl-C
    stops the run (``summary.interrupted``); finished chunks stay in the checkpoints.
    """
    progress = progress or TranslateProgress()
    summary = Summary(files=[FileResult(t) for t in tasks])
    loaded: list[tuple[FileResult, str, Document]] = []
    for r in summary.files:
        try:
            fmt, doc = load(r.task, overwrite=settings.overwrite or settings.preview is not None,
                            target=settings.target.code, retranslate=settings.retranslate)
        except ChatGLM3Error as e:
            r.status, r.error = "failed", e.describe()
            r.input_error = isinstance(e, InputError)
            continue
        loaded.append((r, fmt, doc))
    run: Optional[Run] = None
    files: list[FileState] = []
    try:
        if loaded:
            with open_model() as model:
                if model_id is None:
                    from ..files import file_sha256

                    model_id = file_sha256(model.path)
                run = Run(model, settings, model_id, summary, progress,
                           make_decoder or _default_decoder)
                for r, fmt, doc in loaded:
                    name = r.task.checkpoint or (str(r.task.output.resolve()) if r.task.output else None)
                    ckpt = Checkpoint(checkpoint_path(name) if name else None, label=r.task.label,
                                      warn=progress.note)
                    f = FileState(r, doc, fmt, ckpt)
                    files.append(f)
                    r.status = "running"
                    try:
                        run.plan(f)
                    except ChatGLM3Error as e:
                        r.status, r.error = "failed", e.describe()
                        f.done = True
                        continue
                progress.start(summary, [r.view() for r in summary.files if r.status == "failed"])
                summary.started = time.monotonic()
                run.run(files)
                run.close()
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        if run is not None:
            run.close()
        for f in files:
            f.checkpoint.close()
            f.result.resumable = not f.checkpoint.failed
            if not f.done:
                f.result.status = "interrupted"
        summary.seconds = time.monotonic() - summary.started
        progress.finish(summary)
    return summary


__all__ = ["Settings", "FileTask", "retry_advice", "FileResult", "Summary", "UnitFailure", "translate",
           "instructions", "load", "write_atomic", "Glossary", "Language"]
