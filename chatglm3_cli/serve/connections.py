"""Slow and surplus clients: a deadline for reading each request, and a cap on connections.

uvicorn times out idle keep-alive connections, but not a client that sends its headers one line
every ten seconds, nor a declared body that never comes: each such connection holds a file
descriptor for as long as the client likes, and once the process runs out of them every real
request fails ("Too many open files"). Here, on uvicorn's own h11 protocol:

- a request (its headers and its body) must arrive whole within ``read_timeout`` seconds of
  its first byte, or of the connection opening; otherwise 408 and the connection is closed;
- at most ``max_connections`` connections are open at once, a number kept below the file
  limit; one more is answered 503 and closed, with a log line (at most one per minute).
"""
from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any

# File descriptors the process needs besides client connections: the listening socket, the
# model file while loading, the event loop, stdio, a Jupyter-free margin for libraries.
RESERVED_FDS = 64
DEFAULT_MAX_CONNECTIONS = 1000
DEFAULT_READ_TIMEOUT = 30.0



def _canned(status: str, message: str, kind: str, code: str, extra: str = "") -> bytes:
    """A whole HTTP response in OpenAI's error shape, written straight to the socket."""
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()
    head = (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\n{extra}"
            f"content-length: {len(body)}\r\n\r\n")
    return head.encode() + body


_REFUSED = _canned("503 Service Unavailable", "too many open connections", "service_unavailable_error",
                   "too_many_connections", "retry-after: 1\r\n")
_TIMED_OUT = _canned("408 Request Timeout", "the request took too long to arrive", "invalid_request_error",
                     "request_timeout")

def connection_cap(wanted: int = DEFAULT_MAX_CONNECTIONS) -> int:
    """``wanted``, lowered to what the file limit leaves after RESERVED_FDS (at least 4)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(4, min(wanted, soft - RESERVED_FDS))


def protocol_class(read_timeout: float, max_connections: int, log: Any = None) -> type:
    """uvicorn's H11Protocol with the read deadline and the connection cap."""
    from uvicorn.protocols.http.h11_impl import H11Protocol, h11

    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    last_warned = [0.0]

    class GuardedH11Protocol(H11Protocol):
        _deadline: Any = None
        _refused = False

        def connection_made(self, transport: Any) -> None:
            if len(self.connections) >= max_connections:
                self._refused = True
                now = time.monotonic()
                if now - last_warned[0] > 60:
                    last_warned[0] = now
                    say(f"chatglm3 serve: {len(self.connections)} connections open, the most this server "
                        f"keeps (file limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}); refusing more with 503")
                transport.write(_REFUSED)
                transport.close()
                return
            super().connection_made(transport)
            self._arm()

        def _arm(self) -> None:
            if self._deadline is None:
                self._deadline = self.loop.call_later(read_timeout, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _reading(self) -> bool:
            """Whether a request is still (or not yet) being received."""
            return self.conn.their_state in (h11.IDLE, h11.SEND_BODY)

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._reading():
                self._arm()  # from the first byte of a request (the keep-alive timer covers before)
            super().data_received(data)
            if not self._reading():
                self._disarm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._disarm()  # idle again: uvicorn's keep-alive timeout takes over

        def connection_lost(self, exc: Exception | None) -> None:
            if self._refused:
                return
            self._disarm()
            super().connection_lost(exc)

        def _too_slow(self) -> None:
            self._deadline = None
            if self.transport.is_closing() or not self._reading():
                return
            if self.cycle is None or not self.cycle.response_started:
                self.transport.write(_TIMED_OUT)
            self.transport.close()

    return GuardedH11Protocol
