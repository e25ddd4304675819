"""Models from ModelScope (modelscope.cn): three plain GETs, then the Hub's own downloader.

- the revisions:   GET /api/v1/models/{owner}/{repo}/revisions
- the file list:   GET /api/v1/models/{owner}/{repo}/repo/files?Revision=R&Recursive=True
                   (each file with its Path, Size and Sha256)
- the bytes:       GET /api/v1/models/{owner}/{repo}/repo?Revision=R&FilePath=F (takes Range)

The `modelscope` package is not used: it brings torch-sized dependencies for what these three
requests do, reads its settings at import, and downloads without our resume, lock and checks.
The download itself is hub/download.py's (ranged, sha256-checked, locked, resumable), into a
cache of the Hugging Face layout of its own (`paths.modelscope_cache_dir()`), so that a repo
named alike on both sites never mixes files.

The server is trusted no more than a Hub mirror: a revision is a short plain name, a file path
passes `bad_repo_path`, a size is a non-negative integer, a sha256 is 64 hex digits (anything
else is dropped, and the file is checked by size with a warning, as download.py does).
"""
from __future__ import annotations

import hashlib
import json
import re
from http.client import HTTPException
from typing import Any, Callable, Optional
from urllib.parse import quote, urlencode

from .. import env
from ..errors import EndpointError, HubAccessError, HubProtocolError, ModelNotOnHubError, NetworkError
from .http import FileMeta, Hub, RemoteFile, _credentials, _opener, listed_file, redact
from .http import endpoint as _check_endpoint

DEFAULT_DOMAIN = "www.modelscope.cn"
DEFAULT_REVISION = "master"  # ModelScope's default branch
MAX_JSON_BYTES = 32 * 1024 * 1024  # a listing of thousands of files is well under this
_REVISION_RE = re.compile(r"[A-Za-z0-9][\w.-]{0,99}")


def endpoint() -> str:
    """MODELSCOPE_DOMAIN as the modelscope package takes it (a host name, https implied), or a
    full http(s) URL (a mirror, or a test server); checked like HF_ENDPOINT."""
    value = env.get("MODELSCOPE_DOMAIN") or DEFAULT_DOMAIN
    url = value if "://" in value else f"https://{value}"
    try:
        return _check_endpoint(url)
    except EndpointError:
        raise EndpointError(f"MODELSCOPE_DOMAIN {redact(value)[:100]!r} is not a host name or an "
                            "http(s) URL") from None


def token() -> Optional[str]:
    """MODELSCOPE_API_TOKEN, sent as `Authorization: Bearer` to ModelScope's own origin only."""
    return env.get("MODELSCOPE_API_TOKEN")


