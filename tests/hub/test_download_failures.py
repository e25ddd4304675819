"""How downloads fail: a full disk, a wrong Content-Range, a broken or silent endpoint, an
endpoint that is not a URL or carries credentials. Each is one line with its own exit code."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from chatglm3_cli import errors as E
from chatglm3_cli.cli.exit_codes import ExitCode
from chatglm3_cli.errors import DiskFullError, NetworkError
from chatglm3_cli.hub import download as dl
from chatglm3_cli.hub import http as hub_http
from chatglm3_cli.hub.registry import parse_spec
from chatglm3_cli.hub.resolve import fetch
from chatglm3_cli.paths import hf_cache_dir

from .test_download import Recorder, sha256

CMD = [sys.executable, "-m", "chatglm3_cli"]
REPO = "acme/tiny-GGUF"
FILE = "tiny.Q4_K_M.gguf"


@pytest.fixture
def tiny(hub, fixtures, monkeypatch):
    monkeypatch.setattr(dl, "RETRY_DELAY_S", 0.01)
    src = fixtures.path("template")
    hub.add(REPO, {FILE: src})
    return src


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("CHATGLM3_DEBUG", None)
    return subprocess.run(CMD + list(args), capture_output=True, text=True, env=env,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


def test_a_disk_that_fills_up_mid_download_is_disk_full_not_a_lost_connection(hub, tiny, monkeypatch):
    """The partial file's writes go to /dev/full: the kernel's own ENOSPC after 300 kB."""
    real_open = dl.open_nofollow
    hub.drop_after[FILE] = (300_000, 1)  # a first GET that writes 300 kB, then the disk is full

    def open_partial(path, flags, mode=0o644):
        if str(path).endswith(".incomplete") and flags & os.O_APPEND:
            return os.open("/dev/full", os.O_WRONLY)
        return real_open(path, flags, mode)

    monkeypatch.setattr(dl, "open_nofollow", open_partial)
    rec = Recorder()
    with pytest.raises(DiskFullError, match=r"disk full while downloading .*partial file is kept") as e:
        fetch(parse_spec(REPO), progress=rec)
    assert "free some space" in e.value.hint
    notes = [ev[1] for ev in rec.events if ev[0] == "note"]
    assert sum("connection lost" in n for n in notes) == 1  # the dropped GET, not the full disk
    assert len(hub.gets(FILE)) == 2  # no retries once the disk is full
    part = hf_cache_dir() / "models--acme--tiny-GGUF" / "blobs" / f"{sha256(tiny)}.incomplete"
    assert part.stat().st_size == 300_000  # what was written is kept for the next run

    from typer.testing import CliRunner

    from chatglm3_cli.cli.app import app

    r = CliRunner().invoke(app, ["pull", REPO])
    assert r.exit_code == ExitCode.DISK_FULL, r.output
    assert error_lines(r.stderr)[0].startswith("error: disk full while downloading")
    assert "connection lost" not in r.stderr


def test_a_wrong_content_range_has_its_own_message_and_keeps_the_partial(hub, tiny):
    part = hf_cache_dir() / "models--acme--tiny-GGUF" / "blobs" / f"{sha256(tiny)}.incomplete"
    part.parent.mkdir(parents=True)
    part.write_bytes(tiny.read_bytes()[:100_000])
    size = tiny.stat().st_size
    hub.content_range[FILE] = f"bytes 0-{size - 1}/{size}"  # the whole file, labelled as the rest
    rec = Recorder()
    with pytest.raises(E.RangeMismatchError, match=r"asked for bytes 100,000- .* sent 0-\d+/\d+ "
                                                 r"\(a wrong Content-Range\)"):
        fetch(parse_spec(REPO), progress=rec)
    assert not any(ev[0] == "note" and "retrying" in ev[1] for ev in rec.events)
    assert len(hub.gets(FILE)) == 1 and part.stat().st_size == 100_000
    p = run_cli("pull", REPO)
    assert p.returncode == ExitCode.DOWNLOAD_ERROR, p.stderr
    assert len(error_lines(p.stderr)) == 1 and "Content-Range" in p.stderr
    assert "connection lost" not in p.stderr
    hub.content_range.clear()
    p = run_cli("pull", REPO)  # a sane server again: it resumes from the kept bytes
    assert p.returncode == 0, p.stderr
    assert hub.gets(FILE)[-1].range == "bytes=100000-"


def test_an_http_500_from_a_chosen_endpoint_does_not_suggest_a_mirror(hub, tiny):
    hub.fail_with = 500
    p = run_cli("pull", REPO, "--endpoint", hub.url)
    assert p.returncode == ExitCode.NETWORK_ERROR, p.stderr
    [line] = error_lines(p.stderr)
    assert "answered HTTP 500" in line and "mirror such as" not in line and "hf-mirror" not in line
    assert f"check that {hub.url} is up" in line


def test_the_default_endpoint_still_suggests_a_mirror():
    hub = hub_http.Hub(hub_http.DEFAULT_ENDPOINT)
    assert "hf-mirror.com" in hub._network_error("x").hint


def test_credentials_in_the_endpoint_are_used_but_never_printed(hub, tiny):
    creds_url = hub.url.replace("http://", "http://alice:s3cr%40t@")
    p = run_cli("pull", REPO, "--endpoint", creds_url)
    assert p.returncode == 0, p.stderr
    assert "s3cr" not in p.stderr + p.stdout and "alice" not in p.stderr + p.stdout
    auth = {r.authorization for r in hub.requests}
    assert auth == {"Basic YWxpY2U6czNjckB0"}  # alice:s3cr@t, sent to the endpoint itself
    hub.fail_with = 500
    p = run_cli("pull", REPO, "--endpoint", creds_url)
    assert p.returncode == ExitCode.NETWORK_ERROR
    assert "s3cr" not in p.stderr and "alice" not in p.stderr and "answered HTTP 500" in p.stderr
    p = run_cli("pull", REPO, "--endpoint", "http://alice:s3cret@127.0.0.1:9")  # nothing listens
    assert p.returncode == ExitCode.NETWORK_ERROR
    assert "s3cret" not in p.stderr and "alice" not in p.stderr and "cannot reach" in p.stderr


@pytest.mark.parametrize("value", ["not a url", "ftp://example.com", "http://", "http://host:port"])
def test_an_endpoint_that_is_not_a_url_is_one_line_and_exit_2(value):
    p = run_cli("pull", "acme/x", "--endpoint", value)
    assert p.returncode == ExitCode.USAGE, p.stderr
    assert p.stderr.count("\n") == 1 and "is not an http(s) URL" in p.stderr
    assert "Traceback" not in p.stderr


def test_a_silent_endpoint_is_named_while_waiting_and_given_up_on(monkeypatch):
    """A server that accepts connections and never answers: a note says what we wait for, then
    the read timeout ends it with its own message."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)  # the kernel completes the handshake; nobody ever reads or answers
    port = srv.getsockname()[1]
    monkeypatch.setattr(hub_http, "WAIT_NOTE_S", 0.2)
    monkeypatch.setattr(hub_http, "TIMEOUT_S", 2.0)
    rec = Recorder()
    try:
        with pytest.raises(NetworkError, match=r"accepted the connection but sent no answer within 2 s"):
            fetch(parse_spec(REPO), endpoint=f"http://127.0.0.1:{port}", progress=rec)
    finally:
        srv.close()
    notes = [ev[1] for ev in rec.events if ev[0] == "note"]
    assert any(n.startswith(f"waiting for 127.0.0.1:{port} to answer ({REPO}") for n in notes), notes


def test_connecting_gives_up_sooner_than_reading(monkeypatch):
    """A host whose accept queue is full drops our SYN: connecting is given up on after
    CONNECT_TIMEOUT_S, while the read timeout stays long."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    fill = []
    for _ in range(4):  # fill the accept queue; the kernel then drops new SYNs
        c = socket.socket()
        c.setblocking(False)
        try:
            c.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fill.append(c)
    time.sleep(0.3)
    monkeypatch.setattr(hub_http, "CONNECT_TIMEOUT_S", 1.0)
    assert hub_http.TIMEOUT_S >= 30
    started = time.monotonic()
    try:
        with pytest.raises(NetworkError, match=r"cannot reach .*no answer to connecting within 1 s"):
            fetch(parse_spec(REPO), endpoint=f"http://127.0.0.1:{port}")
    finally:
        for c in fill:
            c.close()
        srv.close()
    assert time.monotonic() - started < 20  # well below the 30 s read timeout
