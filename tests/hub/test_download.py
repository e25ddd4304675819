"""Resumable, verified downloads into the shared Hugging Face cache, against tests/hubserver.py."""
from __future__ import annotations

import hashlib
import os

import pytest

from chatglm3_cli.errors import (
    DiskFullError,
    DownloadError,
    IntegrityError,
    ModelNotOnHubError,
    NetworkError,
    OfflineModelError,
)
from chatglm3_cli.hub import download as dl
from chatglm3_cli.hub.registry import parse_spec
from chatglm3_cli.hub.resolve import fetch, resolve_model
from chatglm3_cli.paths import hf_cache_dir

REPO = "acme/tiny-GGUF"
FILE = "tiny.Q4_K_M.gguf"


class Recorder:
    def __init__(self):
        self.events = []

    def start(self, name, total, done):
        self.events.append(("start", name, total, done))

    def advance(self, n):
        pass

    def end(self, ok):
        self.events.append(("end", ok))

    def note(self, text):
        self.events.append(("note", text))


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def tiny(hub, fixtures, monkeypatch):
    """A repo holding the small `template` fixture GGUF; retries without waiting."""
    monkeypatch.setattr(dl, "RETRY_DELAY_S", 0.01)
    src = fixtures.path("template")
    hub.add(REPO, {FILE: src, "README.md": src.with_suffix(".json")})
    return src


def blobs():
    d = hf_cache_dir() / "models--acme--tiny-GGUF" / "blobs"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_download_into_the_hf_cache_layout(hub, tiny):
    rec = Recorder()
    got = fetch(parse_spec(REPO), progress=rec)
    assert got.downloaded and got.filename == FILE
    sha = sha256(tiny)
    repo = hf_cache_dir() / "models--acme--tiny-GGUF"
    assert got.path == repo / "snapshots" / hub.repos[REPO].commit / FILE
    assert got.path.is_symlink() and os.readlink(got.path) == f"../../blobs/{sha}"
    assert (repo / "refs" / "main").read_text() == hub.repos[REPO].commit
    assert blobs() == [sha] and sha256(got.path) == sha
    assert rec.events[0] == ("start", f"{REPO}/{FILE}", tiny.stat().st_size, 0)
    # huggingface_hub sees the same file where it is: one shared cache, no second copy
    from huggingface_hub import try_to_load_from_cache

    assert try_to_load_from_cache(REPO, FILE, cache_dir=hf_cache_dir()) == str(got.path)


def test_a_file_already_in_the_cache_is_used_without_network(hub, tiny, monkeypatch):
    first = resolve_model(REPO)
    n = len(hub.requests)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert resolve_model(f"{REPO}:q4_k_m") == first
    assert len(hub.requests) == n


def test_a_file_fetched_by_huggingface_hub_is_used_where_it_is(hub, tiny):
    """`hf_hub_download` (a real huggingface_hub, in its own process: it reads HF_ENDPOINT at
    import) fills the shared cache; we then use that very file, offline, with no second copy."""
    import subprocess
    import sys

    code = ("from huggingface_hub import hf_hub_download, HfApi; "
            f"print(hf_hub_download({REPO!r}, {FILE!r})); "
            f"assert [s.rfilename for s in HfApi().model_info({REPO!r}, files_metadata=True).siblings]")
    env = dict(os.environ, HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_XET="1")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    theirs = p.stdout.strip()
    n = len(hub.requests)
    assert str(resolve_model(f"{REPO}:q4_k_m", offline=True)) == theirs
    assert str(resolve_model(REPO)) == theirs and len(hub.requests) == n
    assert blobs() == [sha256(tiny)]


def test_resume_within_a_run_after_a_dropped_connection(hub, tiny):
    hub.drop_after[FILE] = (300_000, 1)
    rec = Recorder()
    path = fetch(parse_spec(REPO), progress=rec).path
    assert [g.range for g in hub.gets(FILE)] == [None, "bytes=300000-"]
    assert sha256(path) == sha256(tiny)
    assert any(e[0] == "note" and "retrying" in e[1] for e in rec.events)


def test_resume_after_a_connection_reset_keeps_what_was_written(hub, tiny):
    hub.reset = True
    hub.drop_after[FILE] = (300_000, 2)  # two resets: the second one hits a resumed GET
    path = fetch(parse_spec(REPO)).path
    ranges = [g.range for g in hub.gets(FILE)]
    assert len(ranges) == 3 and ranges[0] is None
    first, second = (int(r.removeprefix("bytes=").rstrip("-")) for r in ranges[1:])
    assert 0 < first < second  # each retry asks for what is not on disk yet, nothing twice
    assert sha256(path) == sha256(tiny)


def _break_off(hub, nbytes=300_000):
    """A first run that gets `nbytes` and then finds the server gone (503) and gives up."""
    hub.drop_after[FILE] = (nbytes, 1)
    hub.unavailable[FILE] = 1
    with pytest.raises(DownloadError, match="partial file is kept"):
        fetch(parse_spec(REPO))
    hub.unavailable.clear()


