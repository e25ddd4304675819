"""Resumable, verified downloads into the Hugging Face cache.

- Bytes go to `blobs/<sha256>.incomplete`, which survives a crash, Ctrl-C or a dropped
  connection; the next run (or the next retry within this run) asks for the rest with HTTP Range.
- The file lock is huggingface_hub's own (`.locks/models--o--r/<sha256>.lock`), so two of our
  processes, or ours and `hf download`, never write one blob at once; the one that waits finds
  the finished blob and just links it. `models rm` takes the same lock.
- Size and sha256 (the LFS etag) are checked before the blob is renamed into place; bad data is
  deleted. A half-written model is therefore never at a path anything opens.
- The endpoint may be a hostile mirror: its commit, etag and file path were checked when they
  arrived (http.py, cachepaths.py), and every path below is checked with `cachepaths.inside`
  before it is created, replaced or unlinked. A file whose sha256 the server does not announce
  is checked by size, with a warning, and named by the sha256 we compute.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import time
from http.client import HTTPException
from pathlib import Path
from typing import Optional

from ..errors import (
    DiskFullError,
    DownloadError,
    HubAccessError,
    HubProtocolError,
    IntegrityError,
    NetworkError,
    RangeMismatchError,
    UnsafePathError,
)
from ..paths import hf_cache_dir
from ..progress import DownloadProgress
from . import human_size
from .cachepaths import check_commit, check_repo_path, inside, open_nofollow
from .http import FileMeta, Hub
from .store import lock_path, partial_path, repo_dir

CHUNK = 1 << 20
RETRIES = 3  # consecutive failures without progress before giving up (the partial is kept)
RETRY_DELAY_S = 1.0
DISK_MARGIN = 50 * 1000 * 1000  # keep some space free besides the file itself
_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


class _Digest:
    """What the bytes must hash to: the announced sha256 (LFS), or git's blob sha1 (small files
    kept in git); the sha256 is computed in every case (it names a blob whose hash was not
    announced)."""

    def __init__(self, meta: FileMeta) -> None:
        self.sha256 = hashlib.sha256()
        self.expected = meta.sha256 or meta.git_sha1
        self.kind = "sha256" if meta.sha256 else ("sha1" if meta.git_sha1 else None)
        self.sha1 = hashlib.sha1(f"blob {meta.size}\0".encode()) if self.kind == "sha1" else None

    def update(self, data: bytes) -> None:
        self.sha256.update(data)
        if self.sha1 is not None:
            self.sha1.update(data)

    def checked(self) -> Optional[str]:
        """The digest to compare with `expected` (None when nothing was announced)."""
        if self.kind == "sha256":
            return self.sha256.hexdigest()
        return self.sha1.hexdigest() if self.sha1 is not None else None


class _Paths:
    """Where one file of one repo goes, every path checked to stay inside the cache."""

    def __init__(self, cache: Path, repo_id: str, filename: str, meta: FileMeta) -> None:
        self.cache = cache
        self.repo = inside(repo_dir(repo_id, cache), cache)
        # the name of the blob while it downloads (and of its lock): the announced hash, else a
        # name derived from what identifies the file (stable across runs, so it resumes)
        self.key = meta.sha256 or meta.git_sha1 or hashlib.sha256(
            f"{repo_id}\n{meta.commit}\n{filename}\n{meta.size}\n{meta.etag}".encode()).hexdigest()
        self.snapshots = inside(self.repo / "snapshots", self.repo)
        self.snapdir = inside(self.snapshots / meta.commit, self.snapshots)
        self.snapshot = self.entry(self.snapdir / filename, self.snapdir)
        self.partial = self.entry(partial_path(repo_id, self.key, cache), self.repo)
        self.lock = self.entry(lock_path(repo_id, self.key, cache), cache)

    def entry(self, path: Path, root: Path) -> Path:
        inside(path, self.cache)
        return inside(path, root)

    def blob(self, name: str) -> Path:
        return self.entry(self.repo / "blobs" / name, self.repo)


def _is_file(p: Path) -> bool:
    """A regular file at `p` itself (a symlink there is not one of our blobs)."""
    return p.is_file() and not p.is_symlink()


def _link(blob: Path, snapshot: Path, paths: _Paths) -> None:
    """snapshots/<commit>/<file> -> ../../blobs/<sha256>, relative, as huggingface_hub makes it."""
    paths.entry(snapshot, paths.snapdir)
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    paths.entry(snapshot, paths.snapdir)  # again: the directories now exist
    if snapshot.is_symlink() or snapshot.exists():
        if snapshot.is_dir() and not snapshot.is_symlink():
            raise UnsafePathError(f"cannot link {snapshot}: a directory is in the way")
        if snapshot.resolve() == blob.resolve():
            return
        snapshot.unlink()  # the entry inside the snapshot, never what a link points at
    try:
        os.symlink(os.path.relpath(blob, snapshot.parent), snapshot)
    except OSError:  # no symlinks (some Windows setups): a hard link keeps a single copy too
        try:
            os.link(blob, snapshot)
        except OSError:
            shutil.copyfile(blob, snapshot)


def _write_ref(repo_id: str, commit: str, paths: _Paths) -> None:
    ref = paths.entry(paths.repo / "refs" / "main", paths.repo)
    ref.parent.mkdir(parents=True, exist_ok=True)
    try:
        if _is_file(ref) and ref.read_text().strip() == commit:
            return
    except OSError:
        pass
    if ref.is_symlink():
        ref.unlink()
    fd = open_nofollow(ref, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "w") as f:
        f.write(commit)


def _check_space(directory: Path, need: int, name: str) -> None:
    free = shutil.disk_usage(directory).free
    if need + DISK_MARGIN > free:
        raise DiskFullError(f"not enough disk space for {name}: it needs {human_size(need)} more, "
                            f"{directory} has {human_size(free)} free")


def download(hub: Hub, repo_id: str, filename: str, meta: FileMeta, *,
             progress: Optional[DownloadProgress] = None, cache: Optional[Path] = None) -> Path:
    """Make `repo_id/filename` (as described by `meta`) a complete, verified file in the cache;
    return its snapshot path. Resumes a partial download; waits for another process's."""
    from filelock import FileLock, Timeout  # the lock library huggingface_hub uses too; imported when needed

    cache = cache or hf_cache_dir()
    progress = progress or DownloadProgress()
    name = f"{repo_id}/{filename}"
    # checked again here, whoever built `meta` and `filename` (the library can be called directly)
    check_commit(meta.commit, hub.endpoint)
    check_repo_path(filename, hub.endpoint)
    paths = _Paths(cache, repo_id, filename, meta)
    if meta.sha256 is None and meta.git_sha1 is None:
        progress.note(f"warning: {hub.endpoint} announced no sha256 for {name}: "
                      "it is checked by its size only")
    paths.lock.parent.mkdir(parents=True, exist_ok=True)
    if paths.lock.is_symlink():
        raise UnsafePathError(f"refusing to use the lock file {paths.lock}: it is a symlink")
    lock = FileLock(str(paths.lock), mode=0o664)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        progress.note(f"waiting for another process downloading {name}")
        lock.acquire()
    try:  # the pointer and the ref are written under the lock too, as huggingface_hub does
        blob = _done_blob(paths, meta)  # the one we waited for, or an earlier run, did it
        if blob is None:
            blob = _fetch(hub, meta, paths, name, progress)
        _link(blob, paths.snapshot, paths)
        _write_ref(repo_id, meta.commit, paths)
    finally:
        lock.release()
    return paths.snapshot


