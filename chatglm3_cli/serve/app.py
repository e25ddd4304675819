"""The ASGI app: OpenAI's endpoints on the scheduler (Starlette, validation in protocol.py).

Endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models(/{id}), GET /health,
GET /metrics (Prometheus text); Ollama's /api/* on the same answers (ollama.py) and the chat
page at / (page.py). With an API key, every endpoint but /health wants
``Authorization: Bearer KEY`` (compared in constant time). Bodies over the cap are refused
before they are read whole. A client that goes away, streaming or not, has its request
cancelled at once: queued, it never runs; running, its sequence is freed before the next step.
No endpoint reads or writes files.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ..engine.sampling import SamplingParams
from ..engine.toolcalls import call_marker_start
from ..errors import ChatGLM3Error, GrammarError, PromptTooLongError, QueueFullError, ShuttingDownError
from . import protocol as P
from .guard import GuardPolicy, RequestGuard
from .metrics import render_metrics
from .scheduler import Event, Job, Scheduler

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.model import Model

DEFAULT_MAX_BODY = 4 * 1024 * 1024
MAX_JSON_DEPTH = 64  # arrays and objects inside one another in a request body
# How long preparing a request (checking a JSON Schema, making its grammar, tokenizing) may
# take. The limits in engine/grammar_limits.py keep it far below; this is the backstop.
PREPARE_DEADLINE = 30.0


@dataclass
class ServerState:
    model: "Model"
    scheduler: Scheduler
    model_id: str
    n_ctx: int  # per sequence
    limits: P.Limits
    api_key: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    created: int = field(default_factory=lambda: int(time.time()))
    responses: dict[int, int] = field(default_factory=dict)  # HTTP status -> count, for /metrics
    guard: GuardPolicy = field(default_factory=GuardPolicy)  # Origin, Host, Content-Type (guard.py)


def error_response(err: P.APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def _engine_error(e: ChatGLM3Error) -> P.APIError:
    if isinstance(e, PromptTooLongError):
        return P.APIError(400, e.message, param="messages", code="context_length_exceeded")
    if isinstance(e, GrammarError):  # llama.cpp quotes the whole grammar: keep the reason only
        return P.APIError(400, e.message[:300], param="response_format", code="invalid_grammar")
    return P.APIError(500, e.message, type="server_error", code="generation_error")


# request helpers ------------------------------------------------------------------------------

def _authorize(state: ServerState, request: Request) -> None:
    if state.api_key is None:
        return
    given = request.headers.get("authorization", "").encode("utf-8", "replace")
    if not hmac.compare_digest(given, f"Bearer {state.api_key}".encode()):
        raise P.APIError(401, "Incorrect or missing API key: send Authorization: Bearer KEY",
                         code="invalid_api_key")


async def _read_json(state: ServerState, request: Request) -> dict[str, Any]:
    too_big = P.APIError(413, f"the request body is larger than {state.max_body} bytes",
                         code="request_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > state.max_body:
        raise too_big
    data = bytearray()
    try:
        async for chunk in request.stream():
            data += chunk
            if len(data) > state.max_body:
                raise too_big
    except ClientDisconnect:  # gone, or cut off for sending too slowly (connections.py)
        raise P.APIError(499, "the client went away before its request arrived", code="cancelled") from None
    problem = _json_depth_problem(data)
    if problem:
        raise P.APIError(400, f"the request body {problem}", code="invalid_json")
    try:
        body = json.loads(bytes(data))
    except (ValueError, RecursionError) as e:  # also: an integer of more than 4,300 digits
        raise P.APIError(400, f"the request body is not valid JSON: {str(e)[:200]}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise P.APIError(400, "the request body must be a JSON object", code="invalid_json")
    try:  # a lone surrogate ("\ud800") is valid JSON but no text: it cannot be encoded
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise P.APIError(400, "the request body holds a lone surrogate (\\ud800-\\udfff): not valid text",
                         code="invalid_json") from None
    return body


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _json_depth_problem(data: bytes | bytearray) -> str | None:
    """Nesting deeper than MAX_JSON_DEPTH, counted on the bytes before parsing (strings
    removed; in C and numpy, not a Python loop per byte), so that nothing after the parser
    recurses that deep (jsonschema, the converter, json.dumps)."""
    import numpy as np

    code = np.frombuffer(_JSON_STRING.sub(b"", bytes(data)), dtype=np.uint8)
    steps = (code == 0x5B).astype(np.int32) + (code == 0x7B) - (code == 0x5D) - (code == 0x7D)
    if steps.size and int(np.cumsum(steps).max()) > MAX_JSON_DEPTH:
        return f"is nested more than {MAX_JSON_DEPTH} levels deep"
    return None


async def _until_disconnect(request: Request, job: Job) -> None:
    """Cancel the job when the client goes away (the body has been read: the next message
    is http.disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            job.cancel()
            return


class _Watch:
    """Runs _until_disconnect beside the handler for as long as the job lives."""

    def __init__(self, request: Request, job: Job) -> None:
        self.task = asyncio.ensure_future(_until_disconnect(request, job))

    def stop(self) -> None:
        self.task.cancel()


def _submit(state: ServerState, job: Job) -> None:
    try:
        state.scheduler.submit(job)
    except QueueFullError as e:
        raise P.APIError(429, f"{e.message}; retry in {e.retry_after}s", type="rate_limit_error",
                         code="rate_limit_exceeded", headers={"Retry-After": str(e.retry_after)}) from None
    except ShuttingDownError as e:
        raise P.APIError(503, e.message, type="service_unavailable_error", code="server_is_overloaded",
                         headers={"Retry-After": "5"}) from None


# answers --------------------------------------------------------------------------------------

def _tool_answer(state: ServerState, req: P.ChatRequest, done: Event) -> tuple[str, list[dict[str, Any]], str]:
    """The answer as the engine reads it for every path (engine/answer.py): its content, the
    tool calls it ended with (offered tools, literal arguments; none: a plain answer), the
    finish reason."""
    from ..engine.answer import read_answer
    from ..engine.toolcalls import function_specs

    assert done.completion is not None
    comp = done.completion
    offered = {f["name"] for f in function_specs(req.tools or [])}
    answer = read_answer(comp, offered, state.model.tool_style)
    return answer.content, [P.tool_call(c.name, c.arguments) for c in answer.calls], answer.finish_reason


def _with_ids(out: dict[str, Any], req: P.GenerationRequest, ev: Event) -> dict[str, Any]:
    """``return_token_ids`` (as vLLM): the generated ids in the (last) choice."""
    if req.return_token_ids and ev.completion is not None and out.get("choices"):
        out["choices"][0]["token_ids"] = list(ev.completion.tokens)
    return out


def _usage(ev: Event) -> dict[str, Any]:
    c = ev.completion
    assert c is not None
    return P.usage(c.prompt_tokens, c.completion_tokens, c.cached_tokens)


async def _first_event(job: Job) -> Event:
    ev = await job.events.get()
    if ev.kind == "done" and ev.completion is None:
        if ev.error is not None:
            raise _engine_error(ev.error)
        raise P.APIError(499, "the request was cancelled", code="cancelled")
    return ev


async def _collect(job: Job, first: Event) -> tuple[str, str, Event]:
    """The whole answer: (text, metadata, the done event)."""
    pieces, metadata, ev = [], "", first
    while ev.kind == "text":
        pieces.append(ev.text)
        metadata = ev.metadata
        ev = await job.events.get()
    if ev.completion is None:
        if ev.error is not None:
            raise _engine_error(ev.error)
        raise P.APIError(499, "the request was cancelled", code="cancelled")
    return "".join(pieces), ev.completion.metadata or metadata, ev


class SSEResponse(StreamingResponse):
    """Server-sent events (or another streamed body: Ollama's NDJSON) from an async iterator;
    the job is cancelled however the stream ends (finished, client gone, server stopping), and a
    disconnect is noticed while no token is being written."""

    def __init__(self, events: AsyncIterator[bytes], job: Job, media_type: str = "text/event-stream") -> None:
        super().__init__(events, media_type=media_type,
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.events = events
        self.job = job

    async def __call__(self, scope: Any, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        async def watch() -> None:
            while True:
                if (await receive())["type"] == "http.disconnect":
                    self.job.cancel()
                    return

        watcher = asyncio.ensure_future(watch())
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.events:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away while we wrote
            pass
        finally:
            watcher.cancel()
            self.job.cancel()
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                await aclose()


async def _chat_stream(state: ServerState, req: P.ChatRequest, job: Job, first: Event) -> AsyncIterator[dict]:
    """The chat.completion.chunk objects of a streamed answer (an error object where it failed)."""
    rid, model, created = P.new_id("chatcmpl"), state.model_id, int(time.time())

    def chunk(delta: dict[str, Any] | None, finish: str | None = None, use: Any = None,
              done: Event | None = None) -> dict[str, Any]:
        out = P.chat_chunk(rid, model, created, delta, finish, usage_field=req.include_usage, use=use)
        return _with_ids(out, req, done) if done is not None else out

    yield chunk({"role": "assistant", "content": ""})
    held: list[str] | None = None  # a tool call's text, held until it is whole
    # A model whose template took the tools writes its calls in its text: what follows a
    # possible call marker waits until the answer ends (engine/toolcalls.call_marker_start).
    in_text = bool(req.tools) and state.model.tool_style == "template"
    text, sent = "", 0
    ev = first
    while ev.kind == "text":
        if in_text:
            text += ev.text
            cut = call_marker_start(text)
            if cut > sent:
                yield chunk({"content": text[sent:cut]})
                sent = cut
        elif held is None and req.tools and ev.metadata:
            held = []
        if held is not None:
            held.append(ev.text)
        elif not in_text:
            yield chunk({"content": ev.text})
        ev = await job.events.get()
    if ev.completion is None:  # failed after the first token, or cancelled
        if ev.error is not None:
            yield _engine_error(ev.error).body()
        return
    _, calls, finish = _tool_answer(state, req, ev)
    for i, call in enumerate(calls):
        yield chunk({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                     "function": {"name": call["function"]["name"], "arguments": ""}}]})
        yield chunk({"tool_calls": [{"index": i, "function": {"arguments": call["function"]["arguments"]}}]})
    if not calls and (held or text[sent:]):  # not a call after all: the text is content
        yield chunk({"content": "".join(held) if held else text[sent:]})
    yield chunk({}, finish, done=ev)
    if req.include_usage:
        yield chunk(None, use=_usage(ev))


async def _completion_stream(state: ServerState, req: P.CompletionRequest, job: Job,
                             first: Event) -> AsyncIterator[dict]:
    """The text_completion chunk objects of a streamed answer (an error object where it failed)."""
    rid, model, created = P.new_id("cmpl"), state.model_id, int(time.time())
    ev = first
    while ev.kind == "text":
        yield P.text_completion(rid, model, created, ev.text, None, None, chunk=True, usage_field=req.include_usage)
        ev = await job.events.get()
    if ev.completion is None:
        if ev.error is not None:
            yield _engine_error(ev.error).body()
    else:
        yield _with_ids(P.text_completion(rid, model, created, "", ev.finish_reason, None, chunk=True,
                                          usage_field=req.include_usage), req, ev)
        if req.include_usage:
            yield P.text_completion(rid, model, created, "", None, _usage(ev), chunk=True)


async def _sse(chunks: AsyncIterator[dict]) -> AsyncIterator[bytes]:
    """OpenAI's stream framing: each object as an SSE event, then [DONE]."""
    try:
        async for c in chunks:
            yield P.sse(c)
        yield P.sse("[DONE]")
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]


