"""Models from ModelScope (`ms://`, CHATGLM3_SOURCE=modelscope) against tests/msserver.py, honest
and hostile: the real CLI in-process, the real downloader, real HTTP on 127.0.0.1."""
from __future__ import annotations

import hashlib
import json
import os

import pytest
from typer.testing import CliRunner

from chatglm3_cli.cli.app import app
from chatglm3_cli.cli.exit_codes import ExitCode
from chatglm3_cli.hub import download as dl
from chatglm3_cli.paths import hf_cache_dir, modelscope_cache_dir

REPO = "acme/chat-GGUF"
FILE = "chat.Q8_0.gguf"


@pytest.fixture
def ms(monkeypatch, fixtures):
    from ..msserver import ModelScopeServer

    monkeypatch.setattr(dl, "RETRY_DELAY_S", 0.01)
    server = ModelScopeServer(lifetime=120).start()
    monkeypatch.setenv("MODELSCOPE_DOMAIN", server.url)
    server.add(REPO, {FILE: fixtures.path("template"), "chat.Q4_K_M.gguf": fixtures.path("scripted")})
    yield server
    server.stop()


def cli(*args, env=None):
    return CliRunner().invoke(app, list(args), env=env)


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_pull_run_list_info_rm(ms, fixtures):
    r = cli("pull", f"ms://{REPO}:q8_0")
    assert r.exit_code == 0, r.output
    path = r.stdout.strip()
    assert path.startswith(str(modelscope_cache_dir())) and path.endswith("/" + FILE)
    assert sha256(path) == sha256(fixtures.path("template"))
    assert not hf_cache_dir().exists()  # never mixed with the Hub's cache
    # the three GETs of the issue: revisions, the file list, the bytes
    assert [s.path.rsplit("/", 1)[-1] for s in ms.requests] == ["revisions", "files", "repo"]
    n = len(ms.requests)
    r = cli("run", "--offline", "-m", f"ms://{REPO}:Q8_0", "-t", "0", "--max-tokens", "2", "hi")
    assert r.exit_code == 0, r.output
    assert len(ms.requests) == n  # on disk: no request

    rows = [json.loads(line) for line in cli("models", "--json").stdout.splitlines()]
    assert [(x["name"], x["source"]) for x in rows] == [(f"ms://{REPO}:Q8_0", "modelscope")]
    table = cli("models").stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "SOURCE", "QUANT"] and table[1].split()[:2] == [
        f"ms://{REPO}:Q8_0", "modelscope"]
    info = cli("models", "info", f"ms://{REPO}:Q8_0")
    assert info.exit_code == 0, info.output
    assert "source:        modelscope" in info.stdout and sha256(path) in info.stdout
    r = cli("models", "rm", f"ms://{REPO}")
    assert r.exit_code == 0, r.output
    assert not os.path.exists(path) and cli("models", "--json").stdout == ""


def test_alias_from_modelscope_when_preferred(ms, fixtures):
    ms.add("LLM-Research/glm-4-9b-chat-GGUF", {"glm-4-9b-chat.Q4_K_M.gguf": fixtures.path("template")})
    r = cli("pull", "glm-4-9b-chat", env={"CHATGLM3_SOURCE": "modelscope"})
    assert r.exit_code == 0, r.output
    assert r.stdout.strip().startswith(str(modelscope_cache_dir()))
    r = cli("pull", "chatglm3-6b", env={"CHATGLM3_SOURCE": "modelscope"})
    assert r.exit_code == ExitCode.MODEL_ERROR and "ms://OWNER/REPO" in r.stderr


def test_token_goes_to_modelscope_only_and_a_private_repo_says_so(ms):
    ms.gated.add(REPO)
    r = cli("pull", f"ms://{REPO}:Q8_0")
    assert r.exit_code == ExitCode.NETWORK_ERROR and "MODELSCOPE_API_TOKEN" in r.stderr
    r = cli("pull", f"ms://{REPO}:Q8_0", env={"MODELSCOPE_API_TOKEN": "s3cret"})
    assert r.exit_code == 0, r.output
    assert {s.authorization for s in ms.requests[-3:]} == {"Bearer s3cret"}


