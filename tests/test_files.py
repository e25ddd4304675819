"""Shared file helpers: safe reads, atomic writes, the cached sha256 of model files."""
from __future__ import annotations

import pytest

from chatglm3_cli import files as F
from chatglm3_cli.errors import InputError


def test_sha256_is_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"abc")
    digest = F.file_sha256(model)
    assert digest == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    calls = []
    real = F.hashlib.sha256
    monkeypatch.setattr(F.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    assert F.file_sha256(model) == digest and calls == []  # from the cache
    model.write_bytes(b"abcd")
    assert F.file_sha256(model) != digest and calls == [1]  # size changed: computed again


def test_read_bytes_errors(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        F.read_bytes(tmp_path / "none")
    with pytest.raises(InputError, match="is a directory"):
        F.read_bytes(tmp_path, "the dir")


def test_atomic_write_leaves_no_temp_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")

    def chunks():
        yield b"new"
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        F.atomic_write_bytes(target, chunks())
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