@dataclass
class Answer:
    """What an OpenAI endpoint answers, before it is framed: the whole response object, or the
    stream of chunk objects. The Ollama endpoints (ollama.py) reshape the same answers."""

    job: Job
    whole: dict[str, Any] | None = None
    chunks: AsyncIterator[dict] | None = None

    def response(self) -> Response:
        if self.chunks is not None:
            return SSEResponse(_sse(self.chunks), self.job)
        return JSONResponse(self.whole)


# endpoints ------------------------------------------------------------------------------------

async def _answer(job: Job, first: Event, watch: "_Watch") -> tuple[str, str, Event]:
    """A non-streamed answer, whole; the client's disconnect is watched until then."""
    try:
        return await _collect(job, first)
    finally:
        watch.stop()
        job.cancel()


async def _run_job(state: ServerState, request: Request, prompt_ids: list[int], params: Any, *,
                   grammar: str | None, raw: bool, stops: list[str]) -> tuple[Job, Event, _Watch]:
    if len(prompt_ids) + 1 > state.n_ctx:
        raise P.APIError(400, f"the prompt is {len(prompt_ids)} tokens but the context holds {state.n_ctx} "
                         "(at least one token must be left for the answer)", param="messages",
                         code="context_length_exceeded")
    job = Job(prompt_ids, params, grammar=grammar, raw=raw, stops=stops)
    _submit(state, job)
    watch = _Watch(request, job)
    try:
        return job, await _first_event(job), watch
    except BaseException:
        watch.stop()
        job.cancel()
        raise


