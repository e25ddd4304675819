"""Server values checked before they become paths, and the one check every cache writer uses.

A Hub endpoint may be a mirror we do not control, so nothing it sends is trusted as a path:
- a commit (``X-Repo-Commit``) is 40 hex digits;
- a blob is named by a hash only: the 64-hex sha256 of an LFS file (which we also compute and
  compare) or the 40-hex git sha1 of a small file; any other ETag never touches a path;
- a file path from a listing or a model name is relative, normalised (no ``.``, ``..`` or empty
  parts, no backslashes or control characters) and stays inside the repo's snapshot.

Then `inside` checks every path we are about to create, replace or unlink: its directory,
symlinks followed, lies under the cache's real path, and its own name is a plain name. What is
written is opened without following a symlink at the final name (`open_nofollow`), so a link
planted in the cache never redirects a write elsewhere.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

from ..errors import HubProtocolError, UnsafePathError

_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_REPO_PATH = 1000


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_commit(value: Optional[str], who: str) -> str:
    """A commit id as the Hub sends it: 40 hex digits (returned in lower case)."""
    v = (value or "").strip().lower()
    if not _HEX40.fullmatch(v):
        raise HubProtocolError(f"{who} sent an invalid commit id {_short(value)} (not 40 hex digits)")
    return v


def sha256_of_etag(etag: Optional[str]) -> Optional[str]:
    v = (etag or "").lower()
    return v if _HEX64.fullmatch(v) else None


def sha1_of_etag(etag: Optional[str]) -> Optional[str]:
    v = (etag or "").lower()
    return v if _HEX40.fullmatch(v) else None


def check_etag(etag: str, who: str) -> str:
    """An ETag that is not a hash is only an opaque token (it never names a file); one that looks
    like a path is a server up to no good, and refused."""
    if "/" in etag or "\\" in etag or ".." in etag or _CONTROL.search(etag) or len(etag) > 200:
        raise HubProtocolError(f"{who} sent an invalid ETag {_short(etag)}")
    return etag


def bad_repo_path(path: object) -> Optional[str]:
    """Why `path` is not a safe file path inside a repo, or None when it is."""
    if not isinstance(path, str) or not path:
        return "not a file name"
    if len(path) > MAX_REPO_PATH:
        return "too long"
    if _CONTROL.search(path) or "\\" in path:
        return "control characters or backslashes"
    if path.startswith("/"):
        return "an absolute path"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return "not a normalised relative path"
    return None


def check_repo_path(path: object, who: str) -> str:
    why = bad_repo_path(path)
    if why is not None:
        raise HubProtocolError(f"{who} sent an unsafe file path {_short(path)} ({why})")
    assert isinstance(path, str)
    return path


def _real(path: Path) -> str:
    return os.path.realpath(path)


def _under(real: str, root: str) -> bool:
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def inside(path: Path, root: Path) -> Path:
    """`path` as a directory entry we may create, replace or unlink: its directory resolves
    (symlinks followed) under `root`'s real path and its name is a plain name. The entry itself is
    not followed: replacing or unlinking a symlink touches the link, never its target. Returns
    `path`; raises UnsafePathError."""
    name = path.name
    parent = _real(path.parent)
    if name in ("", ".", "..") or not _under(parent, _real(root)):
        raise UnsafePathError(f"refusing to touch {path}: it resolves to {os.path.join(parent, name)}, "
                              f"outside {root}")
    return path


def open_nofollow(path: Path, flags: int, mode: int = 0o644) -> int:
    """os.open that refuses a symlink at the final name (O_NOFOLLOW where the OS has it)."""
    try:
        return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), mode)
    except OSError as e:
        if path.is_symlink():
            raise UnsafePathError(f"refusing to write through the symlink {path} in the model cache") from e
        raise
