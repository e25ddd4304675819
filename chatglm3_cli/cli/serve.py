"""`chatglm3 serve`: an HTTP server (chatglm3_cli.serve: OpenAI's and Ollama's APIs, a chat page) on one model.

Only this module imports the server (Starlette, uvicorn), and only when the command runs, so
`chatglm3 --help` stays light.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import console as console_mod
from .errors import handle_errors
from .options import ModelArgs, SamplingArgs, SamplingParams, SequenceCtx, parallel_option, with_options
from .visible import visible

# The context each sequence gets when --ctx is not given (and the model allows it).
DEFAULT_SERVE_CTX = 4096


@handle_errors
@with_options
def serve(
    host: Annotated[str, typer.Option(
        "--host", metavar="ADDR",
        help="Address to listen on. Anything but a loopback address needs --api-key.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(
        "--port", min=0, max=65535, metavar="N", help="Port to listen on; 0 picks a free one.")] = 8000,
    api_key: Annotated[Optional[str], typer.Option(
        "--api-key", envvar="CHATGLM3_API_KEY", show_envvar=True, metavar="KEY",
        help="Require 'Authorization: Bearer KEY' on every endpoint but /health.")] = None,
    queue: Annotated[int, typer.Option(
        "--queue", min=0, metavar="N",
        help="Requests that may wait for a free sequence (0: none); more get 429 with Retry-After.")] = 32,
    drain_timeout: Annotated[float, typer.Option(
        "--drain-timeout", min=0.0, metavar="SECONDS",
        help="On SIGTERM or Ctrl-C, how long requests in flight may take to finish.")] = 30.0,
    allowed_origins: Annotated[Optional[str], typer.Option(
        "--allowed-origins", envvar="CHATGLM3_ORIGINS", show_envvar=True, metavar="ORIGINS",
        help="Web pages (origins such as https://app.example, * patterns) that may call the server, "
             "comma-separated; the server's own origin always may.")] = None,
    model: ModelArgs = ModelArgs.options(ctx=SequenceCtx, parallel=parallel_option("Requests")),
    sampling: SamplingParams = SamplingArgs.options(),
) -> None:
    """Serve the model over HTTP: OpenAI's API (/v1/...), Ollama's (/api/...) and a chat page at /.

    Concurrent requests are decoded together. The sampling options are defaults for requests without their own.

    Example: chatglm3 serve -m chatglm3-6b --port 8000
    """
    from ..serve.guard import parse_origins
    from ..serve.server import ServeSettings, bind, build_state, check_exposure, read_timeout
    from ..serve.server import serve as run_server

    con = console_mod.current()
    check_exposure(host, api_key)  # InsecureBindError: a usage error (exit 2)
    sock = bind(host, port)  # before the model loads: a busy port fails at once
    try:
        path = model.path()
        parallel = model.n_parallel()
        # --ctx is each sequence's; the model's own single-sequence context is unused here.
        with dataclasses.replace(model, ctx=64).open() as m:
            n_ctx = model.ctx or min(m.n_ctx_train, DEFAULT_SERVE_CTX)
            settings = ServeSettings(host=host, port=port, api_key=api_key, n_parallel=parallel, n_ctx=n_ctx,
                                     max_queue=queue, drain_timeout=drain_timeout, params=sampling,
                                     allowed_origins=parse_origins(allowed_origins), read_timeout=read_timeout())
            model_id = Path(path).stem
            state = build_state(m, settings, model_id)

            def ready(url: str) -> None:
                auth = "API key required" if api_key else "no API key"
                con.error(f"chatglm3 serve: listening on {url} (model {visible(model_id)}, {parallel} sequences of "
                          f"{n_ctx} tokens, {auth}); Ctrl-C to stop")

            run_server(state, sock, settings, on_ready=ready)
            con.error("chatglm3 serve: stopped")
    finally:
        sock.close()