Tune = Callable[[SamplingParams], SamplingParams]  # sampling settings OpenAI's fields do not carry


async def chat_completions(request: Request) -> Response:
    state: ServerState = request.app.state.server
    _authorize(state, request)
    body = await _read_json(state, request)
    return (await chat_answer(state, request, body)).response()


async def chat_answer(state: ServerState, request: Request, body: dict[str, Any], tune: Tune | None = None) -> Answer:
    """A /v1/chat/completions body's answer (the body is OpenAI's; ``tune`` adjusts sampling)."""
    from ..engine.grammar import check_schema, schema_grammar
    from ..engine.messages import chat_messages, check_tools

    def prepare() -> tuple[P.ChatRequest, list[int], str | None]:
        # Off the event loop: a schema's check and grammar take time other clients must not wait for.
        req = P.parse_chat(body, state.limits, check_schema=check_schema, check_tools=check_tools)
        if tune is not None:
            req.params = tune(req.params)
        try:
            messages = chat_messages(req.messages, tools=req.tools)
        except ValueError as e:
            raise P.bad("messages", str(e)) from None
        try:
            ids = state.model.prompt_ids(messages)
        except (ChatGLM3Error, ValueError) as e:
            raise P.bad("messages", f"cannot build the prompt: {getattr(e, 'message', e)}") from None
        try:
            grammar = schema_grammar(req.schema) if req.schema is not None else None
        except ValueError as e:
            raise P.bad("response_format", f"the JSON Schema {e}", "invalid_grammar") from None
        return req, ids, grammar

    req, ids, grammar = await _prepared(prepare)
    job, first, watch = await _run_job(state, request, ids, req.params, grammar=grammar, raw=False, stops=req.stops)
    if req.stream:
        watch.stop()  # SSEResponse watches from here on
        return Answer(job, chunks=_chat_stream(state, req, job, first))
    _, _, done = await _answer(job, first, watch)
    content, calls, finish = _tool_answer(state, req, done)
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message = {"role": "assistant", "content": content or None, "tool_calls": calls}
    return Answer(job, whole=_with_ids(P.chat_completion(P.new_id("chatcmpl"), state.model_id, message, finish,
                                                         _usage(done)), req, done))


