"""Shared file helpers: safe reads, atomic writes, the cached sha256 of model files."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from chatglm3_cli import files as F
from chatglm3_cli.errors import InputError, OutputWriteError


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


# writing to a path a user named never destroys what is there (issue 11.2) --------------------

def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_new_file_gets_the_umask_mode_and_an_existing_one_keeps_its_own(tmp_path):
    new = tmp_path / "new.txt"
    F.atomic_write_text(new, "x")
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~_umask()  # not mkstemp's 0600
    old = tmp_path / "old.txt"
    old.write_text("old")
    os.chmod(old, 0o640)
    F.atomic_write_text(old, "new")
    assert old.read_text() == "new" and stat.S_IMODE(old.stat().st_mode) == 0o640


def test_a_symlink_is_written_through_and_stays_a_link(tmp_path):
    real = tmp_path / "notes" / "real.md"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "link.md"
    link.symlink_to(real)
    assert F.atomic_write_text(link, "new") == real
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "new"
    assert sorted(p.name for p in real.parent.iterdir()) == ["real.md"]  # no temp left behind


def test_a_directory_a_device_and_a_fifo_are_refused_and_left_as_they_are(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target, why in [(tmp_path, "is a directory"), (Path("/dev/null"), "not a regular file"),
                        (fifo, "not a regular file")]:
        before = os.stat(target)
        with pytest.raises(OutputWriteError, match=why):
            F.atomic_write_text(target, "x")
        after = os.stat(target)
        assert (after.st_ino, after.st_mode, after.st_rdev) == (before.st_ino, before.st_mode, before.st_rdev)
    link = tmp_path / "to-null"
    link.symlink_to("/dev/null")
    with pytest.raises(OutputWriteError, match="not a regular file"):
        F.atomic_write_text(link, "x")
    assert link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "to-null"]


def test_stdout_names():
    assert all(F.is_stdout_name(n) for n in ("-", "/dev/stdout"))
    assert not F.is_stdout_name("out.json") and not F.is_stdout_name(None)


# special and huge inputs (issue 11.3) ---------------------------------------------------------

def test_devices_are_refused_and_pipes_read(tmp_path):
    with pytest.raises(InputError, match="not a regular file or a pipe"):
        F.read_bytes("/dev/zero")
    r, w = os.pipe()
    os.write(w, b"piped")
    os.close(w)
    try:
        assert F.read_bytes(f"/proc/self/fd/{r}") == b"piped"
    finally:
        os.close(r)


def test_reads_are_capped(tmp_path):
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * 1001)
    assert F.read_bytes(big, limit=1001) == b"x" * 1001
    with pytest.raises(InputError, match="big.txt is larger than 1,000 bytes"):
        F.read_bytes(big, limit=1000)
