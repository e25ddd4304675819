"""Inputs and outputs of a file: read, decode, parse and check where the output goes before any
work; write through a temp file and a rename afterwards, and only over what translate wrote."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import InputError, OutputWriteError, UnsupportedFormatError
from ..files import atomic_write_bytes, read_bytes, write_target
from ..textio import decode_text
from . import written
from .formats import BINARY, FORMATS, Document, format_for, parse, parse_bytes, supported_list
from .job import FileTask

_BOM = b"\xef\xbb\xbf"


def write_atomic(path: Path, data: bytes) -> None:
    """Write through a temp file and a rename (files.atomic_write_bytes: never half a file, a
    symlink written through, a device refused), and remember that translate wrote it."""
    atomic_write_bytes(path, [data])
    written.record(path, data)


# loading ---------------------------------------------------------------------------------------

def load(task: FileTask, *, overwrite: bool = True, target: str = "",
         retranslate: bool = False) -> tuple[str, Document]:
    """Read, decode and parse one input; check where its output goes. Raises typed errors.
    ``target`` and ``retranslate``: see ``formats.parse``."""
    fmt = task.fmt or (format_for(task.path) if task.path is not None else "txt")
    if fmt is None or fmt not in FORMATS:
        ext = task.path.suffix if task.path is not None and task.path.suffix else "(no extension)"
        raise UnsupportedFormatError(
            f"{task.label}: cannot translate {ext} files (supported: {supported_list()})",
            hint=f"pass --format {'|'.join(FORMATS)} to treat it as one of those")
    if task.data is not None:
        data = task.data
    else:
        assert task.path is not None
        data = read_bytes(task.path, task.label)
    if fmt in BINARY:
        if not data:
            raise InputError(f"{task.label} is empty: nothing to translate")
        doc = parse_bytes(fmt, data, task.label)
    else:
        text = decode_text(data, task.label)
        if not text.strip():
            raise InputError(f"{task.label} is empty: nothing to translate")
        doc = parse(fmt, text, task.label, target=target, retranslate=retranslate)
        doc.bom = data.startswith(_BOM)
    if task.output is not None:
        check_output(task, overwrite=overwrite)
    return fmt, doc


def check_output(task: FileTask, *, overwrite: bool = True) -> None:
    out = task.output
    assert out is not None
    if out.is_dir():
        raise OutputWriteError(f"cannot write {out}: a directory is in the way")
    if task.path is not None and out.resolve() == task.path.resolve():
        raise OutputWriteError(f"{task.label}: the output would overwrite the input",
                               hint="write elsewhere with -o DIR")
    target = write_target(out)  # a device, FIFO or socket is refused
    check_overwrite(task, overwrite)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".chatglm3-probe.", dir=target.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputWriteError(f"cannot write {out}: {e.strerror or e}") from None


def check_overwrite(task: FileTask, overwrite: bool) -> None:
    """An existing output that translate did not write (a hand-made translation, or ours edited
    by hand since) is never replaced unless asked to."""
    out = task.output
    if out is not None and not overwrite and not written.may_write(out):
        raise OutputWriteError(f"{out} already exists and was not written by chatglm3 translate "
                               "(or was edited since): not overwriting it",
                               hint="pass --overwrite to replace it, or write elsewhere with -o DIR")

