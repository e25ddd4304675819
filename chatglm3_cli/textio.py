"""Reading user text: files and stdin, strictly UTF-8, with errors that say what is wrong."""
from __future__ import annotations

import os

from .errors import InputError
from .files import read_bytes

_BOM = b"\xef\xbb\xbf"


def decode_text(data: bytes, source: str) -> str:
    """Bytes to text, refusing binary data and invalid UTF-8 with the place of the problem."""
    if b"\x00" in data:
        raise InputError(f"{source} looks like a binary file (it contains NUL bytes)",
                         hint="pass a text file")
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(f"{source} is not valid UTF-8 (line {line}, byte {e.start})",
                         hint="convert it to UTF-8, e.g. with iconv") from e


def read_text_file(path: str | os.PathLike[str]) -> str:
    return decode_text(read_bytes(path), str(path))
