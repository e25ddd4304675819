"""The one place a model name becomes a file on disk; every command goes through `resolve_model`.

Precedence: the value given (the -m flag, or CHATGLM3_MODEL which Typer reads into it), then
CHATGLM3_MODEL (for library callers), then `model = ...` in the config file, then the default
(`chatglm3-6b` at Q4_K_M). A file already on disk is used without touching the network.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

from .. import config, env
from ..errors import HubProtocolError, ModelNotFoundError, OfflineModelError
from ..progress import DownloadProgress
from . import http
from .download import download
from .registry import DEFAULT_MODEL, ModelSpec, gguf_files, parse_spec, pick_file, quant_of
from .store import find_cached, mark_used, repo_files


def model_name(value: Optional[str] = None) -> str:
    """The model name in force: the value given, CHATGLM3_MODEL, the config file, the default."""
    for candidate in (value, env.get("CHATGLM3_MODEL"), config.configured_model()):
        if candidate and candidate.strip():
            return candidate.strip()
    return DEFAULT_MODEL


def resolve_model(value: Optional[str] = None, *, offline: Optional[bool] = None,
                  endpoint: Optional[str] = None, progress: Optional[DownloadProgress] = None) -> Path:
    """A path llama.cpp can open: a local .gguf, or a Hub model (downloaded on first use)."""
    spec = parse_spec(model_name(value))
    if spec.is_local:
        assert spec.path is not None
        if not spec.path.exists():
            raise ModelNotFoundError(f"model file not found: {spec.path}")
        return spec.path
    found = fetch(spec, offline=offline, endpoint=endpoint, progress=progress)
    mark_used(found.path)
    return found.path


@dataclass(frozen=True)
class Fetched:
    path: Path
    repo_id: str
    filename: str
    downloaded: bool  # False: it was already on disk


def fetch(spec: ModelSpec, *, offline: Optional[bool] = None, endpoint: Optional[str] = None,
          progress: Optional[DownloadProgress] = None, refresh: bool = False) -> Fetched:
    """Make a Hub model available on disk. Without `refresh`, a file on disk is used as it is
    (no network); with it (`pull`), the Hub is asked for the current file and commit."""
    assert spec.repo_id is not None
    cached = find_cached(spec)
    if cached is not None and (not refresh or http.offline(offline)):
        return Fetched(cached.path, cached.repo_id, cached.filename, False)
    if http.offline(offline):
        raise OfflineModelError(f"{spec.text} is not on disk, and offline mode is on{_on_disk(spec)}")
    hub = http.Hub(endpoint, notify=progress.note if progress is not None else None)
    listed: dict[str, Optional[str]] = {}
    filename = spec.filename
    if filename is None:
        listed = {f.path: f.sha256 for f in hub.list_files(spec.repo_id)}
        filename = pick_file(spec, listed, where=f"on {hub.endpoint}")
    meta = _with_listed_sha256(hub, hub.file_meta(spec.repo_id, filename), listed.get(filename))
    before = cached.path.resolve() if cached is not None else None
    path = download(hub, spec.repo_id, filename, meta, progress=progress)
    return Fetched(path, spec.repo_id, filename, before != path.resolve())


def _with_listed_sha256(hub: http.Hub, meta: http.FileMeta, listed: Optional[str]) -> http.FileMeta:
    """The listing's LFS sha256 checks a file whose headers announce none; two different ones
    mean the endpoint contradicts itself."""
    if listed is None or meta.sha256 == listed:
        return meta
    if meta.sha256 is None:
        return replace(meta, sha256=listed)
    raise HubProtocolError(f"{hub.endpoint} announced two different sha256 for one file "
                           f"({meta.sha256[:12]}… in its headers, {listed[:12]}… in its listing)")


def _on_disk(spec: ModelSpec) -> str:
    assert spec.repo_id is not None
    files = gguf_files(f.filename for f in repo_files(spec.repo_id))
    if not files:
        return ""
    quants = sorted({q for q in map(quant_of, files) if q})
    return f"; on disk for {spec.repo_id}: {', '.join(quants or files)}"