class ModelScope(Hub):
    """The ModelScope API with the Hub client's transport: timeouts, redirects that drop the
    token off the origin, typed errors. `list_files` and `file_meta` answer as the Hub's do, so
    resolve.py and download.py treat both alike."""

    def __init__(self, endpoint_url: Optional[str] = None, ms_token: Optional[str] = None, *,
                 notify: Optional[Callable[[str], None]] = None) -> None:
        self.endpoint, self._basic = _credentials(endpoint_url or endpoint())
        self.chosen = self.endpoint != f"https://{DEFAULT_DOMAIN}"
        self.token = ms_token if ms_token is not None else token()
        self.notify = notify
        self._opener = _opener()
        self._listings: dict[str, tuple[str, list[RemoteFile]]] = {}

    def _network_error(self, message: str) -> NetworkError:
        err = NetworkError(message)
        err.hint = (f"check that {self.endpoint} is reachable (MODELSCOPE_DOMAIN), or use the Hub "
                    "(CHATGLM3_SOURCE=hub); models already downloaded work with --offline")
        return err

    def _http_error(self, e: Any, what: str) -> Exception:
        e.close()
        if e.code == 404:
            return ModelNotOnHubError(f"no model repo {what} on {self.endpoint}",
                                      hint="check the spelling of OWNER/REPO on modelscope.cn")
        if e.code in (401, 403):
            return HubAccessError(f"{what or self.endpoint}: access denied on ModelScope (HTTP {e.code})",
                                  hint="set MODELSCOPE_API_TOKEN for a private repo")
        return self._network_error(f"{self.endpoint} answered HTTP {e.code} for {what or redact(e.url)}")

    def _api(self, path: str, query: dict[str, str], what: str) -> Any:
        """GET a ModelScope API path; its `Data`, once the envelope is checked."""
        url = f"{self.endpoint}/api/v1/models/{path}" + (f"?{urlencode(query)}" if query else "")
        with self.request("GET", url, what=what) as r:
            try:
                body = r.read(MAX_JSON_BYTES + 1)
                if len(body) > MAX_JSON_BYTES:
                    raise HubProtocolError(f"{self.endpoint} sent more than {MAX_JSON_BYTES:,} bytes "
                                           f"for {what}")
                doc = json.loads(body)
            except (ValueError, OSError, HTTPException, RecursionError) as e:
                raise HubProtocolError(f"{self.endpoint} sent a bad answer for {what} (not JSON)") from e
        if not isinstance(doc, dict) or not isinstance(doc.get("Data"), dict):
            raise HubProtocolError(f"{self.endpoint} sent a bad answer for {what} (no Data object)")
        code = doc.get("Code", 200)
        if code not in (200, "200") or doc.get("Success") is False:
            msg = str(doc.get("Message", ""))[:120]
            raise ModelNotOnHubError(f"{self.endpoint} has no {what}: {msg!r}" if msg else
                                     f"{self.endpoint} has no {what}")
        return doc["Data"]

    def revision(self, repo_id: str) -> str:
        """The branch to read: `master` when the repo has it, else its first branch, else its
        newest tag (the revisions API lists both)."""
        data = self._api(f"{_quote_repo(repo_id)}/revisions", {}, repo_id)
        revmap = data.get("RevisionMap") if isinstance(data.get("RevisionMap"), dict) else {}
        names = []
        for kind in ("Branches", "Tags"):
            entries = revmap.get(kind)
            for entry in entries if isinstance(entries, list) else []:
                name = entry.get("Revision") if isinstance(entry, dict) else None
                if isinstance(name, str) and _REVISION_RE.fullmatch(name):
                    names.append(name)
                elif name is not None:
                    raise HubProtocolError(f"{self.endpoint} sent an invalid revision name "
                                           f"{str(name)[:60]!r} for {repo_id}")
        if not names or DEFAULT_REVISION in names:
            return DEFAULT_REVISION
        return names[0]

    def list_files(self, repo_id: str, revision: str = "") -> list[RemoteFile]:
        """Every file of the repo at its revision, with size and sha256; one unsafe entry refuses
        the whole listing (the server is hostile)."""
        rev = revision or self.revision(repo_id)
        data = self._api(f"{_quote_repo(repo_id)}/repo/files", {"Revision": rev, "Recursive": "True"}, repo_id)
        entries = data.get("Files")
        if not isinstance(entries, list):
            raise HubProtocolError(f"{self.endpoint} sent a bad file listing for {repo_id} (no Files list)")
        out = [f for f in map(self._listed_ms, entries) if f is not None]
        self._listings[repo_id] = (rev, out)
        return out

    def _listed_ms(self, entry: Any) -> Optional[RemoteFile]:
        if not isinstance(entry, dict) or entry.get("Type") not in ("blob", "file"):
            return None  # a folder ("tree")
        return listed_file(self.endpoint, entry.get("Path"), entry.get("Size"), entry.get("Sha256"))

    def file_meta(self, repo_id: str, filename: str, revision: str = "") -> FileMeta:
        """Built from the listing (no HEAD: ModelScope's listing has what the Hub's headers
        carry). The snapshot folder is named by a hash of the revision, since ModelScope names
        no commit there; the same revision finds the same folder again."""
        rev, files = self._listings.get(repo_id) or ("", [])
        if not files or (revision and revision != rev):
            files = self.list_files(repo_id, revision)
            rev = self._listings[repo_id][0]
        found = next((f for f in files if f.path == filename), None)
        if found is None:
            raise ModelNotOnHubError(f"{repo_id} has no file {filename} on {self.endpoint}")
        commit = hashlib.sha1(f"modelscope\n{repo_id}\n{rev}".encode()).hexdigest()
        url = (f"{self.endpoint}/api/v1/models/{_quote_repo(repo_id)}/repo?"
               + urlencode({"Revision": rev, "FilePath": filename}))
        # without a sha256 the etag is an opaque token that must not look like a git sha1
        etag = found.sha256 or "ms-" + hashlib.sha256(f"{repo_id}\n{rev}\n{filename}".encode()).hexdigest()[:32]
        return FileMeta(commit, etag, found.size, url, found.sha256)


def _quote_repo(repo_id: str) -> str:
    owner, _, name = repo_id.partition("/")
    return f"{quote(owner, safe='')}/{quote(name, safe='')}"
