"""A small stand-in for the Hugging Face Hub's HTTP API, for tests and manual runs.

Serves, on 127.0.0.1 and a random port, what huggingface_hub and our downloader use:
- GET  /api/models/{repo}                          model info with `siblings`
- GET  /api/models/{repo}/tree/{rev}[/{path}]      the file listing (paginated by Link headers)
- HEAD /{repo}/resolve/{rev}/{file}                X-Repo-Commit, ETag, X-Linked-Etag,
                                                   X-Linked-Size, Content-Length, Accept-Ranges
- GET  /{repo}/resolve/{rev}/{file}                the bytes, with Range support (206 / 416)
With `cdn=True`, resolve answers with a 302 to another origin (http://localhost:PORT/cdn/...),
as the real Hub redirects large files to its CDN.

Failure injection: `drop_after[file] = (nbytes, times)` cuts the next `times` GETs of that file
after `nbytes` body bytes; `corrupt` (a set of file names) flips a byte in what is sent;
`unavailable[file] = n` serves n more GETs, then 503s; `no_range` ignores Range headers;
`reset` drops connections with a TCP reset;
unknown repos answer 404 RepoNotFound, unknown files 404 EntryNotFound; `gated` repos 401.

A hostile or broken mirror: `headers[file]` replaces or adds headers of that file's resolve
answers (X-Repo-Commit, ETag, X-Linked-Etag ... set to '' to drop one); `listing_sha256[file]`
announces another sha256 in the listing; `content_range[file]` is sent as the Content-Range of
206 answers; `fail_with` answers every request with that HTTP status (500, say).
Every request is recorded in `requests` (method, path, Range, Authorization).

Bounded: daemon threads, and the server stops itself after `lifetime` seconds.

Manual use:  python tests/hubserver.py owner/repo[/name.gguf]=path/to/file.gguf [...] [--lifetime 600]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional
from urllib.parse import parse_qs, unquote, urlparse

CHUNK = 64 * 1024


@dataclass
class Seen:
    method: str
    path: str
    range: Optional[str]
    authorization: Optional[str]


@dataclass
class Repo:
    files: dict[str, Path]  # name in the repo -> local file served
    commit: str = field(default_factory=lambda: hashlib.sha1(os.urandom(8)).hexdigest())


_SHA_CACHE: dict[tuple[str, int, float], str] = {}


def sha256_of(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


class HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, lifetime: float = 120.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.repos: dict[str, Repo] = {}
        self.gated: set[str] = set()
        self.drop_after: dict[str, tuple[int, int]] = {}
        self.corrupt: set[str] = set()
        self.unavailable: dict[str, int] = {}  # file -> GETs still served before answering 503
        self.no_range = False  # ignore Range headers (answer 200 with the whole file)
        self.reset = False  # drop connections with a TCP reset instead of a clean close
        self.delay = 0.0  # seconds slept per 64 KiB chunk (to make transfers overlap)
        self.cdn = False
        self.headers: dict[str, dict[str, str]] = {}
        self.listing_sha256: dict[str, str] = {}
        self.content_range: dict[str, str] = {}
        self.fail_with: Optional[int] = None
        self.page_size = 1000
        self.requests: list[Seen] = []
        self.lock = threading.Lock()
        self._lifetime = lifetime
        self._thread: Optional[threading.Thread] = None
        self._timer: Optional[threading.Timer] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def add(self, repo_id: str, files: dict[str, Path]) -> Repo:
        repo = Repo({k: Path(v) for k, v in files.items()})
        self.repos[repo_id] = repo
        return repo

    def gets(self, name: str) -> list[Seen]:
        """The GETs of a file's bytes so far."""
        with self.lock:
            return [r for r in self.requests if r.method == "GET" and r.path.endswith("/" + name)]

    def start(self) -> "HubServer":
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self._lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.shutdown()
        self.server_close()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    server: HubServer
    timeout = 30

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _record(self) -> None:
        with self.server.lock:
            self.server.requests.append(Seen(self.command, urlparse(self.path).path,
                                             self.headers.get("Range"), self.headers.get("Authorization")))

    def _error(self, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data: object, headers: Optional[dict[str, str]] = None) -> None:
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _repo(self, repo_id: str) -> Optional[Repo]:
        if repo_id in self.server.gated and not self.headers.get("Authorization"):
            self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted.")
            return None
        repo = self.server.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", f"Repository not found: {repo_id}")
        return repo

    def do_HEAD(self) -> None:
        self._route()

    def do_GET(self) -> None:
        self._route()

    def _route(self) -> None:
        self._record()
        if self.server.fail_with is not None:
            return self._error(self.server.fail_with, "ServerError", "something broke")
        url = urlparse(self.path)
        path = unquote(url.path)
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
        if m:
            return self._tree(m.group(1), m.group(3) or "", parse_qs(url.query))
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/[^/]+)?", path)
        if m:
            return self._info(m.group(1))
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            return self._resolve(m.group(1), m.group(3))
        m = re.fullmatch(r"/cdn/([^/]+/[^/]+)/(.+)", path)
        if m:
            return self._resolve(m.group(1), m.group(2), from_cdn=True)
        self._error(404, "NotFound", f"no route {path}")

    def _entries(self, repo: Repo) -> list[dict]:
        out = []
        for name, p in sorted(repo.files.items()):
            size = p.stat().st_size
            sha = self.server.listing_sha256.get(name, sha256_of(p))
            out.append({"type": "file", "oid": hashlib.sha1(sha.encode()).hexdigest(), "size": size,
                        "path": name, "lfs": {"oid": sha, "size": size, "pointerSize": 134}})
        return out

    def _tree(self, repo_id: str, sub: str, query: dict[str, list[str]]) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        entries = [e for e in self._entries(repo) if e["path"].startswith(sub)]
        start = int(query.get("cursor", ["0"])[0])
        page = entries[start:start + self.server.page_size]
        headers = {}
        if start + self.server.page_size < len(entries):
            nxt = f"{self.server.url}/api/models/{repo_id}/tree/main?recursive=true&cursor={start + self.server.page_size}"
            headers["Link"] = f'<{nxt}>; rel="next"'
        self._json(page, headers)

    def _info(self, repo_id: str) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        self._json({"id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": False,
                    "siblings": [{"rfilename": e["path"], "size": e["size"],
                                  "lfs": {"sha256": e["lfs"]["oid"], "size": e["size"], "pointerSize": 134}}
                                 for e in self._entries(repo)]})

    def _resolve(self, repo_id: str, name: str, from_cdn: bool = False) -> None:
        repo = self.server.repos.get(repo_id) if from_cdn else self._repo(repo_id)  # CDN: signed URL
        if repo is None:
            return self._error(404, "RepoNotFound", repo_id) if from_cdn else None
        if self.command == "GET" and name in self.server.unavailable:
            with self.server.lock:
                self.server.unavailable[name] -= 1
                down = self.server.unavailable[name] < 0
            if down:
                return self._error(503, "Unavailable", "try again later")
        p = repo.files.get(name)
        if p is None:
            return self._error(404, "EntryNotFound", f"{name} does not exist in {repo_id}")
        size = p.stat().st_size
        sha = sha256_of(p)
        meta = {"X-Repo-Commit": repo.commit, "X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(size)}
        extra = self.server.headers.get(name, {})
        meta.update({k: v for k, v in extra.items() if k != "ETag"})
        meta = {k: v for k, v in meta.items() if v != ""}
        etag = extra.get("ETag", f'"{sha}"')
        if self.server.cdn and not from_cdn:
            self.send_response(302)
            port = self.server.server_address[1]
            self.send_header("Location", f"http://localhost:{port}/cdn/{repo_id}/{name}")
            for k, v in meta.items():
                self.send_header(k, v)
            if etag:
                self.send_header("ETag", etag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start, end = 0, size - 1
        status = 200
        rng = None if self.server.no_range else self.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if not m or int(m.group(1)) >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            status = 206
        self.send_response(status)
        if not from_cdn:
            for k, v in meta.items():
                self.send_header(k, v)
        if etag:
            self.send_header("ETag", etag)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == 206:
            self.send_header("Content-Range", self.server.content_range.get(name, f"bytes {start}-{end}/{size}"))
        self.end_headers()
        if self.command == "HEAD":
            return
        self._send_body(p, name, start, end + 1)

    def _send_body(self, p: Path, name: str, start: int, stop: int) -> None:
        limit = None
        with self.server.lock:
            if name in self.server.drop_after:
                nbytes, times = self.server.drop_after[name]
                limit = nbytes
                if times <= 1:
                    del self.server.drop_after[name]
                else:
                    self.server.drop_after[name] = (nbytes, times - 1)
        corrupt = name in self.server.corrupt
        sent = 0
        with open(p, "rb") as f:
            f.seek(start)
            pos = start
            while pos < stop:
                chunk = f.read(min(CHUNK, stop - pos))
                if not chunk:
                    break
                if corrupt and pos <= stop // 2 < pos + len(chunk):
                    i = stop // 2 - pos
                    chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1:]
                if limit is not None and sent + len(chunk) >= limit:
                    self.wfile.write(chunk[:limit - sent])
                    self.wfile.flush()
                    if self.server.reset:  # SO_LINGER 0: close() sends RST, the client sees an error
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                   struct.pack("ii", 1, 0))
                        self.connection.close()
                    else:
                        self.connection.shutdown(socket.SHUT_RDWR)  # drop the connection mid-file
                    self.close_connection = True
                    return
                try:
                    self.wfile.write(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    return
                sent += len(chunk)
                pos += len(chunk)
                if self.server.delay:
                    time.sleep(self.server.delay)


def main() -> None:
    ap = argparse.ArgumentParser(description="Serve GGUF files the way the Hugging Face Hub does.")
    ap.add_argument("files", nargs="+",
                    help="owner/repo[/name-in-repo.gguf]=path/to/file.gguf (repeat for more files)")
    ap.add_argument("--lifetime", type=float, default=600, help="stop after this many seconds")
    ap.add_argument("--drop-after", type=int, help="cut the first GET of each file after N bytes")
    ap.add_argument("--corrupt", action="store_true", help="flip a byte in every file sent")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds per 64 KiB chunk")
    args = ap.parse_args()
    server = HubServer(lifetime=args.lifetime)
    grouped: dict[str, dict[str, Path]] = {}
    for spec in args.files:
        target, _, path = spec.partition("=")
        owner, repo, *name = target.split("/", 2)
        grouped.setdefault(f"{owner}/{repo}", {})[name[0] if name else Path(path).name] = Path(path)
    for repo_id, files in grouped.items():
        server.add(repo_id, files)
        for name in files:
            if args.drop_after:
                server.drop_after[name] = (args.drop_after, 1)
            if args.corrupt:
                server.corrupt.add(name)
    server.delay = args.delay
    print(server.url, flush=True)
    server.start()
    try:
        while server._thread is not None and server._thread.is_alive():
            server._thread.join(0.5)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
