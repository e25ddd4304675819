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

import base64
import http.client
import json
import os
import re
import ssl
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException, HTTPResponse
from typing import Any, Callable, Optional
from urllib.parse import quote, unquote, urljoin, urlparse, urlunparse

from .. import env
from ..errors import EndpointError, HubAccessError, HubProtocolError, ModelNotOnHubError, NetworkError
from ..paths import hf_home
from .cachepaths import bad_repo_path, check_commit, check_etag, sha1_of_etag, sha256_of_etag

DEFAULT_ENDPOINT = "https://huggingface.co"
CONNECT_TIMEOUT_S = 10.0  # to open a connection (a silent host is given up on sooner)
TIMEOUT_S = 30.0  # per read once connected, not for the whole transfer
WAIT_NOTE_S = 3.0  # after this long without an answer, say what we are waiting for
_MAX_REDIRECTS = 8


def endpoint(override: Optional[str] = None) -> str:
    """The endpoint URL in force, checked: http(s), a host, nothing else odd. Raises EndpointError."""
    value = (override or "").strip() or (env.get("HF_ENDPOINT") or "").strip() or DEFAULT_ENDPOINT
    value = value.rstrip("/")
    try:
        p = urlparse(value)
        p.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError:
        p = None
    if (p is None or p.scheme not in ("http", "https") or not p.hostname or p.query or p.fragment
            or re.search(r"[\s\x00-\x1f\x7f]", value)):
        raise EndpointError(f"the Hub endpoint {redact(value)!r} is not an http(s) URL")
    return value


def redact(url: str) -> str:
    """`url` without the user:password@ part, for messages."""
    try:
        p = urlparse(url)
    except ValueError:
        return re.sub(r"//[^/@]*@", "//", url)
    if "@" not in p.netloc:
        return url
    return urlunparse(p._replace(netloc=p.netloc.rsplit("@", 1)[1]))


def _credentials(url: str) -> tuple[str, Optional[str]]:
    """(the URL without user:password@, a Basic Authorization value for them or None)."""
    p = urlparse(url)
    if "@" not in p.netloc:
        return url, None
    userinfo = p.netloc.rsplit("@", 1)[0]
    user, _, password = userinfo.partition(":")
    basic = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    return redact(url), f"Basic {basic}"


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
    commit: str  # 40 hex digits (checked)
    etag: str  # the sha256 for LFS files (what the HF cache names the blob); opaque otherwise
    size: int
    url: str  # where to GET the bytes (the resolve URL, or the CDN it redirects to)
    sha256: Optional[str] = None  # the LFS sha256, from the etag or the listing; None: unknown

    @property
    def git_sha1(self) -> Optional[str]:
        """The git blob sha1 a small file (kept in git, not LFS) has as its etag."""
        return sha1_of_etag(self.etag) if self.sha256 is None else None


def _origin(url: str) -> tuple[str, str, Optional[int]]:
    p = urlparse(url)
    return p.scheme, (p.hostname or "").lower(), p.port


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # we follow redirects ourselves, dropping the token off the Hub's origin


class _ConnectTimeout:
    """A connection that gives up on connecting (and the TLS handshake) after CONNECT_TIMEOUT_S,
    then waits up to its own timeout (TIMEOUT_S) for each read."""

    timeout: Any
    sock: Any

    def connect(self) -> None:
        read = self.timeout
        self.timeout = min(CONNECT_TIMEOUT_S, read) if isinstance(read, (int, float)) else CONNECT_TIMEOUT_S
        try:
            super().connect()  # type: ignore[misc]
        except TimeoutError:
            raise _ConnectTimedOut(f"no answer to connecting within {self.timeout:g} s") from None
        finally:
            self.timeout = read
        self.sock.settimeout(read)


class _ConnectTimedOut(OSError):
    pass


class _HTTPConnection(_ConnectTimeout, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_ConnectTimeout, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_HTTPConnection, req)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(context=context)
        self._ctx = context

    def https_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_HTTPSConnection, req, context=self._ctx)


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
    return urllib.request.build_opener(_NoRedirect, _HTTPHandler, _HTTPSHandler(ctx))


