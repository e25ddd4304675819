"""`chatglm3 pull`, `chatglm3 models` and downloads on first `run`, against tests/hubserver.py."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from chatglm3_cli.cli.app import app
from chatglm3_cli.cli.exit_codes import ExitCode
from chatglm3_cli.hub import download as dl
from chatglm3_cli.paths import hf_cache_dir

from ..ptyrun import run_in_pty

ANSWER = "Hello! I am ChatGLM3 🙂龘"
CMD = [sys.executable, "-m", "chatglm3_cli"]
REPO = "acme/chat-GGUF"


@pytest.fixture
def repo(hub, fixtures, monkeypatch):
    """The scripted model as Q4_K_M (68 MB, it answers) and the small template model as Q8_0."""
    monkeypatch.setattr(dl, "RETRY_DELAY_S", 0.01)
    hub.add(REPO, {"chat.Q4_K_M.gguf": fixtures.path("scripted"), "chat.Q8_0.gguf": fixtures.path("template")})
    return hub


def cli(*args, env=None):
    return CliRunner().invoke(app, list(args), env=env)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def test_pull_prints_the_path_and_one_line_per_file(repo, fixtures):
    r = cli("pull", f"{REPO}:q8_0")
    assert r.exit_code == 0, r.output
    path = r.stdout.strip()
    assert path.endswith("/chat.Q8_0.gguf") and path.startswith(str(hf_cache_dir()))
    assert sha256(path) == sha256(fixtures.path("template"))
    assert r.stderr.splitlines() == [f"downloading {REPO}/chat.Q8_0.gguf (757.79 kB)",
                                     f"downloaded {REPO}/chat.Q8_0.gguf"]
    assert "\x1b" not in r.stderr
    r = cli("pull", REPO, "--quant", "Q8_0")
    assert r.exit_code == 0 and r.stdout.strip() == path
    assert r.stderr.strip() == f"up to date: {REPO}/chat.Q8_0.gguf"
    assert len(repo.gets("chat.Q8_0.gguf")) == 1


def test_pull_list_shows_quants_and_sizes_without_downloading(repo):
    r = cli("pull", REPO, "--list")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == ["QUANT     SIZE       FILE",
                                     "Q8_0      757.79 kB  chat.Q8_0.gguf",
                                     "Q4_K_M *  68.85 MB   chat.Q4_K_M.gguf"]
    assert repo.gets("chat.Q8_0.gguf") == [] and repo.gets("chat.Q4_K_M.gguf") == []


def test_first_run_downloads_then_answers(repo):
    r = cli("run", "-m", f"{REPO}:q4_k_m", "-t", "0", "hi")
    assert r.exit_code == 0, r.output
    assert r.stdout == ANSWER + "\n"
    assert r.stderr.startswith(f"downloading {REPO}/chat.Q4_K_M.gguf (68.85 MB)")
    # the next run finds it on disk without any request (tests/hub/test_download.py)


def test_unknown_quant_and_repo(repo):
    r = cli("pull", f"{REPO}:Q2_K")
    assert r.exit_code == ExitCode.MODEL_ERROR
    assert f"error: {REPO} has no Q2_K file on {repo.url}; quants: Q4_K_M, Q8_0" in r.stderr
    r = cli("run", "-m", "nobody/nothing", "hi")
    assert r.exit_code == ExitCode.MODEL_ERROR
    assert f"no model repo nobody/nothing on {repo.url}" in r.stderr and r.stderr.count("\n") == 1


def test_no_network_mentions_hf_endpoint():
    r = cli("pull", "chatglm3-6b")
    assert r.exit_code == ExitCode.NETWORK_ERROR
    assert "cannot reach http://127.0.0.1:9" in r.stderr and "HF_ENDPOINT" in r.stderr
    assert r.stderr.count("\n") == 1


def test_endpoint_option_overrides_the_environment(repo, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    r = cli("pull", f"{REPO}:Q8_0", "--endpoint", repo.url)
    assert r.exit_code == 0, r.output


def test_offline_with_and_without_the_file(repo):
    r = cli("run", "--offline", "-m", f"{REPO}:Q8_0", "hi")
    assert r.exit_code == ExitCode.MODEL_ERROR and "offline" in r.stderr and "chatglm3 pull" in r.stderr
    r = cli("run", "-m", f"{REPO}:Q8_0", "hi", env={"HF_HUB_OFFLINE": "1"})
    assert r.exit_code == ExitCode.MODEL_ERROR
    assert repo.requests == []
    assert cli("pull", f"{REPO}:Q8_0").exit_code == 0
    n = len(repo.requests)
    r = cli("run", "--offline", "-m", REPO, "-t", "0", "--max-tokens", "3", "hi")  # the only file on disk
    assert r.exit_code == 0 and r.stdout.strip(), r.output
    r = cli("pull", REPO, "--offline")
    assert r.exit_code == 0 and r.stdout.strip().endswith("chat.Q8_0.gguf")
    assert len(repo.requests) == n


def test_default_model_and_config_file(repo, monkeypatch):
    from chatglm3_cli.paths import config_file

    r = cli("run", "--offline", "hi")  # nothing given: the default, chatglm3-6b at Q4_K_M
    assert r.exit_code == ExitCode.MODEL_ERROR and "chatglm3-6b is not on disk" in r.stderr
    config_file().parent.mkdir(parents=True)
    config_file().write_text(f'model = "{REPO}:Q8_0"\n')
    r = cli("run", "-t", "0", "--max-tokens", "3", "hi")
    assert r.exit_code == 0 and r.stdout.strip(), r.output
    assert r.stderr.startswith(f"downloading {REPO}/chat.Q8_0.gguf")


def test_models_list_info_and_rm(repo, fixtures):
    r = cli("models")
    assert r.exit_code == 0 and r.stdout == "" and "no models on disk yet" in r.stderr
    path = cli("pull", f"{REPO}:Q8_0").stdout.strip()
    cli("run", "-m", f"{REPO}:Q8_0", "--max-tokens", "1", "hi")
    r = cli("models")
    assert r.exit_code == 0, r.output
    header, row = r.stdout.splitlines()
    assert header.split() == ["NAME", "SOURCE", "QUANT", "SIZE", "LAST", "USED", "PATH"]
    assert row.split()[:5] == [f"{REPO}:Q8_0", "hub", "Q8_0", "757.79", "kB"] and row.endswith(path)
    assert "never" not in row
    item = json.loads(cli("models", "--json").stdout)
    assert item["name"] == f"{REPO}:Q8_0" and item["size"] == 757792 and item["last_used"] > 0
    assert item["source"] == "hub"

    r = cli("models", "info", f"{REPO}:q8_0")
    assert r.exit_code == 0, r.output
    info = dict(line.split(":", 1) for line in r.stdout.splitlines())
    info = {k: v.strip() for k, v in info.items()}
    assert info["architecture"] == "llama" and info["context"] == "1024" and info["layers"] == "1"
    assert info["quant"].startswith("Q8_0") and info["sha256"] == sha256(fixtures.path("template"))
    assert info["size"].endswith("(757,792 bytes)")
    r = cli("models", "info", str(fixtures.path("template")))  # a plain file: hashed on the spot
    assert r.exit_code == 0 and sha256(fixtures.path("template")) in r.stdout

    r = cli("models", "rm", f"{REPO}:Q8_0")
    assert r.exit_code == 0, r.output
    assert f"removing {REPO}:Q8_0 (757.79 kB)" in r.stderr
    assert not os.path.exists(path) and not (hf_cache_dir() / "models--acme--chat-GGUF").exists()
    r = cli("models", "rm", f"{REPO}:Q8_0")
    assert r.exit_code == ExitCode.MODEL_ERROR and "not on disk" in r.stderr
    r = cli("models", "info", f"{REPO}:Q8_0")
    assert r.exit_code == ExitCode.MODEL_ERROR and f"chatglm3 pull {REPO}:Q8_0" in r.stderr


def test_rm_removes_partial_downloads(repo, monkeypatch):
    monkeypatch.setattr(dl, "RETRIES", 0)
    repo.drop_after["chat.Q8_0.gguf"] = (100_000, 1)
    repo.unavailable["chat.Q8_0.gguf"] = 1
    r = cli("pull", f"{REPO}:Q8_0")
    assert r.exit_code == ExitCode.DOWNLOAD_ERROR
    assert "partial file is kept" in r.stderr and "run the same command again to resume" in r.stderr
    assert "1 partial download(s), 100.00 kB" in cli("models").stderr
    r = cli("models", "rm", REPO)
    assert r.exit_code == 0 and "removed 1 partial download(s) of acme/chat-GGUF (100.00 kB)" in r.stderr
    assert not (hf_cache_dir() / "models--acme--chat-GGUF").exists()


def test_corrupt_download_and_full_disk_exit_codes(repo, monkeypatch):
    repo.corrupt.add("chat.Q8_0.gguf")
    r = cli("pull", f"{REPO}:Q8_0")
    assert r.exit_code == ExitCode.DOWNLOAD_ERROR
    assert "is corrupt (sha256" in r.stderr and "the bad data was deleted" in r.stderr

    class Usage:
        free = 10_000

    monkeypatch.setattr(dl.shutil, "disk_usage", lambda p: Usage)
    r = cli("pull", f"{REPO}:Q8_0")
    assert r.exit_code == ExitCode.DISK_FULL and "not enough disk space" in r.stderr


def _env():
    env = dict(os.environ)
    env.pop("CHATGLM3_DEBUG", None)
    return env


def test_ctrl_c_keeps_the_partial_and_the_next_pull_resumes(repo, fixtures):
    repo.delay = 0.2  # 64 KiB per 0.2 s: slow enough to interrupt
    p = subprocess.Popen(CMD + ["pull", f"{REPO}:Q8_0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, env=_env())
    blobs = hf_cache_dir() / "models--acme--chat-GGUF" / "blobs"
    deadline = time.time() + 30
    while time.time() < deadline and not any(f.stat().st_size for f in blobs.glob("*.incomplete")):
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == ExitCode.INTERRUPTED, err
    assert b"the partial file is kept" in err and out == b""
    kept = next(blobs.glob("*.incomplete")).stat().st_size
    assert 0 < kept < 757792
    repo.delay = 0
    r = cli("pull", f"{REPO}:Q8_0")
    assert r.exit_code == 0, r.output
    assert repo.gets("chat.Q8_0.gguf")[-1].range == f"bytes={kept}-"
    assert sha256(r.stdout.strip()) == sha256(fixtures.path("template"))


def test_two_concurrent_pulls_end_with_one_good_file(repo, fixtures):
    repo.delay = 0.1
    procs = [subprocess.Popen(CMD + ["pull", f"{REPO}:Q8_0"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=_env())
             for _ in range(2)]
    results = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    paths = {out.decode().strip() for out, _ in results}
    assert len(paths) == 1
    blobs = sorted((hf_cache_dir() / "models--acme--chat-GGUF" / "blobs").iterdir())
    assert [b.name for b in blobs] == [sha256(fixtures.path("template"))]
    assert sha256(paths.pop()) == blobs[0].name
    assert len(repo.gets("chat.Q8_0.gguf")) == 1  # the second process waited and reused the file


def test_progress_bar_on_a_terminal(repo):
    """On a terminal, stderr gets rich's bar with size, speed and time left."""
    code, screen = run_in_pty(_env(), CMD + ["pull", f"{REPO}:Q8_0"])
    assert code == 0
    assert "chat.Q8_0.gguf" in screen and "757.8/757.8 kB" in screen and "/s" in screen
    assert "\x1b[" in screen and "downloaded acme/chat-GGUF/chat.Q8_0.gguf" in screen


