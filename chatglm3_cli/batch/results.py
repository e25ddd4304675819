"""The results file of a batch job and its manifest: never lose work, never do it twice.

- One JSON line per record, appended and flushed as each record finishes; a line is written
  with a single write() of the whole line, so a crash leaves at most a half-written last line.
- Opening an existing results file reads which ids are answered (and which failed), truncates
  a half-written last line, and rewrites the file through a temp file + os.replace when lines
  must go (ids to retry, duplicates, reports of records without an id).
- The manifest (``RESULTS.jsonl.manifest.json``) records the model (its sha256), the
  parameters, the tool version, the input (its path and sha256) and each record's content
  hash. It is written before the first result line. A resume refuses another job's results
  file and redoes a record whose content changed since it was answered.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..errors import ManifestMismatchError, OutputWriteError, ResultsInUseError
from ..files import atomic_write_bytes


def line_key(obj: dict[str, Any]) -> str | None:
    """The id a result line answers (custom_id for OpenAI lines); None for a report of a record
    that has no usable id."""
    v = obj["custom_id"] if "custom_id" in obj else obj.get("id")
    if v is None or isinstance(v, bool) or not isinstance(v, (str, int)):
        return None
    return str(v)


def line_failed(obj: dict[str, Any]) -> bool:
    return obj.get("error") is not None


def line_cut_off(obj: dict[str, Any]) -> bool:
    """An answer that stopped at max_tokens (task lines and OpenAI lines)."""
    if obj.get("finish_reason") == "length":
        return True
    body = (obj.get("response") or {}).get("body") if isinstance(obj.get("response"), dict) else None
    choices = body.get("choices") if isinstance(body, dict) else None
    return bool(isinstance(choices, list) and choices and isinstance(choices[0], dict)
                and choices[0].get("finish_reason") == "length")


def dumps_line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8")


@dataclass
class ScanReport:
    answered: dict[str, bool] = field(default_factory=dict)  # id -> succeeded
    cut_off: set[str] = field(default_factory=set)  # ids answered, but cut off at max_tokens
    truncated_bytes: int = 0  # a half-written last line that was cut off
    dropped_corrupt: int = 0  # unreadable lines in the middle (never written by us)
    dropped_duplicates: int = 0
    dropped_retry: int = 0  # failed lines removed to be run again
    dropped_keyless: int = 0  # reports of id-less records (re-reported by this run)
    dropped_stale: int = 0  # answers to records that changed since (or that no manifest vouches for)


class ResultsFile:
    """An append-only JSONL results file on disk, held by one process at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._lock: Any = None
        self._inode_lock: Any = None

    def lock(self) -> None:
        """Two runs of one job at once would answer the same ids twice: the second is refused.
        The lock is keyed on the real file, so a symlink's name (or a ../ path) to the same
        results cannot bypass it, and, once the file exists, on its device and inode too, so
        neither can a hard link (another name, maybe in another folder, for the same file). The
        lock files are removed again by close()."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            real = self.path.resolve()
            lock = ExclusiveLock(real.with_name(f".{real.name}.lock"))
            taken = lock.acquire()
        except OSError as e:  # a read-only or missing directory, ...
            raise _write_error(self.path, e) from None
        if not taken:
            raise ResultsInUseError(f"another chatglm3 batch is writing {self.path}")
        self._lock = lock
        try:
            st = os.stat(real)
        except OSError:
            return  # no file yet: no other name can lead to it
        from ..paths import state_dir

        try:
            folder = state_dir() / "locks"
            folder.mkdir(parents=True, exist_ok=True)
            by_inode = ExclusiveLock(folder / f"results-{st.st_dev:x}-{st.st_ino:x}.lock")
            taken = by_inode.acquire()
        except OSError as e:
            self.close()
            raise _write_error(folder, e) from None
        if not taken:
            self.close()
            raise ResultsInUseError(f"another chatglm3 batch is writing {self.path} (under another name: "
                                    "a hard link to the same file)")
        self._inode_lock = by_inode

    def prepare(self, *, retry_errors: bool, stale: Callable[[str], bool] | None = None) -> ScanReport:
        """Read what is answered and repair the file so that it holds each id at most once,
        only complete lines, (with retry_errors) no failed ones, and no answer for which
        ``stale(id)`` is true (a record that changed since it was answered)."""
        report = ScanReport()
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return report
        if not data:
            return report
        keep: list[tuple[str | None, bool, bytes]] = []
        index: dict[str, int] = {}
        rewrite = False
        parts = data.split(b"\n")
        tail = parts.pop()  # b"" when the file ends with a newline
        for raw in parts:
            if not raw.strip():
                rewrite = True
                continue
            obj = _loads(raw)
            if obj is None:
                report.dropped_corrupt += 1
                rewrite = True
                continue
            key, failed = line_key(obj), line_failed(obj)
            if key is None:
                report.dropped_keyless += 1
                rewrite = True
                continue
            if key in index:  # keep one line per id: a success over a failure, else the first
                report.dropped_duplicates += 1
                rewrite = True
                i = index[key]
                if keep[i][1] and not failed:
                    keep[i] = (key, failed, raw + b"\n")
                continue
            index[key] = len(keep)
            keep.append((key, failed, raw + b"\n"))
        if tail.strip():
            obj = _loads(tail)
            if obj is not None and line_key(obj) is not None and line_key(obj) not in index:
                # complete JSON, only its newline missing: keep it
                index[line_key(obj)] = len(keep)  # type: ignore[index]
                keep.append((line_key(obj), line_failed(obj), tail + b"\n"))
                rewrite = True
            else:
                report.truncated_bytes = len(tail)
        if stale is not None:
            before = len(keep)
            keep = [k for k in keep if k[0] is None or not stale(k[0])]
            report.dropped_stale = before - len(keep)
            rewrite = rewrite or report.dropped_stale > 0
        if retry_errors:
            before = len(keep)
            keep = [k for k in keep if not k[1]]
            report.dropped_retry = before - len(keep)
            rewrite = rewrite or report.dropped_retry > 0
        report.answered = {k: not failed for k, failed, _ in keep if k is not None}
        for k, failed, raw in keep:
            if k is not None and not failed:
                obj = _loads(raw)
                if obj is not None and line_cut_off(obj):
                    report.cut_off.add(k)
        try:
            if rewrite:
                atomic_write_bytes(self.path, (raw for _, _, raw in keep))
            elif report.truncated_bytes:
                os.truncate(self.path, len(data) - len(tail))
        except OSError as e:
            raise _write_error(self.path, e) from None
        return report

    def answered_ids(self) -> set[str]:
        """The ids the file holds an answer (or an error line) for, without repairing it."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return set()
        out: set[str] = set()
        for raw in data.split(b"\n"):
            obj = _loads(raw) if raw.strip() else None
            key = line_key(obj) if obj is not None else None
            if key is not None:
                out.add(key)
        return out

    def append(self, obj: dict[str, Any]) -> None:
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            data = dumps_line(obj)
            while data:  # one write() for the whole line (a regular file takes it at once)
                n = os.write(self._fd, data)
                data = data[n:]
        except OSError as e:  # disk full, ...: the lines written so far stay
            raise _write_error(self.path, e) from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for lock in (self._inode_lock, self._lock):
            if lock is not None:
                lock.release()
        self._lock = self._inode_lock = None