async def _prepared(work: Callable[[], Any]) -> Any:
    """``work()`` in a worker thread, within PREPARE_DEADLINE (a 503 past it)."""
    try:
        return await asyncio.wait_for(asyncio.to_thread(work), PREPARE_DEADLINE)
    except asyncio.TimeoutError:
        raise P.APIError(503, f"preparing the request took more than {PREPARE_DEADLINE:g}s",
                         type="service_unavailable_error", code="prepare_timeout") from None


async def completions(request: Request) -> Response:
    state: ServerState = request.app.state.server
    _authorize(state, request)
    body = await _read_json(state, request)
    return (await completion_answer(state, request, body)).response()


async def completion_answer(state: ServerState, request: Request, body: dict[str, Any],
                            tune: Tune | None = None) -> Answer:
    """A /v1/completions body's answer (the body is OpenAI's; ``tune`` adjusts sampling)."""
    req = P.parse_completion(body, state.limits)
    if tune is not None:
        req.params = tune(req.params)
    ids = await _prepared(lambda: state.model.raw_prompt_ids(req.prompt))
    job, first, watch = await _run_job(state, request, ids, req.params, grammar=None, raw=True, stops=req.stops)
    if req.stream:
        watch.stop()
        return Answer(job, chunks=_completion_stream(state, req, job, first))
    text, _, done = await _answer(job, first, watch)
    created = int(time.time())
    return Answer(job, whole=_with_ids(P.text_completion(P.new_id("cmpl"), state.model_id, created, text,
                                                         done.finish_reason, _usage(done)), req, done))


