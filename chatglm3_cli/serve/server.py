"""Running the app under uvicorn: the listening socket, the scheduler's lifetime, and a drained
shutdown on SIGTERM or Ctrl-C that exits 0.

The socket is bound before the model loads, so a port in use or a bad address fails at once,
and port 0 picks a free port (the ready line says which).
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from ..engine.sampling import SamplingParams
from ..errors import ConfigError, InsecureBindError, ServeError
from .app import DEFAULT_MAX_BODY, ServerState, create_app
from .connections import DEFAULT_MAX_CONNECTIONS, DEFAULT_READ_TIMEOUT, connection_cap, protocol_class
from .guard import GuardPolicy
from .protocol import Limits

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.model import Model

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


@dataclass
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    n_parallel: int = 4
    n_ctx: int | None = None  # per sequence; None: the decoder's default
    max_queue: int = 32
    max_tokens: int | None = None  # the most one request may ask for; None: the context size
    drain_timeout: float = 30.0
    max_body: int = DEFAULT_MAX_BODY
    params: SamplingParams = field(default_factory=SamplingParams)  # defaults for requests
    allowed_origins: tuple[str, ...] = ()  # web origins (or * patterns) besides the server's own
    read_timeout: float = DEFAULT_READ_TIMEOUT  # a request must arrive whole within this
    max_connections: int = DEFAULT_MAX_CONNECTIONS  # lowered to what the file limit allows


def read_timeout() -> float:
    """CHATGLM3_READ_TIMEOUT, else DEFAULT_READ_TIMEOUT (UsageError for a value that is no
    positive number)."""
    from .. import env

    text = env.get("CHATGLM3_READ_TIMEOUT")
    if text is None:
        return DEFAULT_READ_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise ConfigError(f"CHATGLM3_READ_TIMEOUT={text[:40]!r} must be a number of seconds, 0 to 3600")
    return value


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, api_key: str | None) -> None:
    """A server reachable from other machines must ask for a key."""
    if not is_loopback(host) and not api_key:
        raise InsecureBindError(f"--host {host} makes the server reachable from other machines; "
                                "it needs an API key")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one)."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}",
                         hint="choose another --port, or stop what is using it") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def build_state(model: "Model", settings: ServeSettings, model_id: str) -> ServerState:
    from ..engine.decoder import PREFIX_SEQS, ParallelDecoder
    from .scheduler import Scheduler

    # Finished conversations are kept for their next turn, one stream each: as many as clients
    # served at once (each takes a sequence's KV memory).
    decoder = ParallelDecoder(model, n_parallel=settings.n_parallel, n_ctx=settings.n_ctx,
                              n_prefixes=max(PREFIX_SEQS, settings.n_parallel))
    limits = Limits(max_tokens=min(settings.max_tokens or decoder.n_ctx, decoder.n_ctx),
                    default_params=settings.params)
    return ServerState(model=model, scheduler=Scheduler(decoder, max_queue=settings.max_queue),
                       model_id=model_id, n_ctx=decoder.n_ctx, limits=limits,
                       api_key=settings.api_key or None, max_body=settings.max_body,
                       guard=GuardPolicy.make(loopback=is_loopback(settings.host), origins=settings.allowed_origins))


def serve(state: ServerState, sock: socket.socket, settings: ServeSettings,
          on_ready: Callable[[str], None] = lambda _url: None) -> None:
    """Serve until SIGTERM/SIGINT; in-flight requests get ``drain_timeout`` seconds to finish."""
    import uvicorn

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        state.scheduler.start()
        on_ready(url_of(sock))
        yield
        await asyncio.to_thread(state.scheduler.close, settings.drain_timeout)

    # h11 with a deadline for each request and a connection cap below the file limit
    # (connections.py); idle keep-alive connections close after 5 s.
    http = protocol_class(settings.read_timeout, connection_cap(settings.max_connections))
    config = uvicorn.Config(create_app(state, lifespan=lifespan), log_level="warning", access_log=False,
                            lifespan="on", timeout_graceful_shutdown=max(1, round(settings.drain_timeout)),
                            http=http, timeout_keep_alive=5, h11_max_incomplete_event_size=64 * 1024)
    server = _Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        state.scheduler.close(settings.drain_timeout)  # again is harmless; covers a failed startup


def _uvicorn_server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises the signal that stopped it once it has shut down, which makes a
        drained, orderly stop exit with 143 or a KeyboardInterrupt. Ours exits 0."""

        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            with super().capture_signals():
                try:
                    yield
                finally:
                    captured = getattr(self, "_captured_signals", None)
                    if isinstance(captured, list):
                        captured.clear()

    return Server


def _Server(config: Any) -> Any:  # noqa: N802 - a factory that reads like the class it makes
    return _uvicorn_server_class()(config)
