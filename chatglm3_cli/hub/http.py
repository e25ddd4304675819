"""The few Hub HTTP calls we need: the file listing, a file's metadata (HEAD on `resolve`), and a
ranged GET. Standard library only, on purpose:

- huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE once, at import time; here every setting is
  read at call time, so `--endpoint`, a changed environment and tests all behave the same.
- huggingface_hub 2.x restarts interrupted downloads from zero; we need Range requests.
- its request headers can trigger a side request to huggingface.co (agent detection), which a
  user of a mirror does not expect.
- it may hand large files to Xet, which talks to Xet servers directly and so bypasses a mirror;
  our GET always goes to HF_ENDPOINT's `resolve` URL (and wherever that redirects).
"""
from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException, HTTPResponse
from typing import Any, Optional
from urllib.parse import quote, urljoin, urlparse

from .. import env
from ..errors import HubAccessError, ModelNotOnHubError, NetworkError
from ..paths import hf_home

DEFAULT_ENDPOINT = "https://huggingface.co"
TIMEOUT_S = 30.0  # per connect/read, not for the whole transfer
_MAX_REDIRECTS = 8


def endpoint(override: Optional[str] = None) -> str:
    value = override or env.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    return value.rstrip("/")


def offline(override: Optional[bool] = None) -> bool:
    if override:
        return True
    return env.flag("HF_HUB_OFFLINE") or env.flag("TRANSFORMERS_OFFLINE")


def token() -> Optional[str]:
    """HF_TOKEN, else the token `hf auth login` stored (HF_TOKEN_PATH or HF_HOME/token)."""
    value = env.get("HF_TOKEN")
    if value:
        return value
    path = env.get("HF_TOKEN_PATH") or str(hf_home() / "token")
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as f:
            return f.read().strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: Optional[str]  # the LFS oid; None for small files kept in git


@dataclass(frozen=True)
class FileMeta:
    commit: str
    etag: str  # the sha256 for LFS files (what the HF cache names the blob)
    size: int
    url: str  # where to GET the bytes (the resolve URL, or the CDN it redirects to)


def _origin(url: str) -> tuple[str, str, Optional[int]]:
    p = urlparse(url)
    return p.scheme, (p.hostname or "").lower(), p.port


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # we follow redirects ourselves, dropping the token off the Hub's origin


def _opener() -> urllib.request.OpenerDirector:
    """Built per Hub: the proxy settings (HTTPS_PROXY, NO_PROXY) are read now, not at import.
    Certificates: the system's (SSL_CERT_FILE is honoured) plus certifi's bundle when installed
    (httpx brings it), since some Python installs ship without a usable system store."""
    ctx = ssl.create_default_context()
    try:
        import certifi

        ctx.load_verify_locations(certifi.where())
    except (ImportError, OSError):
        pass
    return urllib.request.build_opener(_NoRedirect, urllib.request.HTTPSHandler(context=ctx))


