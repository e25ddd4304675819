"""`chatglm3 serve` against hostile clients and hostile web pages: a real server process on
127.0.0.1, raw sockets where a client library would be too polite."""
from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .serverproc import Server

ORIGINS = "https://app.example, http://*.trusted.test"


@pytest.fixture(scope="module")
def server(fixtures, tmp_path_factory):
    # 256 files: the connection cap comes out at 192 (connections.RESERVED_FDS below it).
    srv = Server(fixtures.path("tiny"), tmp_path_factory.mktemp("hostile"), "--parallel", "2", "--ctx", "256",
                 env={"CHATGLM3_READ_TIMEOUT": "3", "CHATGLM3_ORIGINS": ORIGINS}, max_files=256)
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)


def chat(srv: Server, **body) -> httpx.Response:
    body.setdefault("messages", [{"role": "user", "content": "hi"}])
    body.setdefault("max_tokens", 8)
    with srv.http() as h:
        return h.post("/v1/chat/completions", json=body)


def schema_format(schema) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def alive(srv: Server) -> None:
    assert srv.proc.poll() is None, "".join(srv.stderr)
    assert chat(srv).status_code == 200


# finding 1 and 3: schemas that crashed the server or took gigabytes ---------------------------

def _anyof(depth: int) -> dict:
    node: dict = {"type": "string"}
    for _ in range(depth):
        node = {"anyOf": [node, {"type": "null"}]}
    return node


HOSTILE_SCHEMAS = {
    "maxLength 1e6 (segfault in llama.cpp's parser)": {"type": "string", "maxLength": 1000000},
    "maxLength 20000 (segfault)": {"type": "string", "maxLength": 20000},
    "minLength 1e9 (10 GB in the converter)": {"type": "string", "minLength": 1000000000},
    "enum of 100,000 (stalls every client)": {"enum": [f"v{i}" for i in range(100000)]},
    "anyOf nested 200 deep (RecursionError)": _anyof(200),
    "anyOf nested 20 deep": _anyof(20),
    "pattern a{0,100000}": {"type": "string", "pattern": "^a{0,100000}$"},
    "array of 1e7 items": {"type": "array", "items": {"type": "boolean"}, "minItems": 10000000},
}


@pytest.mark.parametrize("name", list(HOSTILE_SCHEMAS))
def test_a_hostile_schema_is_a_400_and_the_server_lives(server, name):
    started = time.monotonic()
    resp = chat(server, response_format=schema_format(HOSTILE_SCHEMAS[name]))
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["type"] == "invalid_request_error"
    # the schema's own check, or (nested past 64 levels) the body's
    assert (err["param"] or "").startswith("response_format") or err["code"] == "invalid_json", err
    assert len(resp.content) < 1000  # a reason, not the grammar
    assert time.monotonic() - started < 60
    alive(server)


def test_the_same_schema_inside_a_batch_record_is_a_record_error(fixtures, tmp_path):
    import subprocess
    import sys

    from .serverproc import child_env

    records = tmp_path / "in.jsonl"
    bad = {"task": "extract", "id": "bad", "text": "x", "schema": {"type": "string", "maxLength": 1000000}}
    good = {"task": "extract", "id": "good", "text": "x", "schema": {"type": "boolean"}}
    records.write_text(json.dumps(bad) + "\n" + json.dumps(good) + "\n")
    out = tmp_path / "out.jsonl"
    run = subprocess.run([sys.executable, "-m", "chatglm3_cli", "batch", str(records), "-o", str(out),
                          "-m", str(fixtures.path("tiny")), "--max-tokens", "8"],
                         capture_output=True, text=True, env=child_env(tmp_path), timeout=300)
    assert run.returncode >= 0, run.stderr  # not killed by a signal
    lines = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert "maxLength" in json.dumps(lines["bad"]["error"]), lines
    assert lines["good"].get("error") is None and lines["good"]["output"] in (True, False), lines


@pytest.mark.parametrize("schema,kind", [({"type": "integer"}, int), ({"type": "boolean"}, bool),
                                         ({"type": "null"}, type(None)),
                                         ({"type": "string", "maxLength": 6}, str),
                                         ({"type": "number"}, (int, float))])
def test_a_primitive_top_level_schema_is_answered_with_that_type(server, schema, kind):
    resp = chat(server, response_format=schema_format(schema), max_tokens=48, temperature=0)
    assert resp.status_code == 200, resp.text
    choice = resp.json()["choices"][0]
    assert choice["finish_reason"] == "stop", choice  # the grammar ends the answer
    value = json.loads(choice["message"]["content"])
    assert isinstance(value, kind) and not (kind is int and isinstance(value, bool))


# finding 8: typed errors where there was a 500 -----------------------------------------------

