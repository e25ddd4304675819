"""Exact ChatGLM3 tokenization, rebuilt from the GGUF file itself.

llama.cpp's SPM tokenizer lets control tokens take part in BPE merges; ChatGLM3's control
tokens ``sop``/``eop`` have score 0.0, which beats every real piece, so words such as
"philosophy" or "peoples" come out with a control token inside. The official tokenizer is
plain SentencePiece. Everything SentencePiece needs is in the GGUF (pieces, scores, types);
the normalizer settings are ChatGLM3's known constants. We serialize a SentencePiece
ModelProto by hand (a few protobuf fields) and let the sentencepiece library encode: exact by
construction, no extra download, no protobuf dependency.
"""
from __future__ import annotations

import struct
from typing import Sequence

from ..errors import UnsupportedModelError
from .gguf_file import GGUFInfo

# SentencePiece piece types; GGUF's token types use the same numbers.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_BPE = 2


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # protobuf encodes negative int32 as a 10-byte two's complement varint
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _int(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(value)


def _bytes(field: int, value: bytes) -> bytes:
    return _key(field, 2) + _varint(len(value)) + value


def _str(field: int, value: str) -> bytes:
    return _bytes(field, value.encode("utf-8"))


def build_model_proto(pieces: Sequence[str], scores: Sequence[float], types: Sequence[int]) -> bytes:
    """Serialize a SentencePiece BPE ModelProto with ChatGLM3's normalizer and trainer settings."""
    out = bytearray()
    for piece, score, ptype in zip(pieces, scores, types, strict=True):
        body = _str(1, piece) + _key(2, 5) + struct.pack("<f", score) + _int(3, ptype)
        out += _bytes(1, body)
    unk = types.index(UNKNOWN)
    controls = [i for i, t in enumerate(types) if t == CONTROL]
    bos = controls[0] if controls else -1
    eos = controls[1] if len(controls) > 1 else -1
    trainer = (
        _int(3, _BPE) + _int(4, len(pieces)) + _int(24, 0) + _int(35, 1)
        + _int(40, unk) + _int(41, bos) + _int(42, eos) + _int(43, -1)
        + _str(45, pieces[unk]) + (_str(46, pieces[bos]) if bos >= 0 else b"")
        + (_str(47, pieces[eos]) if eos >= 0 else b"") + _str(44, " \u2047 ")
    )
    out += _bytes(2, trainer)
    # identity normalizer, add_dummy_prefix on, remove_extra_whitespaces off, escape whitespace.
    normalizer = _str(1, "identity") + _int(3, 1) + _int(4, 0) + _int(5, 1)
    out += _bytes(3, normalizer)
    return bytes(out)


class SentencePieceTokenizer:
    """Encodes text to ids exactly as ChatGLM3's official tokenizer does."""

    def __init__(self, model_proto: bytes, n_pieces: int) -> None:
        import sentencepiece  # imported here: only loading a model needs it

        self._sp = sentencepiece.SentencePieceProcessor()
        self._sp.LoadFromSerializedProto(model_proto)
        self.n_pieces = n_pieces

    @classmethod
    def from_gguf(cls, info: GGUFInfo) -> "SentencePieceTokenizer":
        tokens = info.get("tokenizer.ggml.tokens")
        scores = info.get("tokenizer.ggml.scores")
        types = info.get("tokenizer.ggml.token_type")
        if tokens is None or scores is None or types is None:
            raise UnsupportedModelError(f"{info.path}: the GGUF carries no SentencePiece vocabulary")
        if not len(tokens) == len(scores) == len(types):  # a damaged or hostile file
            raise UnsupportedModelError(f"{info.path}: the vocabulary's tokens, scores and types differ in length")
        n = sentencepiece_size(types)
        proto = build_model_proto(tokens[:n], list(scores[:n]), list(types[:n]))
        return cls(proto, n)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``. Control tokens are never parsed out of it."""
        return list(self._sp.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode([i for i in ids if i < self.n_pieces])


def sentencepiece_size(types: Sequence[int]) -> int:
    """How many leading tokens belong to the SentencePiece model.

    ChatGLM3's tokenizer appends its control tokens ([MASK] ... <|observation|>) and padding
    after the SentencePiece pieces; the first CONTROL token after the three reserved ids
    (unk, bos, eos) marks the end.
    """
    for i in range(3, len(types)):
        if types[i] == CONTROL:
            return i
    return len(types)