def _model_card(state: ServerState) -> dict[str, Any]:
    return {"id": state.model_id, "object": "model", "created": state.created, "owned_by": "chatglm3",
            "context_length": state.n_ctx}


async def list_models(request: Request) -> Response:
    state: ServerState = request.app.state.server
    _authorize(state, request)
    return JSONResponse({"object": "list", "data": [_model_card(state)]})


async def get_model(request: Request) -> Response:
    state: ServerState = request.app.state.server
    _authorize(state, request)
    if request.path_params["model_id"] != state.model_id:
        raise P.APIError(404, f"The model '{request.path_params['model_id']}' does not exist",
                         param="model", code="model_not_found")
    return JSONResponse(_model_card(state))


async def health(request: Request) -> Response:
    state: ServerState = request.app.state.server
    if not state.scheduler.accepting:
        return JSONResponse({"status": "unavailable"}, status_code=503)
    stuck = state.scheduler.stuck_for()
    if stuck is not None:  # one decode step has run this long: nobody is being answered
        return JSONResponse({"status": "stuck", "step_seconds": round(stuck, 1)}, status_code=503)
    return JSONResponse({"status": "ok", "model": state.model_id})


async def metrics(request: Request) -> Response:
    state: ServerState = request.app.state.server
    _authorize(state, request)
    return PlainTextResponse(render_metrics(state.scheduler.snapshot(), state.responses),
                             media_type="text/plain; version=0.0.4")


# the app --------------------------------------------------------------------------------------

async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, P.APIError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        err = P.APIError(404, f"Invalid URL ({request.method} {request.url.path})", code="not_found")
    elif exc.status_code == 405:
        err = P.APIError(405, f"Method not allowed ({request.method} {request.url.path})",
                         code="method_not_allowed")
    else:
        err = P.APIError(exc.status_code, str(exc.detail), code=None)
    return error_response(err)


async def _server_error(request: Request, exc: Exception) -> Response:
    return error_response(P.APIError(500, f"internal error: {type(exc).__name__}: {exc}", type="server_error",
                                     code="internal_error"))


class _CountStatus:
    """ASGI middleware: counts response statuses for /metrics."""

    def __init__(self, app: Any, state: ServerState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def counting_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                self.state.responses[status] = self.state.responses.get(status, 0) + 1
            await send(message)

        await self.app(scope, receive, counting_send)


def create_app(state: ServerState, *, lifespan: Any = None) -> Any:
    from .ollama import ollama_routes
    from .page import web_routes

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{model_id:path}", get_model, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            *ollama_routes(),  # Ollama's API (ollama.py)
            *web_routes(),  # the chat page at / (page.py)
        ],
        exception_handlers={P.APIError: _api_error, HTTPException: _http_error, Exception: _server_error},
        lifespan=lifespan,
    )
    app.state.server = state
    return _CountStatus(RequestGuard(app, state.guard), state)
