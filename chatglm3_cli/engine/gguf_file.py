"""Read a GGUF file's header (metadata and tensor table) without llama.cpp.

We read the header ourselves because (1) llama.cpp only logs why a file failed to load, and a
user deserves a one-line reason (not a GGUF, truncated, unknown architecture), and (2) the
exact ChatGLM3 tokenizer is rebuilt from the vocabulary arrays stored here. Only the header is
read; tensor data is never touched, so this is cheap even for a 4 GB file.
"""
from __future__ import annotations

import mmap
import os
import struct
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelFormatError, ModelNotFoundError

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# GGUF metadata value types.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9

# ggml tensor types: (elements per block, bytes per block), for the truncation check. A type not
# listed here skips that check and is left for llama.cpp to judge.
_TYPE_SIZES = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 40), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210),
    15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18),
    21: (256, 110), 22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4),
    27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66),
    39: (32, 17), 40: (64, 36), 41: (128, 18),
}
FILE_TYPES = {  # general.file_type -> the quant name users know
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4",
}


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int

    def nbytes(self) -> int | None:
        size = _TYPE_SIZES.get(self.ggml_type)
        if size is None:
            return None
        n = 1
        for d in self.shape:
            n *= d
        return n // size[0] * size[1]


@dataclass
class GGUFInfo:
    path: Path
    version: int
    file_size: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo] = field(default_factory=list)
    data_offset: int = 0

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def arch_get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(f"{self.architecture}.{key}", default)

    @property
    def context_length(self) -> int | None:
        v = self.arch_get("context_length")
        return int(v) if v is not None else None

    @property
    def quant(self) -> str | None:
        ft = self.metadata.get("general.file_type")
        return FILE_TYPES.get(int(ft)) if ft is not None else None

    @property
    def chat_template(self) -> str | None:
        t = self.metadata.get("tokenizer.chat_template")
        return str(t) if t else None


class _Reader:
    def __init__(self, buf: mmap.mmap | bytes, path: Path) -> None:
        self.buf = buf
        self.pos = 0
        self.path = path

    def _take(self, n: int) -> memoryview | bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise ModelFormatError(f"{self.path}: the file ends inside its GGUF header (truncated)")
        out = self.buf[self.pos:end]
        self.pos = end
        return out

    def scalar(self, fmt: str) -> Any:
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self._take(size))[0]

    def string(self) -> str:
        n = self.scalar("Q")
        return bytes(self._take(n)).decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype = self.scalar("I")
            count = self.scalar("Q")
            if etype in _SCALARS and etype != 7:
                code = {"B": "B", "b": "b", "H": "H", "h": "h", "I": "I", "i": "i", "f": "f",
                        "Q": "Q", "q": "q", "d": "d"}[_SCALARS[etype]]
                arr = array(code)
                arr.frombytes(bytes(self._take(arr.itemsize * count)))
                return arr
            return [self.value(etype) for _ in range(count)]
        raise ModelFormatError(f"{self.path}: unknown GGUF value type {vtype} (corrupt header)")


def read_gguf(path: str | os.PathLike[str]) -> GGUFInfo:
    """Parse a GGUF header. Raises ModelNotFoundError / ModelFormatError with one-line messages."""
    p = Path(path)
    if not p.exists():
        raise ModelNotFoundError(f"model file not found: {p}")
    if p.is_dir():
        raise ModelNotFoundError(f"{p} is a directory, not a .gguf file")
    try:
        f = open(p, "rb")
    except OSError as e:
        raise ModelNotFoundError(f"cannot open {p}: {e.strerror}") from e
    with f:
        size = os.fstat(f.fileno()).st_size
        if size < 24:
            raise ModelFormatError(f"{p} is not a GGUF model file ({size} bytes)")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            if mm[:4] != MAGIC:
                hint = ""
                if mm[:4] in (b"ggml", b"ggjt", b"ggmf", b"lmgg", b"tjgg"):
                    hint = " (an old GGML file: llama.cpp needs GGUF)"
                raise ModelFormatError(f"{p} is not a GGUF model file{hint}")
            r = _Reader(mm, p)
            r.pos = 4
            version = r.scalar("I")
            if version not in (2, 3):
                raise ModelFormatError(f"{p}: unsupported GGUF version {version}")
            n_tensors = r.scalar("Q")
            n_kv = r.scalar("Q")
            if n_kv > 1_000_000 or n_tensors > 1_000_000:
                raise ModelFormatError(f"{p}: corrupt GGUF header")
            meta: dict[str, Any] = {}
            for _ in range(n_kv):
                key = r.string()
                meta[key] = r.value(r.scalar("I"))
            tensors = []
            for _ in range(n_tensors):
                name = r.string()
                n_dims = r.scalar("I")
                if n_dims > 8:
                    raise ModelFormatError(f"{p}: corrupt GGUF tensor table")
                shape = tuple(r.scalar("Q") for _ in range(n_dims))
                ttype = r.scalar("I")
                offset = r.scalar("Q")
                tensors.append(TensorInfo(name, shape, ttype, offset))
            align = int(meta.get("general.alignment", DEFAULT_ALIGNMENT)) or DEFAULT_ALIGNMENT
            data_offset = (r.pos + align - 1) // align * align
    info = GGUFInfo(p, version, size, meta, tensors, data_offset)
    _check_complete(info)
    return info


def _check_complete(info: GGUFInfo) -> None:
    """A download cut short leaves a valid header and missing tensor data: catch that here."""
    end = info.data_offset
    for t in info.tensors:
        n = t.nbytes()
        if n is None:
            continue
        end = max(end, info.data_offset + t.offset + n)
    if end > info.file_size:
        raise ModelFormatError(
            f"{info.path} is truncated: {info.file_size:,} bytes on disk, {end:,} expected",
            hint="the download was incomplete: download the model again",
        )
