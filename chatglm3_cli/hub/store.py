"""What is on disk, in the Hugging Face cache layout shared with huggingface_hub:

    <HF_HUB_CACHE>/models--owner--repo/blobs/<sha256>              the bytes, once
                                      /blobs/<sha256>.incomplete   our partial download (resumable)
                                      /snapshots/<commit>/<file>   symlink to ../../blobs/<sha256>
                                      /refs/main                   the commit `main` pointed at
    <HF_HUB_CACHE>/.locks/models--owner--repo/<sha256>.lock        the same lock huggingface_hub takes

Because the layout and the lock are huggingface_hub's own, a file fetched by `hf download` is used
where it is, and a file we fetched is seen by huggingface_hub: one copy.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from ..errors import DownloadInProgressError, ModelNotOnHubError, UnsafePathError
from ..paths import hf_cache_dir, state_dir
from .cachepaths import inside
from .registry import ModelSpec, gguf_files, pick_file, quant_of

PARTIAL_SUFFIX = ".incomplete"


def repo_dir(repo_id: str, cache: Optional[Path] = None) -> Path:
    return (cache or hf_cache_dir()) / ("models--" + repo_id.replace("/", "--"))


def lock_path(repo_id: str, etag: str, cache: Optional[Path] = None) -> Path:
    base = cache or hf_cache_dir()
    return base / ".locks" / repo_dir(repo_id, base).name / f"{etag}.lock"


def partial_path(repo_id: str, etag: str, cache: Optional[Path] = None) -> Path:
    return repo_dir(repo_id, cache) / "blobs" / f"{etag}{PARTIAL_SUFFIX}"


@dataclass(frozen=True)
class CachedFile:
    repo_id: str
    filename: str  # path inside the repo
    path: Path  # the snapshot entry (what llama.cpp opens)
    commit: str
    size: int

    @property
    def quant(self) -> Optional[str]:
        return quant_of(self.filename)

    @property
    def blob(self) -> Path:
        return self.path.resolve()

    @property
    def name(self) -> str:
        return f"{self.repo_id}/{self.filename}"


def _main_commit(rdir: Path) -> Optional[str]:
    try:
        return (rdir / "refs" / "main").read_text().strip() or None
    except OSError:
        return None


def _repo_id(rdir: Path) -> Optional[str]:
    parts = rdir.name.split("--")
    if parts[0] != "models" or len(parts) < 3:
        return None
    return parts[1] + "/" + "--".join(parts[2:])


def repo_files(repo_id: str, cache: Optional[Path] = None) -> list[CachedFile]:
    """Complete files of one repo; a file in several snapshots once (refs/main first, then newest)."""
    rdir = repo_dir(repo_id, cache)
    snaps = rdir / "snapshots"
    if not snaps.is_dir():
        return []
    main = _main_commit(rdir)
    commits = sorted(snaps.iterdir(), key=lambda p: (p.name != main, -p.stat().st_mtime))
    seen: dict[str, CachedFile] = {}
    for snap in commits:
        for root, _dirs, names in os.walk(snap):
            for n in names:
                p = Path(root) / n
                rel = p.relative_to(snap).as_posix()
                if rel in seen or not p.exists():  # a dangling link: its blob was removed
                    continue
                seen[rel] = CachedFile(repo_id, rel, p, snap.name, p.stat().st_size)
    return list(seen.values())


def find_cached(spec: ModelSpec, cache: Optional[Path] = None) -> Optional[CachedFile]:
    """The file `spec` names, if it is on disk (matched exactly as against a Hub listing)."""
    assert spec.repo_id is not None
    files = {f.filename: f for f in repo_files(spec.repo_id, cache)}
    try:
        return files[pick_file(spec, files, where="on disk")]
    except ModelNotOnHubError:  # nothing matches on disk: the caller decides whether to go online
        return None


def all_models(cache: Optional[Path] = None) -> list[CachedFile]:
    base = cache or hf_cache_dir()
    if not base.is_dir():
        return []
    out: list[CachedFile] = []
    for rdir in sorted(base.glob("models--*")):
        repo = _repo_id(rdir)
        if repo:
            out.extend(f for f in repo_files(repo, base) if f.filename in gguf_files([f.filename]))
    return out


def partials(repo_id: Optional[str] = None, cache: Optional[Path] = None) -> list[Path]:
    """Partial downloads (ours and huggingface_hub's temp files) of one repo, or of all."""
    base = cache or hf_cache_dir()
    pattern = repo_dir(repo_id, base).name if repo_id else "models--*"
    return sorted(base.glob(f"{pattern}/blobs/*{PARTIAL_SUFFIX}"))


def _links_to(blob: Path, rdir: Path) -> Iterator[Path]:
    for root, _dirs, names in os.walk(rdir / "snapshots"):
        for n in names:
            p = Path(root) / n
            if p.exists() and p.resolve() == blob:
                yield p


def remove(files: list[CachedFile], *, partials_of: Optional[str] = None,
           cache: Optional[Path] = None) -> list[Path]:
    """Delete files (snapshot entries, then blobs nothing points at any more) and the partial
    downloads of repo `partials_of`. An emptied repo folder goes too. Returns what was deleted.
    Every path is checked to lie inside the cache first (a link is removed, never its target).
    The caller holds the download locks (`download_locks`)."""
    base = cache or hf_cache_dir()
    removed: list[Path] = []
    repos = {f.repo_id for f in files} | ({partials_of} if partials_of else set())
    for f in files:
        blob = f.blob
        rdir = inside(repo_dir(f.repo_id, base), base)
        for link in list(_links_to(blob, rdir)) or [f.path]:
            inside(link, rdir).unlink(missing_ok=True)
            removed.append(link)
        if blob.exists() and blob.is_relative_to(rdir.resolve()) and not any(_links_to(blob, rdir)):
            inside(blob, rdir).unlink()
            removed.append(blob)
    for repo in repos:
        rdir = inside(repo_dir(repo, base), base)
        if repo == partials_of:
            for p in partials(repo, base):
                inside(p, rdir).unlink(missing_ok=True)
                removed.append(p)
        if rdir.is_symlink():
            continue
        if not any(p.is_file() for p in (rdir / "blobs").glob("*")) and not repo_files(repo, base):
            shutil.rmtree(rdir, ignore_errors=True)
            locks = inside(lock_path(repo, "x", base).parent, base)
            if not locks.is_symlink():
                shutil.rmtree(locks, ignore_errors=True)
    return removed


@contextmanager
def download_locks(blobs: Iterable[tuple[str, str]], cache: Optional[Path] = None) -> Iterator[None]:
    """Hold the download lock of each (repo_id, blob name) while the body runs (what `models rm`
    deletes), so a running download never loses its partial file under it. Raises
    DownloadInProgressError when one is held by a download."""
    from filelock import FileLock, Timeout

    base = cache or hf_cache_dir()
    held: list[Any] = []
    try:
        for repo_id, name in sorted(set(blobs)):
            path = inside(lock_path(repo_id, name, base), base)
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink():
                raise UnsafePathError(f"refusing to use the lock file {path}: it is a symlink")
            lock = FileLock(str(path), mode=0o664)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                raise DownloadInProgressError(
                    f"{repo_id} is being downloaded by another process right now; nothing was removed") from None
            held.append(lock)
        yield
    finally:
        for lock in reversed(held):
            lock.release()


# when each model was last used (a small JSON file; a lost update only loses a timestamp) ------

def _state_file() -> Path:
    return state_dir() / "last-used.json"


def _load_state() -> dict[str, float]:
    try:
        data = json.loads(_state_file().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def mark_used(path: Path) -> None:
    data = _load_state()
    data[str(path)] = time.time()
    target = _state_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=0), encoding="utf-8")
        os.replace(tmp, target)
    except OSError:
        pass  # bookkeeping only: never fail a run over it


def last_used(path: Path) -> Optional[float]:
    value = _load_state().get(str(path))
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def used_files() -> list[Path]:
    """GGUF files used with -m (recorded by mark_used) that are still there, newest first."""
    state = _load_state()
    paths = sorted((p for p, t in state.items() if isinstance(p, str) and isinstance(t, (int, float))),
                   key=lambda p: -state[p])
    return [Path(p) for p in paths if p.lower().endswith(".gguf") and os.path.isfile(p)]