@pytest.mark.parametrize("raw", [
    b'{"messages": [{"role": "user", "content": "\\ud800"}]}',                     # a lone surrogate
    b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1' + b"0" * 5000 + b"}",
    b'{"messages": [{"role": "user", "content": "hi"}], "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"messages": [{"role": "user", "content": "hi"}], "x": ' + b"[" * 100 + b"]" * 100 + b"}",
])
def test_bodies_that_were_500s_are_400s(server, raw):
    with server.http() as h:
        resp = h.post("/v1/chat/completions", content=raw, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["code"] == "invalid_json"


def test_brackets_inside_strings_are_text_not_nesting(server):
    """The depth check skips strings, escaped quotes and backslashes included."""
    content = 'say \\" ' + "[" * 200 + ' \\ {{{ "'
    resp = chat(server, messages=[{"role": "user", "content": content}], max_tokens=1)
    assert resp.status_code == 200, resp.text


# finding 2: web pages ------------------------------------------------------------------------

def _post(server, headers, content=b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}'):
    with server.http() as h:
        return h.post("/v1/chat/completions", content=content, headers=headers)


def test_simple_cross_site_requests_are_refused(server):
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        resp = _post(server, {"Content-Type": kind} if kind else {})
        assert resp.status_code == 415, (kind, resp.text)
        assert resp.json()["error"]["code"] == "unsupported_media_type"
    assert _post(server, {"Content-Type": "application/json; charset=utf-8"}).status_code == 200


def test_ollamas_curl_style_bodies_pass_unless_a_browser_sent_them(server):
    """Ollama's documented use is `curl -d '{...}'` (a form type, no Origin): accepted on /api/...;
    the same body from a page (an Origin or Sec-Fetch-Site header) is refused in Ollama's shape."""
    body = b'{"model": "m", "prompt": "hi", "stream": false, "options": {"num_predict": 2}}'
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with server.http() as h:
        assert h.post("/api/generate", content=body, headers=form).status_code == 200
        for browser in ({"Origin": server.url}, {"Sec-Fetch-Site": "cross-site"}):
            resp = h.post("/api/generate", content=body, headers={**form, **browser})
            assert resp.status_code == 415, (browser, resp.text)
            assert set(resp.json()) == {"error"} and "application/json" in resp.json()["error"]
        resp = h.post("/api/generate", content=body, headers={**form, "Origin": "https://evil.example"})
        assert resp.status_code == 403 and set(resp.json()) == {"error"}
        # the OpenAI endpoints stay strict: their clients always send JSON
        assert h.post("/v1/completions", content=b'{"prompt": "hi"}', headers=form).status_code == 415


def test_foreign_origins_are_refused_same_and_allowed_ones_pass(server):
    json_type = {"Content-Type": "application/json"}
    for origin in ("https://evil.example", "null", "http://127.0.0.1.evil.example", "https://app.example.evil"):
        resp = _post(server, {**json_type, "Origin": origin})
        assert resp.status_code == 403, (origin, resp.text)
        with server.http() as h:
            assert h.get("/v1/models", headers={"Origin": origin}).status_code == 403
    for origin in (server.url, "https://app.example", "http://a.trusted.test"):
        resp = _post(server, {**json_type, "Origin": origin})
        assert resp.status_code == 200, origin
        # an allow-listed page may read the answer (CORS); the server's own page needs nothing
        assert resp.headers.get("access-control-allow-origin") == (None if origin == server.url else origin)


def test_an_allowed_page_gets_its_preflight_answered_a_foreign_one_not(server):
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization,content-type"}
    with server.http() as h:
        ok = h.options("/v1/chat/completions", headers={**ask, "Origin": "https://app.example"})
        assert ok.status_code == 204 and ok.headers["access-control-allow-origin"] == "https://app.example"
        assert "Authorization" in ok.headers["access-control-allow-headers"]
        bad = h.options("/v1/chat/completions", headers={**ask, "Origin": "https://evil.example"})
        assert bad.status_code == 403 and "access-control-allow-origin" not in bad.headers


def test_a_rebound_host_name_is_refused(server):
    port = server.url.rsplit(":", 1)[1]
    with server.http() as h:
        for host in (f"evil.example:{port}", "attacker.test"):
            resp = h.get("/v1/models", headers={"Host": host})
            assert resp.status_code == 421, (host, resp.text)
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", "app.example"):
            assert h.get("/v1/models", headers={"Host": host}).status_code == 200, host


# finding 5: slow clients ---------------------------------------------------------------------

def _connect(server) -> socket.socket:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=60)
    return sock


def _closed_within(sock: socket.socket, seconds: float, drip: bytes = b"") -> tuple[bool, bytes]:
    """Whether the server closes the connection within ``seconds``, sending ``drip`` each second."""
    got = b""
    deadline = time.monotonic() + seconds
    sock.settimeout(1.0)
    while time.monotonic() < deadline:
        try:
            if drip:
                sock.sendall(drip)
            data = sock.recv(4096)
            if not data:
                return True, got
            got += data
        except TimeoutError:
            continue
        except OSError:  # reset
            return True, got
    return False, got


def test_slowloris_headers_and_a_missing_body_are_cut_off(server):
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    socks = [_connect(server) for _ in range(40)]
    for s in socks:
        s.sendall(head)
    body_sock = _connect(server)
    body_sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Authorization: Bearer " + server.api_key.encode() + b"\r\nContent-Length: 1000\r\n\r\n{")
    try:
        with ThreadPoolExecutor(len(socks)) as pool:
            drips = pool.map(lambda s: _closed_within(s, 40, b"X-a: b\r\n"), socks)
            alive(server)  # a real request is answered meanwhile
            closed, got = _closed_within(body_sock, 40)
            results = list(drips)
        assert closed and b" 408 " in got.split(b"\r\n", 1)[0], got[:200]
        assert all(c for c, _ in results), sum(1 for c, _ in results if not c)
    finally:
        for s in socks + [body_sock]:
            s.close()


def test_connections_past_the_cap_get_503_not_file_errors(server):
    socks = []
    try:
        for _ in range(230):  # over the cap of 192
            socks.append(_connect(server))
        refused = 0
        for s in socks[-30:]:
            closed, got = _closed_within(s, 5)
            refused += closed and b" 503 " in got.split(b"\r\n", 1)[0]
        assert refused >= 20
        assert any("connections open" in line for line in server.stderr), "".join(server.stderr)[-3000:]
    finally:
        for s in socks:
            s.close()
    deadline = time.monotonic() + 60
    while True:  # the idle ones are gone after the read timeout: requests are answered again
        try:
            alive(server)
            break
        except (AssertionError, httpx.HTTPError):
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    assert not any("Too many open files" in line for line in server.stderr)
