"""A small stand-in for ModelScope's HTTP API, for tests: the three GETs chatglm3 uses.

- GET /api/v1/models/{owner}/{repo}/revisions              {"Code": 200, "Data": {"RevisionMap": ...}}
- GET /api/v1/models/{owner}/{repo}/repo/files?Revision=R&Recursive=True
                                                            {"Code": 200, "Data": {"Files": [...]}}
- GET /api/v1/models/{owner}/{repo}/repo?Revision=R&FilePath=F   the bytes, with Range (206 / 416)

Built on tests/hubserver.py's server (its failure injection works here too: `drop_after`,
`corrupt`, `no_range`, `fail_with`, `requests`, `gated` answering 401 without a token).
A hostile ModelScope: `files[repo]` replaces the Files list sent, `revisions[repo]` the
RevisionMap, `raw[route]` ("revisions" or "files") the whole body, `sha256[file]` the Sha256
announced for that file.
"""
from __future__ import annotations

import re
from typing import Any, Optional
from urllib.parse import parse_qs, unquote, urlparse

from .hubserver import HubServer, _Handler, sha256_of


class ModelScopeServer(HubServer):
    def __init__(self, lifetime: float = 120.0) -> None:
        super().__init__(lifetime)
        self.RequestHandlerClass = _MSHandler
        self.files: dict[str, Any] = {}
        self.revisions: dict[str, Any] = {}
        self.raw: dict[str, bytes] = {}
        self.sha256: dict[str, Optional[str]] = {}


class _MSHandler(_Handler):
    server: ModelScopeServer

    def _route(self) -> None:
        self._record()
        if self.server.fail_with is not None:
            return self._error(self.server.fail_with, "ServerError", "something broke")
        url = urlparse(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        m = re.fullmatch(r"/api/v1/models/([^/]+/[^/]+)/(revisions|repo/files|repo)", path)
        if not m:
            return self._error(404, "NotFound", f"no route {path}")
        repo_id, route = m.groups()
        if route in ("revisions", "repo/files") and route.removeprefix("repo/") in self.server.raw:
            body = self.server.raw[route.removeprefix("repo/")]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return None
        repo = self._repo(repo_id)
        if repo is None:
            return None
        if route == "revisions":
            revmap = self.server.revisions.get(repo_id, {"Branches": [{"Revision": "master"}], "Tags": []})
            return self._json({"Code": 200, "Success": True, "Data": {"RevisionMap": revmap}})
        if route == "repo/files":
            if query.get("Revision") != ["master"] and repo_id not in self.server.revisions:
                return self._json({"Code": 10010205001, "Success": False, "Message": "revision not found",
                                   "Data": {}})
            files = self.server.files.get(repo_id)
            if files is None:
                files = [{"Name": n.rsplit("/", 1)[-1], "Path": n, "Type": "blob", "Size": p.stat().st_size,
                          "Sha256": self.server.sha256.get(n, sha256_of(p)), "Revision": repo.commit}
                         for n, p in sorted(repo.files.items())]
                files.append({"Name": "sub", "Path": "sub", "Type": "tree", "Size": 0})
            return self._json({"Code": 200, "Success": True, "Data": {"Files": files}})
        return self._download(repo, (query.get("FilePath") or [""])[0])

    def _download(self, repo: Any, name: str) -> None:
        p = repo.files.get(name)
        if p is None:
            return self._error(404, "NotFound", f"no file {name}")
        size = p.stat().st_size
        start, status = 0, 200
        rng = None if self.server.no_range else self.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-", rng.strip())
            if not m or int(m.group(1)) >= size:
                self.send_response(416)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            start, status = int(m.group(1)), 206
        self.send_response(status)
        self.send_header("Content-Length", str(size - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()
        self._send_body(p, name, start, size)
        return None