class Hub:
    """One endpoint and token; every call raises our typed errors, never urllib's.

    `notify` (optional) hears "waiting for ..." when an answer is slow to come."""

    def __init__(self, endpoint_url: Optional[str] = None, hf_token: Optional[str] = None, *,
                 notify: Optional[Callable[[str], None]] = None) -> None:
        self.endpoint, self._basic = _credentials(endpoint(endpoint_url))
        self.chosen = self.endpoint != DEFAULT_ENDPOINT  # a mirror the user picked
        self.token = hf_token if hf_token is not None else token()
        self.notify = notify
        self._opener = _opener()

    def _network_error(self, message: str) -> NetworkError:
        err = NetworkError(message)
        if self.chosen:  # suggesting a mirror to someone using one helps nobody
            err.hint = (f"check that {self.endpoint} is up and serves the Hugging Face Hub API "
                        "(HF_ENDPOINT / --endpoint); models already downloaded work with --offline")
        return err

    # low level ---------------------------------------------------------------------------

    def request(self, method: str, url: str, *, headers: Optional[dict[str, str]] = None,
                what: str = "", follow_off_origin: bool = True) -> HTTPResponse:
        """Send one request, following redirects; the token only goes to the endpoint's origin."""
        hub_origin = _origin(self.endpoint)
        for _ in range(_MAX_REDIRECTS):
            if urlparse(url).scheme not in ("http", "https"):
                raise HubProtocolError(f"{self.endpoint} redirected to a non-HTTP URL {redact(url)!r}")
            h = {"User-Agent": "chatglm3-cli", "Accept-Encoding": "identity", **(headers or {})}
            if _origin(url) == hub_origin and (self._basic or self.token):
                h["Authorization"] = self._basic or f"Bearer {self.token}"
            req = urllib.request.Request(url, method=method, headers=h)
            try:
                return self._open(req, what or redact(url))
            except urllib.error.HTTPError as e:
                if e.code in (301, 302, 303, 307, 308) and e.headers.get("Location"):
                    target = urljoin(url, e.headers["Location"])
                    if not follow_off_origin and _origin(target) != _origin(url):
                        return e  # type: ignore[return-value]  # the redirect carries the metadata
                    e.close()
                    url = target
                    continue
                raise self._http_error(e, what) from None
            except urllib.error.URLError as e:  # connecting failed (refused, unknown host, timeout)
                raise self._network_error(f"cannot reach {self.endpoint}: {e.reason}") from e
            except TimeoutError as e:
                raise self._network_error(f"{self.endpoint} accepted the connection but sent no answer "
                                          f"within {TIMEOUT_S:g} s") from e
            except (OSError, HTTPException, ValueError) as e:
                raise self._network_error(f"cannot reach {self.endpoint}: {e}") from e
        raise self._network_error(f"too many redirects from {redact(url)}")

    def _open(self, req: urllib.request.Request, what: str) -> HTTPResponse:
        """Open `req`; if no answer has come after WAIT_NOTE_S, say what we are waiting for."""
        timer = None
        if self.notify is not None:
            host = urlparse(req.full_url).netloc
            timer = threading.Timer(WAIT_NOTE_S, self.notify, [
                f"waiting for {host} to answer ({what}; giving up after {CONNECT_TIMEOUT_S:g} s "
                f"to connect, {TIMEOUT_S:g} s to answer)"])
            timer.daemon = True
            timer.start()
        try:
            return self._opener.open(req, timeout=TIMEOUT_S)
        finally:
            if timer is not None:
                timer.cancel()

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
        return self._network_error(f"{self.endpoint} answered HTTP {e.code} for {what or redact(e.url)}")

    # the Hub API -------------------------------------------------------------------------

    def list_files(self, repo_id: str, revision: str = "main") -> list[RemoteFile]:
        """Every file of a repo with its size and sha256 (the tree API, following pages). A listing
        with an unsafe path (absolute, `..`, ...) is refused as a whole: the server is hostile."""
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
            if not isinstance(page, list):
                raise HubProtocolError(f"{self.endpoint} sent a bad file listing for {repo_id} (not a list)")
            out.extend(f for f in map(self._listed, page) if f is not None)
        return out

    def _listed(self, entry: Any) -> Optional[RemoteFile]:
        if not isinstance(entry, dict) or entry.get("type") != "file":
            return None
        lfs = entry["lfs"] if isinstance(entry.get("lfs"), dict) else {}
        return listed_file(self.endpoint, entry.get("path"), lfs.get("size", entry.get("size", 0)),
                           lfs.get("oid") or lfs.get("sha256"))

    def file_meta(self, repo_id: str, filename: str, revision: str = "main") -> FileMeta:
        """HEAD on the resolve URL: commit, etag (= sha256 for LFS), size and download URL, each
        checked before anything is built from it."""
        who = self.endpoint
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
            raise NetworkError(f"{who} did not send the file metadata of {repo_id}/{filename} "
                               "(X-Repo-Commit, ETag, size): is it a Hugging Face Hub endpoint?")
        if not size.strip().isdigit():
            raise HubProtocolError(f"{who} sent an invalid size {size[:40]!r} for {repo_id}/{filename}")
        return FileMeta(check_commit(commit, who), check_etag(etag, who), int(size), location,
                        sha256_of_etag(etag))

    def open_range(self, url: str, start: int) -> HTTPResponse:
        """GET from byte `start` (a 200 answer means the server ignored the Range)."""
        headers = {"Range": f"bytes={start}-"} if start else {}
        return self.request("GET", url, headers=headers, what=urlparse(url).path)


def listed_file(who: str, path: Any, size: Any, sha256: Any) -> RemoteFile:
    """One entry of a file listing (the Hub's or ModelScope's), checked: a safe relative path, a
    non-negative integer size; a sha256 that is not 64 hex digits is dropped (unknown)."""
    why = bad_repo_path(path)
    if why is not None or not isinstance(path, str):
        raise HubProtocolError(f"{who} sent a file listing with an unsafe path {str(path)[:80]!r} ({why})")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise HubProtocolError(f"{who} sent a bad size for {path}: {str(size)[:40]!r}")
    return RemoteFile(path, size, sha256_of_etag(sha256) if isinstance(sha256, str) else None)


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