def test_resume_across_runs_requests_only_the_rest(hub, tiny, monkeypatch):
    monkeypatch.setattr(dl, "RETRIES", 0)
    _break_off(hub)
    sha = sha256(tiny)
    assert blobs() == [f"{sha}.incomplete"]
    assert (hf_cache_dir() / "models--acme--tiny-GGUF" / "blobs" / f"{sha}.incomplete").stat().st_size == 300_000
    assert not list((hf_cache_dir() / "models--acme--tiny-GGUF").glob("snapshots/*/*"))
    rec = Recorder()
    path = fetch(parse_spec(REPO), progress=rec).path  # "the next run"
    assert [g.range for g in hub.gets(FILE)][-1] == "bytes=300000-"
    assert ("start", f"{REPO}/{FILE}", tiny.stat().st_size, 300_000) in rec.events
    assert sha256(path) == sha and blobs() == [sha]


def test_server_ignoring_range_restarts_cleanly(hub, tiny, monkeypatch):
    monkeypatch.setattr(dl, "RETRIES", 0)
    _break_off(hub)
    hub.no_range = True
    rec = Recorder()
    path = fetch(parse_spec(REPO), progress=rec).path
    assert sha256(path) == sha256(tiny)
    assert ("note", "the server does not support resuming; starting over") in rec.events


def test_a_partial_longer_than_the_file_is_discarded(hub, tiny):
    part = hf_cache_dir() / "models--acme--tiny-GGUF" / "blobs" / f"{sha256(tiny)}.incomplete"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * (tiny.stat().st_size + 10))
    assert sha256(fetch(parse_spec(REPO)).path) == sha256(tiny)
    assert [g.range for g in hub.gets(FILE)] == [None]


def test_corrupted_transfer_is_rejected_and_nothing_is_left(hub, tiny):
    hub.corrupt.add(FILE)
    with pytest.raises(IntegrityError, match="corrupt.*sha256.*deleted"):
        fetch(parse_spec(REPO))
    assert blobs() == []
    assert not list((hf_cache_dir() / "models--acme--tiny-GGUF").glob("snapshots/*/*"))
    hub.corrupt.clear()
    assert sha256(fetch(parse_spec(REPO)).path) == sha256(tiny)


def test_not_enough_disk_space_is_checked_before_downloading(hub, tiny, monkeypatch):
    class Usage:
        free = 1000

    monkeypatch.setattr(dl.shutil, "disk_usage", lambda p: Usage)
    with pytest.raises(DiskFullError, match="needs 757.79 kB more"):
        fetch(parse_spec(REPO))
    assert hub.gets(FILE) == []


def test_token_goes_to_the_hub_only_not_to_the_cdn(hub, tiny, monkeypatch):
    hub.cdn = True
    hub.gated.add(REPO)
    with pytest.raises(NetworkError, match="access denied"):
        fetch(parse_spec(REPO))
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    path = fetch(parse_spec(REPO)).path
    assert sha256(path) == sha256(tiny)
    auth = {(r.method, r.path.split("/")[1]): r.authorization for r in hub.requests if r.authorization}
    assert auth and all(v == "Bearer hf_secret" for v in auth.values())
    cdn = [r for r in hub.requests if r.path.startswith("/cdn/")]
    assert cdn and all(r.authorization is None for r in cdn)


def test_offline_uses_the_disk_and_never_the_network(hub, tiny, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineModelError, match="not on disk, and offline"):
        resolve_model(REPO)
    assert hub.requests == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    path = resolve_model(REPO)
    n = len(hub.requests)
    assert resolve_model(REPO, offline=True) == path
    with pytest.raises(OfflineModelError, match=r"on disk for acme/tiny-GGUF: Q4_K_M"):
        resolve_model(f"{REPO}:Q8_0", offline=True)
    assert len(hub.requests) == n


def test_unknown_repo_quant_and_file(hub, tiny):
    with pytest.raises(ModelNotOnHubError, match="no model repo nobody/nothing"):
        fetch(parse_spec("nobody/nothing"))
    with pytest.raises(ModelNotOnHubError, match="no Q2_K file on .*; quants: Q4_K_M"):
        fetch(parse_spec(f"{REPO}:Q2_K"))
    with pytest.raises(ModelNotOnHubError, match="not found"):
        fetch(parse_spec(f"{REPO}/missing.gguf"))


def test_no_network_names_hf_endpoint(monkeypatch):
    with pytest.raises(NetworkError, match="cannot reach http://127.0.0.1:9") as e:
        fetch(parse_spec("owner/repo"))
    assert "HF_ENDPOINT" in e.value.hint


def test_listing_follows_pages(hub, tiny):
    from chatglm3_cli.hub.http import Hub

    hub.page_size = 1
    assert sorted(f.path for f in Hub().list_files(REPO)) == ["README.md", FILE]
