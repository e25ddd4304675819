"""Resumable, verified downloads into the Hugging Face cache.

- Bytes go to `blobs/<sha256>.incomplete`, which survives a crash, Ctrl-C or a dropped
  connection; the next run (or the next retry within this run) asks for the rest with HTTP Range.
- The file lock is huggingface_hub's own (`.locks/models--o--r/<sha256>.lock`), so two of our
  processes, or ours and `hf download`, never write one blob at once; the one that waits finds
  the finished blob and just links it.
- Size and sha256 (the LFS etag) are checked before the blob is renamed into place; bad data is
  deleted. A half-written model is therefore never at a path anything opens.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import time
from http.client import HTTPException
from pathlib import Path
from typing import Optional, Protocol

from ..errors import DiskFullError, DownloadError, HubAccessError, IntegrityError, NetworkError
from ..paths import hf_cache_dir
from . import human_size
from .http import FileMeta, Hub
from .store import blob_path, lock_path, partial_path, repo_dir

CHUNK = 1 << 20
RETRIES = 3  # consecutive failures without progress before giving up (the partial is kept)
RETRY_DELAY_S = 1.0
DISK_MARGIN = 50 * 1000 * 1000  # keep some space free besides the file itself


class Progress(Protocol):
    """How a download reports itself; the CLI renders it (rich bar on a terminal, lines otherwise)."""

    def start(self, name: str, total: int, done: int) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    def end(self, ok: bool) -> None: ...
    def note(self, text: str) -> None: ...


class NullProgress:
    def start(self, name: str, total: int, done: int) -> None: pass
    def advance(self, nbytes: int) -> None: pass
    def end(self, ok: bool) -> None: pass
    def note(self, text: str) -> None: pass


class _Digest:
    """sha256 for LFS files; git's blob sha1 for small files kept in git; size only otherwise."""

    def __init__(self, etag: str, size: int) -> None:
        self.kind: Optional[str] = None
        self.h = None
        if re.fullmatch(r"[0-9a-f]{64}", etag):
            self.kind, self.h = "sha256", hashlib.sha256()
        elif re.fullmatch(r"[0-9a-f]{40}", etag):
            self.kind, self.h = "sha1", hashlib.sha1(f"blob {size}\0".encode())

    def update(self, data: bytes) -> None:
        if self.h is not None:
            self.h.update(data)

    def hexdigest(self) -> Optional[str]:
        return self.h.hexdigest() if self.h is not None else None


def _link(blob: Path, snapshot: Path) -> None:
    """snapshots/<commit>/<file> -> ../../blobs/<sha256>, relative, as huggingface_hub makes it."""
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    if snapshot.is_symlink() or snapshot.exists():
        if snapshot.resolve() == blob.resolve():
            return
        snapshot.unlink()
    try:
        os.symlink(os.path.relpath(blob, snapshot.parent), snapshot)
    except OSError:  # no symlinks (some Windows setups): a hard link keeps a single copy too
        try:
            os.link(blob, snapshot)
        except OSError:
            shutil.copyfile(blob, snapshot)


def _write_ref(repo_id: str, commit: str, cache: Path) -> None:
    ref = repo_dir(repo_id, cache) / "refs" / "main"
    ref.parent.mkdir(parents=True, exist_ok=True)
    try:
        if ref.read_text().strip() == commit:
            return
    except OSError:
        pass
    ref.write_text(commit)


def _check_space(directory: Path, need: int, name: str) -> None:
    free = shutil.disk_usage(directory).free
    if need + DISK_MARGIN > free:
        raise DiskFullError(f"not enough disk space for {name}: it needs {human_size(need)} more, "
                            f"{directory} has {human_size(free)} free")


def download(hub: Hub, repo_id: str, filename: str, meta: FileMeta, *,
             progress: Optional[Progress] = None, cache: Optional[Path] = None) -> Path:
    """Make `repo_id/filename` (as described by `meta`) a complete, verified file in the cache;
    return its snapshot path. Resumes a partial download; waits for another process's."""
    from filelock import FileLock, Timeout  # huggingface_hub's dependency, imported when needed

    cache = cache or hf_cache_dir()
    progress = progress or NullProgress()
    name = f"{repo_id}/{filename}"
    blob = blob_path(repo_id, meta.etag, cache)
    snapshot = repo_dir(repo_id, cache) / "snapshots" / meta.commit / filename
    lock_file = lock_path(repo_id, meta.etag, cache)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_file), mode=0o664)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        progress.note(f"waiting for another process downloading {name}")
        lock.acquire()
    try:  # the pointer and the ref are written under the lock too, as huggingface_hub does
        if not (blob.exists() and blob.stat().st_size == meta.size):  # or the one we waited for did it
            _fetch(hub, meta, partial_path(repo_id, meta.etag, cache), blob, name, progress)
        _link(blob, snapshot)
        _write_ref(repo_id, meta.commit, cache)
    finally:
        lock.release()
    return snapshot


