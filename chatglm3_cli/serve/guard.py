"""What a web page may not do to a local server: the checks every request passes first.

A page the user visits can send "simple" requests (``text/plain``, form bodies, no preflight)
to ``127.0.0.1``, and with DNS rebinding read the answers under its own name. So, for every
route (the OpenAI API, the web chat page, the Ollama API alike), as ASGI middleware:

- ``Origin``: a browser names the page that sends a request. Same-origin (the server's own
  ``scheme://host:port``) and allow-listed origins (``--allowed-origins``/``CHATGLM3_ORIGINS``,
  like ``OLLAMA_ORIGINS``: exact origins or ``*`` patterns) pass; any other is refused (403).
- ``Host``: on a loopback address, only loopback names (``localhost``, ``127.0.0.1``, ``[::1]``)
  and the hosts of allow-listed origins: a rebound name such as ``evil.example`` is refused
  (421). Bound to other addresses the server needs an API key, which a page does not have.
- A request with a body must say ``Content-Type: application/json`` (415): the types a page can
  send without a preflight (text/plain, forms, none) never reach a handler. One exception, for
  Ollama's API (``/api/...``), whose documented use is ``curl -d '{...}'`` (a form type): a
  request that no browser sent (no ``Origin``, no ``Sec-Fetch-Site``; every current browser
  sends one of them with a cross-site POST) may use any type there.
Refusals come in the error shape of the API asked (OpenAI's, or Ollama's ``{"error": ...}``).

An allow-listed origin gets what a browser needs to use the API: its preflight (OPTIONS) is
answered, and the answers carry ``Access-Control-Allow-Origin``.
"""
from __future__ import annotations

import fnmatch
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

LOOPBACK_HOSTS = ("localhost", "localhost.localdomain", "ip6-localhost")
_BODY_METHODS = {"POST", "PUT", "PATCH"}


def parse_origins(text: str | None) -> tuple[str, ...]:
    """A comma-separated allow-list (``CHATGLM3_ORIGINS``), lower-cased, without a trailing /."""
    return tuple(o.strip().lower().rstrip("/") for o in (text or "").split(",") if o.strip())


def _host_name(host_header: str) -> str:
    """The name part of a Host header value: "[::1]:8000" -> "::1", "a.b:80" -> "a.b"."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host[1:]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _is_loopback_name(name: str) -> bool:
    if name in LOOPBACK_HOSTS or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class GuardPolicy:
    loopback: bool = True                   # bound to a loopback address: Host is checked
    origins: tuple[str, ...] = ()           # allow-listed origins or fnmatch patterns
    extra_hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def make(cls, *, loopback: bool, origins: tuple[str, ...]) -> "GuardPolicy":
        hosts = {urlsplit(o).hostname or "" for o in origins if "*" not in o}
        return cls(loopback=loopback, origins=origins, extra_hosts=frozenset(h for h in hosts if h))

    def origin_allowed(self, origin: str, scheme: str, host_header: str) -> bool:
        origin = origin.strip().lower().rstrip("/")
        if origin == f"{scheme}://{host_header.strip().lower()}":
            return True  # same-origin: the web chat page served at /
        return any(origin == o or ("*" in o and fnmatch.fnmatchcase(origin, o)) for o in self.origins)

    def host_allowed(self, host_header: str) -> bool:
        if not self.loopback:
            return True
        name = _host_name(host_header)
        return _is_loopback_name(name) or name in self.extra_hosts

    def problem(self, method: str, scheme: str, headers: dict[str, str],
                path: str = "/") -> tuple[int, str, str] | None:
        """(status, message, code) for a request that must be refused, else None."""
        host = headers.get("host", "")
        if not self.host_allowed(host):
            return (421, f"this server does not answer for the host {host[:100]!r}; allow it with "
                         "--allowed-origins", "host_not_allowed")
        origin = headers.get("origin")
        if origin is not None and not self.origin_allowed(origin, scheme, host):
            return (403, f"requests from the web origin {origin[:100]!r} are not allowed; allow it with "
                         "--allowed-origins or CHATGLM3_ORIGINS", "origin_not_allowed")
        from_browser = origin is not None or "sec-fetch-site" in headers
        if method in _BODY_METHODS and (from_browser or not _is_ollama(path)):
            kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if kind != "application/json" and not (kind.startswith("application/") and kind.endswith("+json")):
                return (415, "the request body must be JSON sent with 'Content-Type: application/json' "
                             f"(got {kind[:100] or 'none'!r})", "unsupported_media_type")
        return None


class RequestGuard:
    """ASGI middleware: refuses, in OpenAI's error shape, what ``GuardPolicy.problem`` names."""

    def __init__(self, app: Any, policy: GuardPolicy) -> None:
        self.app, self.policy = app, policy

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        method, scheme = scope.get("method", "GET"), scope.get("scheme", "http")
        origin = headers.get("origin")
        cross = origin is not None and origin.strip().lower().rstrip("/") != f"{scheme}://{headers.get('host', '')}"
        if cross and method == "OPTIONS" and "access-control-request-method" in headers:
            refused = self.policy.problem("GET", scheme, headers)  # a preflight: Host and Origin only
            if refused is None:  # an allow-listed page asks before sending JSON or a key
                return await _send(send, 204, b"", _cors(origin or "", preflight=True))
        else:
            refused = self.policy.problem(method, scheme, headers, scope.get("path", "/"))
        if refused is None:
            if not cross:
                return await self.app(scope, receive, send)

            async def with_cors(message: Any) -> None:  # the allow-listed page may read the answer
                if message["type"] == "http.response.start":
                    message = {**message, "headers": [*message.get("headers", []), *_cors(origin or "")]}
                await send(message)

            return await self.app(scope, receive, with_cors)
        status, message, code = refused
        if _is_ollama(scope.get("path", "/")):
            body = json.dumps({"error": message}).encode()
        else:
            body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                         "code": code}}).encode()
        await _send(send, status, body, [(b"content-type", b"application/json"), (b"connection", b"close")])


def _is_ollama(path: str) -> bool:
    return path.startswith("/api/")


def _cors(origin: str, *, preflight: bool = False) -> list[tuple[bytes, bytes]]:
    out = [(b"access-control-allow-origin", origin.encode("latin-1", "replace")), (b"vary", b"Origin")]
    if preflight:
        out += [(b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                (b"access-control-allow-headers", b"Authorization, Content-Type"),
                (b"access-control-max-age", b"600")]
    return out


async def _send(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