class ExclusiveLock:
    """A non-blocking lock file that is deleted when released.

    Deleting a lock file races with a process that opened it just before: that process could
    then lock the deleted file while a third creates and locks a new one. So the holder deletes
    the file while it still holds the lock, and a taker checks after locking that the path still
    names the file it locked, else it tries again. (Elsewhere than POSIX: filelock's lock, whose
    file stays.)"""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._fallback: Any = None

    def acquire(self) -> bool:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            from filelock import FileLock, Timeout

            lock = FileLock(str(self.path))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                return False
            self._fallback = lock
            return True
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return False
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
                return True
            os.close(fd)  # the holder deleted it meanwhile: lock the new file instead
        return False

    def release(self) -> None:
        if self._fallback is not None:
            self._fallback.release()
            self._fallback = None
        if self._fd is not None:
            try:
                os.unlink(self.path)  # while still holding it, see the class comment
            except OSError:
                pass
            os.close(self._fd)
            self._fd = None


def _write_error(path: Path, e: OSError) -> OutputWriteError:
    return OutputWriteError(f"cannot write {path}: {e.strerror or e}",
                            hint="check the directory's permissions, or write elsewhere with -o FILE")


def _loads(raw: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # not ours: too deep, huge ints...
        return None
    return obj if isinstance(obj, dict) else None


# the manifest -------------------------------------------------------------------------------

def manifest_path(results: Path) -> Path:
    return results.with_name(results.name + ".manifest.json")




def input_path(source: str) -> str:
    """How a manifest names its input: the absolute path of a file, or "stdin"."""
    return source if source == "stdin" else str(Path(source).resolve())


@dataclass
class Manifest:
    model_sha256: str
    model_path: str
    model_size: int
    params: dict[str, Any]
    input: str  # as given; the manifest stores input_path(input)
    version: str = __version__
    created: float = field(default_factory=time.time)
    previous: list[dict[str, Any]] = field(default_factory=list)
    input_sha256: str | None = None
    # id -> content hash of the record each answer belongs to (records of earlier inputs
    # that still have an answer in the results stay listed)
    records: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool": "chatglm3 batch", "version": self.version,
            "created": self.created, "updated": time.time(),
            "input": {"path": input_path(self.input), "sha256": self.input_sha256},
            "model": {"path": self.model_path, "size": self.model_size, "sha256": self.model_sha256},
            "params": self.params, "previous": self.previous, "records": self.records,
        }

    def write(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, [(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n").encode()])
        except OSError as e:
            raise _write_error(path, e) from None


def read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # unreadable: treated as a mismatch
    return obj if isinstance(obj, dict) else {}


def check_manifest(old: dict[str, Any] | None, new: Manifest, results: Path, *, has_results: bool,
                   force: bool) -> list[str]:
    """Differences that forbid resuming (raised unless force); returns them for a note."""
    if old is None:
        if has_results and not force:
            raise ManifestMismatchError(
                f"{results} already exists and has no manifest ({manifest_path(results).name}): "
                f"it was not written by chatglm3 batch, or by another version")
        return ["no manifest"] if has_results else []
    diffs: list[str] = []
    old_input = old_input_path(old)
    if old_input is not None and old_input != new.input and input_path(old_input) != input_path(new.input):
        diffs.append(f"input: {old_input} -> {input_path(new.input)}")
    old_model: dict[str, Any] = old["model"] if isinstance(old.get("model"), dict) else {}
    if old_model.get("sha256") != new.model_sha256:
        diffs.append(f"model: {old_model.get('path', '?')} (sha256 {str(old_model.get('sha256'))[:12]}) "
                     f"-> {new.model_path} (sha256 {new.model_sha256[:12]})")
    old_params: dict[str, Any] = old["params"] if isinstance(old.get("params"), dict) else {}
    for k in sorted(set(old_params) | set(new.params)):
        if old_params.get(k) != new.params.get(k):
            diffs.append(f"{k}: {json.dumps(old_params.get(k))} -> {json.dumps(new.params.get(k))}")
    if diffs and not force:
        if len(diffs) == 1 and diffs[0].startswith("input: "):
            raise ManifestMismatchError(
                f"{results} holds the results of another job ({diffs[0]})")
        raise ManifestMismatchError(
            f"{results} was started with other settings ({'; '.join(diffs)})")
    return diffs


def old_input_path(old: dict[str, Any]) -> str | None:
    """The input an existing manifest names (a plain string in manifests before 0.x)."""
    v = old.get("input")
    if isinstance(v, dict):
        v = v.get("path")
    return v if isinstance(v, str) else None


def old_records(old: dict[str, Any] | None) -> dict[str, str] | None:
    """id -> content hash from an existing manifest; None when it has none (an older version)."""
    if not old:
        return None
    recs = old.get("records")
    if not isinstance(recs, dict):
        return None
    return {str(k): v for k, v in recs.items() if isinstance(v, str)}