def test_usage_errors_and_rm_by_path(repo, fixtures):
    r = cli("pull", str(fixtures.path("template")))
    assert r.exit_code == ExitCode.USAGE and "pull takes a model name" in r.stderr
    r = cli("pull", f"{REPO}/chat.Q8_0.gguf", "--quant", "Q4_K_M")
    assert r.exit_code == ExitCode.USAGE
    r = cli("pull", REPO, "--list", "--offline")
    assert r.exit_code == ExitCode.USAGE and "offline" in r.stderr
    r = cli("models", "rm", str(fixtures.path("template")))  # not in the cache: left alone
    assert r.exit_code == ExitCode.USAGE and fixtures.path("template").exists()
    path = cli("pull", f"{REPO}/chat.Q8_0.gguf").stdout.strip()
    assert cli("models", "rm", path).exit_code == 0 and not os.path.exists(path)


def test_rm_during_a_pull_removes_nothing_and_the_pull_finishes(repo, fixtures):
    """`models rm` takes the download lock: it used to delete a running pull's partial file,
    which then crashed with FileNotFoundError."""
    repo.delay = 2.0  # 64 KiB per 2 s: the pull is still running when rm comes (~24 s in all)
    p = subprocess.Popen(CMD + ["pull", f"{REPO}:Q8_0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, env=_env())
    blobs = hf_cache_dir() / "models--acme--chat-GGUF" / "blobs"
    deadline = time.time() + 30
    while time.time() < deadline and not any(f.stat().st_size for f in blobs.glob("*.incomplete")):
        time.sleep(0.05)
    rm = subprocess.run(CMD + ["models", "rm", REPO], capture_output=True, text=True, env=_env(),
                        stdin=subprocess.DEVNULL, timeout=60)
    assert rm.returncode == ExitCode.USAGE, rm.stderr
    assert "is being downloaded by another process right now; nothing was removed" in rm.stderr
    assert list(blobs.glob("*.incomplete"))  # the partial is still there
    repo.delay = 0
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert sha256(out.decode().strip()) == sha256(fixtures.path("template"))
    r = cli("models", "rm", REPO)  # once the pull is done, rm goes ahead
    assert r.exit_code == 0, r.output
    assert not (hf_cache_dir() / "models--acme--chat-GGUF").exists()
