"""The GGUF header reader: real files parse; damaged ones give typed one-line errors."""
from __future__ import annotations

import pytest

from chatglm3_cli.engine.gguf_file import read_gguf
from chatglm3_cli.errors import ModelFormatError, ModelNotFoundError


def test_reads_chatglm3_metadata(fixtures):
    info = read_gguf(fixtures.path("tiny"))
    assert info.architecture == "chatglm"
    assert info.context_length == 2048
    tokens = info.get("tokenizer.ggml.tokens")
    assert len(tokens) == 65024
    assert tokens[64790] == "[gMASK]" and tokens[64795] == "<|user|>"
    assert info.get("tokenizer.ggml.model") == "llama"
    assert {t.name for t in info.tensors} >= {"token_embd.weight", "blk.0.attn_qkv.weight"}


def test_missing_file(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not found"):
        read_gguf(tmp_path / "nope.gguf")


def test_directory(tmp_path):
    with pytest.raises(ModelNotFoundError, match="directory"):
        read_gguf(tmp_path)


def test_not_gguf(tmp_path):
    p = tmp_path / "notes.gguf"
    p.write_text("just some text, long enough to have a header\n" * 3)
    with pytest.raises(ModelFormatError, match="not a GGUF"):
        read_gguf(p)


def test_old_ggml_file_named(tmp_path):
    p = tmp_path / "chatglm-ggml.bin"
    p.write_bytes(b"ggjt" + b"\x00" * 100)
    with pytest.raises(ModelFormatError, match="old GGML"):
        read_gguf(p)


@pytest.mark.parametrize("keep", [100, 5000, 0.5])
def test_truncated(fixtures, tmp_path, keep):
    data = fixtures.path("tiny").read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep
    p = tmp_path / "cut.gguf"
    p.write_bytes(data[:n])
    with pytest.raises(ModelFormatError, match="truncated"):
        read_gguf(p)