def _done_blob(paths: _Paths, meta: FileMeta) -> Optional[Path]:
    """The finished blob of this file when it is already in the cache."""
    known = meta.sha256 or meta.git_sha1
    if known is not None:
        blob = paths.blob(known)
        return blob if _is_file(blob) and blob.stat().st_size == meta.size else None
    # no announced hash: the blob is named by the sha256 we computed; the snapshot link finds it
    snap = paths.snapshot
    if snap.is_symlink():
        target = Path(os.path.realpath(snap))
        blobs = os.path.realpath(paths.repo / "blobs")
        if str(target.parent) == blobs and _is_file(target) and target.stat().st_size == meta.size:
            return paths.blob(target.name)
    return None


class _State:
    """Bytes in the partial file and their running hash, updated as each chunk is written, so
    that an error in the middle of a GET loses nothing that reached the disk."""

    def __init__(self, meta: FileMeta, done: int = 0) -> None:
        self.done = done
        self.digest = _Digest(meta)


def _fetch(hub: Hub, meta: FileMeta, paths: _Paths, name: str, progress: DownloadProgress) -> Path:
    partial = paths.partial
    partial.parent.mkdir(parents=True, exist_ok=True)
    inside(partial, paths.repo)
    if partial.is_symlink() or (partial.exists() and not partial.is_file()):
        partial.unlink()  # not something we wrote: start afresh (the link itself goes, not its target)
    st = _State(meta, partial.stat().st_size if partial.exists() else 0)
    if st.done > meta.size:
        partial.unlink()
        st.done = 0
    _check_space(partial.parent, meta.size - st.done, name)
    if st.done:
        with os.fdopen(open_nofollow(partial, os.O_RDONLY), "rb") as f:  # the hash covers what is there
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
                if isinstance(e, (IntegrityError, HubAccessError, HubProtocolError, RangeMismatchError,
                                  UnsafePathError)):
                    raise
                if isinstance(e, OSError) and e.errno in _DISK_FULL:
                    kept = "; the partial file is kept" if st.done else ""
                    raise DiskFullError(f"disk full while downloading {name}: {human_size(st.done)} of "
                                        f"{human_size(meta.size)} written to {partial.parent}{kept}",
                                        hint="free some space, then run the same command again to "
                                             "resume (or point HF_HUB_CACHE at a bigger disk)") from e
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
    blob = paths.blob(meta.sha256 or meta.git_sha1 or st.digest.sha256.hexdigest())
    if blob.is_dir() and not blob.is_symlink():
        raise UnsafePathError(f"cannot store {name}: a directory is in the way at {blob}")
    os.replace(partial, blob)  # replaces a link at `blob` itself, never a file it points at
    return blob


