"""The one place a model name becomes a file on disk; every command goes through `resolve_model`.

Precedence: the value given (the -m flag, or CHATGLM3_MODEL which Typer reads into it), then
CHATGLM3_MODEL (for library callers), then `model = ...` in the config file, then the default
(`chatglm3-6b` at Q4_K_M). A name from `chatglm3 models add` is its file; a file already on disk
is used without touching the network; a Hub or ModelScope model is downloaded on first use.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional

from .. import config, env
from ..errors import HubProtocolError, ModelNotFoundError, NetworkError, OfflineModelError
from ..paths import hf_cache_dir, modelscope_cache_dir
from ..progress import DownloadProgress
from . import http
from .download import download
from .registry import DEFAULT_MODEL, DEFAULT_QUANT, ModelSpec, gguf_files, parse_spec, pick_file, quant_of
from .store import find_cached, mark_used, repo_files

# Parameters of each alias's model and bits per weight of common quants: the size the no-model
# error quotes before anything is listed ("about", since a listing may never come).
_ALIAS_PARAMS = {"chatglm3-6b": 6.24e9, "chatglm3-6b-128k": 6.24e9, "glm-4-9b-chat": 9.4e9}
_QUANT_BITS = {"Q2_K": 3.0, "Q3_K_M": 3.9, "Q4_0": 4.5, "Q4_K_S": 4.6, "Q4_K_M": 4.9, "Q5_K_M": 5.7,
               "Q6_K": 6.6, "Q8_0": 8.5, "F16": 16.0, "BF16": 16.0}


def model_name(value: Optional[str] = None) -> str:
    """The model name in force: the value given, CHATGLM3_MODEL, the config file, the default."""
    for candidate in (value, env.get("CHATGLM3_MODEL"), config.configured_model()):
        if candidate and candidate.strip():
            return candidate.strip()
    return DEFAULT_MODEL


def preferred_source() -> str:
    """Where aliases are read from: CHATGLM3_SOURCE, else the config file's `source`, else the Hub."""
    return env.choice("CHATGLM3_SOURCE", ("hub", "modelscope")) or config.load().source or "hub"


def spec_of(name: str) -> ModelSpec:
    """A name as a ModelSpec: a model from `models add` is its file, the rest is parse_spec's."""
    local = config.load().settings(name)
    if local is not None and local.path:
        return ModelSpec(name, path=Path(os.path.expanduser(local.path)))
    return parse_spec(name, source=preferred_source())


def cache_of(spec: ModelSpec) -> Path:
    return modelscope_cache_dir() if spec.source == "modelscope" else hf_cache_dir()


def resolve_model(value: Optional[str] = None, *, offline: Optional[bool] = None,
                  endpoint: Optional[str] = None, progress: Optional[DownloadProgress] = None) -> Path:
    """A path llama.cpp can open: a local .gguf, or a Hub or ModelScope model (downloaded on first use)."""
    spec = spec_of(model_name(value))
    if spec.is_local:
        assert spec.path is not None
        if not spec.path.exists():
            raise ModelNotFoundError(f"model file not found: {_clip(str(spec.path))}")
        if spec.path.is_file():  # `models list` shows the files used with -m too
            mark_used(spec.path.absolute())
        return spec.path
    try:
        found = fetch(spec, offline=offline, endpoint=endpoint, progress=progress)
    except (NetworkError, OfflineModelError) as e:
        raise _not_fetched(spec, e) from e
    mark_used(found.path)
    return found.path


def _clip(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[:n] + f"… ({len(text):,} characters)"


def _not_fetched(spec: ModelSpec, e: NetworkError | OfflineModelError) -> Exception:
    """The same error, naming what it was getting (and about how big) and the way around the
    network: a GGUF the user already has."""
    quant = (spec.quant or DEFAULT_QUANT).upper()
    params = _ALIAS_PARAMS.get(spec.alias or "")
    bits = _QUANT_BITS.get(quant)
    what = spec.filename or f"{quant}"
    size = f", about {params * bits / 8 / 1e9:.1f} GB" if params and bits and not spec.filename else ""
    where = "ModelScope" if spec.source == "modelscope" else "the Hub"
    hint = "; ".join(h for h in (e.hint, "or use a GGUF file you already have: -m FILE.gguf") if h)
    return type(e)(f"cannot get the model {_clip(spec.text, 100)} ({spec.repo_id}, {what}{size}) from "
                   f"{where}: {e.message}", hint=hint)


@dataclass(frozen=True)
class Fetched:
    path: Path
    repo_id: str
    filename: str
    downloaded: bool  # False: it was already on disk


def fetch(spec: ModelSpec, *, offline: Optional[bool] = None, endpoint: Optional[str] = None,
          progress: Optional[DownloadProgress] = None, refresh: bool = False) -> Fetched:
    """Make a Hub or ModelScope model available on disk. Without `refresh`, a file on disk is used
    as it is (no network); with it (`pull`), the site is asked for the current file and commit."""
    assert spec.repo_id is not None
    cache = cache_of(spec)
    cached = find_cached(spec, cache)
    if cached is not None and (not refresh or http.offline(offline)):
        return Fetched(cached.path, cached.repo_id, cached.filename, False)
    if http.offline(offline):
        raise OfflineModelError(f"{spec.text} is not on disk, and offline mode is on{_on_disk(spec)}")
    hub = client(spec, endpoint, progress.note if progress is not None else None)
    listed: dict[str, Optional[str]] = {}
    filename = spec.filename
    if filename is None:
        listed = {f.path: f.sha256 for f in hub.list_files(spec.repo_id)}
        filename = pick_file(spec, listed, where=f"on {hub.endpoint}")
    meta = _with_listed_sha256(hub, hub.file_meta(spec.repo_id, filename), listed.get(filename))
    before = cached.path.resolve() if cached is not None else None
    path = download(hub, spec.repo_id, filename, meta, progress=progress, cache=cache)
    return Fetched(path, spec.repo_id, filename, before != path.resolve())


def client(spec: ModelSpec, endpoint: Optional[str] = None,
           notify: Optional[Callable[[str], None]] = None) -> http.Hub:
    """The Hub (at --endpoint / HF_ENDPOINT), or ModelScope (at MODELSCOPE_DOMAIN) for its models."""
    if spec.source == "modelscope":
        from .modelscope import ModelScope

        return ModelScope(notify=notify)
    return http.Hub(endpoint, notify=notify)


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
    files = gguf_files(f.filename for f in repo_files(spec.repo_id, cache_of(spec)))
    if not files:
        return ""
    quants = sorted({q for q in map(quant_of, files) if q})
    return f"; on disk for {spec.repo_id}: {', '.join(quants or files)}"