class Hub:
    """One endpoint and token; every call raises our typed errors, never urllib's."""

    def __init__(self, endpoint_url: Optional[str] = None, hf_token: Optional[str] = None) -> None:
        self.endpoint = endpoint(endpoint_url)
        self.token = hf_token if hf_token is not None else token()
        self._opener = _opener()

    # low level ---------------------------------------------------------------------------

    def request(self, method: str, url: str, *, headers: Optional[dict[str, str]] = None,
                what: str = "", follow_off_origin: bool = True) -> HTTPResponse:
        """Send one request, following redirects; the token only goes to the endpoint's origin."""
        hub_origin = _origin(self.endpoint)
        for _ in range(_MAX_REDIRECTS):
            h = {"User-Agent": "chatglm3-cli", "Accept-Encoding": "identity", **(headers or {})}
            if self.token and _origin(url) == hub_origin:
                h["Authorization"] = f"Bearer {self.token}"
            req = urllib.request.Request(url, method=method, headers=h)
            try:
                return self._opener.open(req, timeout=TIMEOUT_S)
            except urllib.error.HTTPError as e:
                if e.code in (301, 302, 303, 307, 308) and e.headers.get("Location"):
                    target = urljoin(url, e.headers["Location"])
                    if not follow_off_origin and _origin(target) != _origin(url):
                        return e  # type: ignore[return-value]  # the redirect carries the metadata
                    e.close()
                    url = target
                    continue
                raise self._http_error(e, what) from None
            except (TimeoutError, urllib.error.URLError, OSError, HTTPException) as e:
                reason = getattr(e, "reason", None) or e
                raise NetworkError(f"cannot reach {self.endpoint}: {reason}") from e
        raise NetworkError(f"too many redirects from {url}")

    def _http_error(self, e: urllib.error.HTTPError, what: str) -> Exception:
        code = e.headers.get("X-Error-Code", "")
        e.close()
        if code == "RepoNotFound" or (e.code == 404 and not code and "/api/" in e.url):
            # the Hub answers 401 RepoNotFound for private repos too, so as not to reveal them
            return ModelNotOnHubError(f"no model repo {what} on {self.endpoint}",
                                      hint="check the spelling of owner/repo, or set HF_TOKEN for a private repo")
        if code == "GatedRepo" or e.code in (401, 403):
            return HubAccessError(f"{what or self.endpoint}: access denied (HTTP {e.code}: gated or private)")
        if e.code == 404:
            return ModelNotOnHubError(f"{what} not found on {self.endpoint}")
        return NetworkError(f"{self.endpoint} answered HTTP {e.code} for {what or e.url}")

    # the Hub API -------------------------------------------------------------------------

    def list_files(self, repo_id: str, revision: str = "main") -> list[RemoteFile]:
        """Every file of a repo with its size and sha256 (the tree API, following pages)."""
        url: Optional[str] = (f"{self.endpoint}/api/models/{repo_id}/tree/{quote(revision, safe='')}"
                              "?recursive=true&expand=false")
        out: list[RemoteFile] = []
        while url:
            with self.request("GET", url, what=repo_id) as r:
                try:
                    page = json.loads(r.read())
                except (ValueError, OSError, HTTPException) as e:
                    raise NetworkError(f"{self.endpoint} sent a bad file listing for {repo_id}") from e
                url = _next_link(r.headers.get("Link"), url)
            for entry in page:
                if entry.get("type") != "file":
                    continue
                lfs = entry.get("lfs") or {}
                out.append(RemoteFile(entry["path"], int(lfs.get("size", entry.get("size", 0))),
                                      lfs.get("oid") or lfs.get("sha256")))
        return out

    def file_meta(self, repo_id: str, filename: str, revision: str = "main") -> FileMeta:
        """HEAD on the resolve URL: commit, etag (= sha256 for LFS), size and download URL."""
        url = f"{self.endpoint}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(filename)}"
        r = self.request("HEAD", url, what=f"{repo_id}/{filename}", follow_off_origin=False)
        with r:
            h = r.headers
            commit = h.get("X-Repo-Commit")
            etag = _normalize_etag(h.get("X-Linked-Etag") or h.get("ETag"))
            redirected = 300 <= r.getcode() < 400  # to a CDN: the metadata is on the redirect
            size = h.get("X-Linked-Size") or (None if redirected else h.get("Content-Length"))
            location = urljoin(url, h["Location"]) if redirected else r.geturl()
        if not commit or not etag or size is None:
            raise NetworkError(f"{self.endpoint} did not send the file metadata of {repo_id}/{filename} "
                               "(X-Repo-Commit, ETag, size): is it a Hugging Face Hub endpoint?")
        return FileMeta(commit, etag, int(size), location)

    def open_range(self, url: str, start: int) -> HTTPResponse:
        """GET from byte `start` (a 200 answer means the server ignored the Range)."""
        headers = {"Range": f"bytes={start}-"} if start else {}
        return self.request("GET", url, headers=headers, what=urlparse(url).path)


def _normalize_etag(etag: Optional[str]) -> Optional[str]:
    if not etag:
        return None
    return etag.removeprefix("W/").strip('"')


def _next_link(link: Optional[str], base: str) -> Optional[str]:
    """The rel="next" URL of a Link header (the Hub paginates listings this way)."""
    if not link:
        return None
    for part in link.split(","):
        if 'rel="next"' in part:
            target = part.split(";")[0].strip().strip("<>")
            return urljoin(base, target)
    return None