def test_a_broken_download_resumes_with_range(ms, fixtures):
    ms.drop_after[FILE] = (300_000, 1)
    r = cli("pull", f"ms://{REPO}:Q8_0")
    assert r.exit_code == 0, r.output
    gets = [s for s in ms.requests if s.path.endswith("/repo")]
    assert len(gets) == 2 and gets[0].range is None and gets[1].range == "bytes=300000-"
    assert sha256(r.stdout.strip()) == sha256(fixtures.path("template"))


def test_corrupt_bytes_and_a_wrong_sha256_are_deleted(ms):
    ms.corrupt.add(FILE)
    r = cli("pull", f"ms://{REPO}:Q8_0")
    assert r.exit_code == ExitCode.DOWNLOAD_ERROR and "corrupt" in r.stderr
    ms.corrupt.clear()
    ms.sha256[FILE] = "0" * 64
    r = cli("pull", f"ms://{REPO}:Q8_0")
    assert r.exit_code == ExitCode.DOWNLOAD_ERROR
    assert not list(modelscope_cache_dir().rglob("*.gguf")) and not list(modelscope_cache_dir().rglob("*.incomplete"))


def _entry(**change):
    entry = {"Name": FILE, "Path": FILE, "Type": "blob", "Size": 757792, "Sha256": "a" * 64}
    entry.update(change)
    return [entry]


@pytest.mark.parametrize("what, files, revisions, raw", [
    ("path escaping the repo", _entry(Path="../../../escaped.gguf"), None, None),
    ("absolute path", _entry(Path="/tmp/escaped.gguf"), None, None),
    ("control characters", _entry(Path="a\x1b[2Jb.gguf"), None, None),
    ("negative size", _entry(Size=-1), None, None),
    ("size as text", _entry(Size="757792"), None, None),
    ("no Files list", {"x": 1}, None, None),
    ("revision with a slash", None, {"Branches": [{"Revision": "../../etc"}]}, None),
    ("not JSON", None, None, {"files": b"<html>rate limited</html>"}),
    ("JSON nested 100,000 deep", None, None, {"files": b"[" * 100_000 + b"]" * 100_000}),
    ("a Data that is a list", None, None, {"revisions": b'{"Code": 200, "Data": []}'}),
])
def test_hostile_answers_touch_nothing_outside_the_cache(ms, tmp_path, what, files, revisions, raw):
    if files is not None:
        ms.files[REPO] = files
    if revisions is not None:
        ms.revisions[REPO] = revisions
    ms.raw.update(raw or {})
    before = sorted(p.name for p in tmp_path.iterdir())
    r = cli("pull", f"ms://{REPO}/{FILE}")
    assert r.exit_code == ExitCode.NETWORK_ERROR, (what, r.output)
    assert r.stderr.count("\n") == 1 and "\x1b" not in r.stderr and "Traceback" not in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == before, what
    assert not list(tmp_path.rglob("escaped.gguf"))


def test_a_sha256_that_is_not_hex_is_checked_by_size_with_a_warning(ms):
    ms.sha256[FILE] = "../../not-a-hash"
    r = cli("pull", f"ms://{REPO}:Q8_0")
    assert r.exit_code == 0, r.output
    assert "announced no sha256" in r.stderr


def test_no_model_error_names_the_model_its_size_and_the_local_way():
    r = cli("run", "hi")  # the default model, no network (HF_ENDPOINT points nowhere)
    assert r.exit_code == ExitCode.NETWORK_ERROR
    line = r.stderr.strip()
    assert line.count("\n") == 0
    assert "chatglm3-6b (mradermacher/chatglm3-6b-GGUF, Q4_K_M, about 3.8 GB)" in line
    assert "-m FILE.gguf" in line
    r = cli("run", "--offline", "-m", "ms://acme/none:Q8_0", "hi")
    assert r.exit_code == ExitCode.MODEL_ERROR and "from ModelScope" in r.stderr and "-m FILE.gguf" in r.stderr