def _reason(e: BaseException) -> str:
    return getattr(e, "message", None) or str(e) or type(e).__name__


def _get_rest(hub: Hub, meta: FileMeta, partial: Path, st: _State, name: str,
              progress: DownloadProgress) -> None:
    """One GET from `st.done` to the end, appended to the partial file."""
    with hub.open_range(meta.url, st.done) as resp:
        status = resp.getcode()
        if st.done and status == 200:  # the server ignored Range: take the whole file from the start
            st.done, st.digest = 0, _Digest(meta)
            progress.note("the server does not support resuming; starting over")
            progress.start(name, meta.size, 0)
        elif st.done and status == 206:
            _check_content_range(resp.headers.get("Content-Range"), st.done, meta.size, name)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if st.done else os.O_TRUNC)
        with os.fdopen(open_nofollow(partial, flags), "wb") as f:
            while True:
                chunk = resp.read1(CHUNK)  # what has arrived: a Ctrl-C keeps all of it
                if not chunk:
                    break
                if st.done + len(chunk) > meta.size:
                    raise IntegrityError(f"the download of {name} is corrupt (more than the announced "
                                         f"{meta.size:,} bytes); the bad data was deleted")
                f.write(chunk)
                f.flush()  # a full disk shows here, with the chunk not yet counted
                st.digest.update(chunk)
                st.done += len(chunk)
                progress.advance(len(chunk))
            os.fsync(f.fileno())


def _check_content_range(value: Optional[str], done: int, size: int, name: str) -> None:
    """A 206 must carry exactly the bytes asked for: from `done` to the end of a `size`-byte file."""
    m = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", (value or "").strip())
    if m is None:
        raise RangeMismatchError(f"resuming {name}: the server answered a range request without a "
                                 f"valid Content-Range ({str(value)[:60]!r})")
    start, total = int(m.group(1)), m.group(3)
    if start != done or (total != "*" and int(total) != size):
        raise RangeMismatchError(f"resuming {name}: asked for bytes {done:,}- of {size:,}, the server "
                                 f"sent {m.group(1)}-{m.group(2)}/{total} (a wrong Content-Range)")


def _verify(partial: Path, meta: FileMeta, digest: _Digest, name: str) -> None:
    size = partial.stat().st_size
    got = digest.checked()
    if size != meta.size or (got is not None and got != digest.expected):
        partial.unlink(missing_ok=True)
        what = (f"{size:,} bytes instead of {meta.size:,}" if size != meta.size
                else f"{digest.kind} {(got or '')[:16]}… instead of {str(digest.expected)[:16]}…")
        raise IntegrityError(f"the download of {name} is corrupt ({what}); the bad data was deleted")