class _State:
    """Bytes in the partial file and their running hash, updated as each chunk is written, so
    that an error in the middle of a GET loses nothing that reached the disk."""

    def __init__(self, meta: FileMeta, done: int = 0) -> None:
        self.done = done
        self.digest = _Digest(meta.etag, meta.size)


def _fetch(hub: Hub, meta: FileMeta, partial: Path, blob: Path, name: str, progress: Progress) -> None:
    partial.parent.mkdir(parents=True, exist_ok=True)
    st = _State(meta, partial.stat().st_size if partial.exists() else 0)
    if st.done > meta.size:
        partial.unlink()
        st.done = 0
    _check_space(partial.parent, meta.size - st.done, name)
    if st.done:
        with open(partial, "rb") as f:  # the hash must cover the bytes already there
            while chunk := f.read(CHUNK):
                st.digest.update(chunk)
    progress.start(name, meta.size, st.done)
    failures = 0
    try:
        while st.done < meta.size:
            before = st.done
            try:
                _get_rest(hub, meta, partial, st, name, progress)
                if st.done < meta.size:
                    raise DownloadError(f"the server closed the connection at {st.done:,} bytes")
            except (OSError, HTTPException, NetworkError, DownloadError) as e:
                if isinstance(e, (IntegrityError, HubAccessError)):
                    raise
                failures = 0 if st.done > before else failures + 1  # a flaky line may still finish
                if failures > RETRIES:
                    kept = "; the partial file is kept" if st.done else ""
                    raise DownloadError(f"download of {name} broke off at {human_size(st.done)} of "
                                        f"{human_size(meta.size)} ({_reason(e)}){kept}") from e
                progress.note(f"connection lost at {human_size(st.done)} ({_reason(e)}); retrying")
                time.sleep(RETRY_DELAY_S * max(failures, 1))
    except KeyboardInterrupt:
        progress.end(False)
        progress.note(f"download interrupted at {human_size(st.done)} of {human_size(meta.size)}; "
                      "the partial file is kept: run the same command again to resume")
        raise
    except IntegrityError:
        progress.end(False)
        partial.unlink(missing_ok=True)
        raise
    except BaseException:
        progress.end(False)
        raise
    progress.end(True)
    _verify(partial, meta, st.digest, name)
    os.replace(partial, blob)


def _reason(e: BaseException) -> str:
    return getattr(e, "message", None) or str(e) or type(e).__name__


def _get_rest(hub: Hub, meta: FileMeta, partial: Path, st: _State, name: str,
              progress: Progress) -> None:
    """One GET from `st.done` to the end, appended to the partial file."""
    with hub.open_range(meta.url, st.done) as resp:
        status = resp.getcode()
        if st.done and status == 200:  # the server ignored Range: take the whole file from the start
            st.done, st.digest = 0, _Digest(meta.etag, meta.size)
            progress.note("the server does not support resuming; starting over")
            progress.start(name, meta.size, 0)
        elif st.done and status == 206:
            start = _content_range_start(resp.headers.get("Content-Range"))
            if start != st.done:
                raise DownloadError(f"asked for bytes from {st.done:,}, got a range from {start}")
        with open(partial, "ab" if st.done else "wb") as f:
            while True:
                chunk = resp.read1(CHUNK)  # what has arrived: a Ctrl-C keeps all of it
                if not chunk:
                    break
                if st.done + len(chunk) > meta.size:
                    raise IntegrityError(f"the download of {name} is corrupt (more than the announced "
                                         f"{meta.size:,} bytes); the bad data was deleted")
                f.write(chunk)
                st.digest.update(chunk)
                st.done += len(chunk)
                progress.advance(len(chunk))
            f.flush()
            os.fsync(f.fileno())


def _content_range_start(value: Optional[str]) -> Optional[int]:
    m = re.match(r"bytes (\d+)-", value or "")
    return int(m.group(1)) if m else None


def _verify(partial: Path, meta: FileMeta, digest: _Digest, name: str) -> None:
    size = partial.stat().st_size
    got = digest.hexdigest()
    if size != meta.size or (got is not None and got != meta.etag):
        partial.unlink(missing_ok=True)
        what = (f"{size:,} bytes instead of {meta.size:,}" if size != meta.size
                else f"{digest.kind} {(got or '')[:16]}… instead of {meta.etag[:16]}…")
        raise IntegrityError(f"the download of {name} is corrupt ({what}); the bad data was deleted")
