"""Running a validated batch job: resume, decode in parallel, write one line per record.

``run_batch`` is the whole job without any terminal: the CLI gives it the jobs, where the
results go, a way to open the model, and a progress sink, and reads the ``Summary`` back.
One failing record (too long for the context, an answer that does not parse) becomes its
error line and never stops the job; Ctrl-C stops it between lines, keeping every line written.
"""
from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, TextIO

from ..engine.answer import read_answer
from ..errors import (
    ChatGLM3Error,
    GenerationError,
    InputError,
    InternalError,
    InvalidRecordError,
    ManifestMismatchError,
    OutputFormatError,
    PromptTooLongError,
)
from ..files import file_sha256
from ..progress import RunStats
from .jobs import Job, JobFile, Problem
from .progress import BatchProgress
from .results import (
    Manifest,
    ResultsFile,
    ScanReport,
    check_manifest,
    dumps_line,
    manifest_path,
    old_records,
    read_manifest,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.completion import Completion
    from ..engine.model import Model
    from ..engine.sampling import SamplingParams


@dataclass
class Settings:
    params: "SamplingParams"  # the job's defaults; records may override some
    n_parallel: int = 4
    n_ctx: Optional[int] = None  # per sequence; None: the model's default
    retry_errors: bool = False
    force: bool = False
    system: Optional[str] = None  # the job's system prompt, for records without their own


@dataclass
class Summary(RunStats):
    """The job's counts; ``planned`` (lines this run writes: records to decode and invalid
    records not reported yet), ``done_now`` (lines written), tokens and speed come from RunStats."""

    total: int = 0  # records in the input
    skipped: int = 0  # answered by an earlier run
    succeeded: int = 0  # all answered completely, earlier runs included
    cut_off: int = 0  # answered, but cut off at max_tokens (finish_reason "length"), all runs
    cut_off_now: int = 0
    failed: int = 0  # all with an error line, earlier runs included
    failed_now: int = 0
    todo: int = 0  # to decode in this run
    output: str = "-"
    notes: list[str] = field(default_factory=list)
    failure_kinds: Counter = field(default_factory=Counter)  # error type -> records, this run
    workers: Optional[int] = None  # on a Ray cluster (scale/): workers alive at the last look
    workers_used: Optional[int] = None  # on a Ray cluster: worker processes that returned answers


# output lines -------------------------------------------------------------------------------

def _error_obj(exc: ChatGLM3Error) -> dict[str, Any]:
    return {"type": type(exc).__name__, "message": exc.message}


def _status(exc: ChatGLM3Error | None) -> int:
    if exc is None:
        return 200
    if isinstance(exc, (InputError, PromptTooLongError, OutputFormatError)):
        return 400
    return 500


def _openai_line(custom_id: Any, *, model_name: str, comp: "Completion | None",
                 error: ChatGLM3Error | None, output: Any = None) -> dict[str, Any]:
    response: dict[str, Any] = {"status_code": _status(error), "request_id": f"req_{uuid.uuid4().hex}"}
    if error is None and comp is not None:
        message: dict[str, Any] = {"role": "assistant", "content": comp.text}
        if comp.finish_reason == "tool_calls" and isinstance(output, dict):
            # The call as OpenAI gives it: arguments are a JSON string.
            message = {"role": "assistant", "content": output.get("content"), "tool_calls": [{
                "id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                "function": {"name": c["name"], "arguments": json.dumps(c["arguments"], ensure_ascii=False)}}
                for c in output.get("calls") or [output]]}
        response["body"] = {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
            "created": int(time.time()), "model": model_name,
            "choices": [{"index": 0, "message": message,
                         "logprobs": None, "finish_reason": comp.finish_reason}],
            "usage": {k: comp.usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")},
        }
    else:
        response["body"] = None
    err = None if error is None else {"code": _snake(type(error).__name__), **_error_obj(error)}
    return {"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": custom_id, "response": response,
            "error": err}


def _snake(name: str) -> str:
    name = name.removesuffix("Error")
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(name))


def result_line(job: Job, *, model_name: str, comp: "Completion | None", output: Any = None,
                error: ChatGLM3Error | None) -> dict[str, Any]:
    if job.openai:
        return _openai_line(job.id, model_name=model_name, comp=comp, error=error, output=output)
    return {
        "id": job.id, "task": job.task,
        "output": output if error is None else None,
        "finish_reason": comp.finish_reason if comp else None,
        "usage": comp.usage if comp else None,
        "timings": comp.timings.to_dict() if comp else None,
        "error": _error_obj(error) if error else None,
    }


def problem_line(p: Problem) -> dict[str, Any]:
    err = InvalidRecordError(p.describe())
    if p.openai:
        line = _openai_line(p.id if p.key else None, model_name="", comp=None, error=err)
    else:
        line = {"id": p.id if p.key else None, "task": p.task, "output": None, "finish_reason": None,
                "usage": None, "timings": None, "error": _error_obj(err)}
    if p.key is None:
        line["line"] = p.line  # no id of its own: the input line says which record it was
    return line


def retry_advice(summary: Summary, settings: Settings) -> str | None:
    """What would change the outcome of failed records. At temperature 0 --retry-errors decodes
    the same prompts the same way, so it only helps once something else changes."""
    if settings.params.temperature > 0:
        return None  # the default hint: --retry-errors samples other answers
    tips = []
    kinds = summary.failure_kinds
    if kinds.get("PromptTooLongError"):
        tips.append("a larger --ctx for prompts that do not fit")
    if kinds.get("OutputFormatError"):
        tips.append("a larger max_tokens for answers cut off")
    tips.append("a larger model")
    return ("see the error lines in the results; at temperature 0 --retry-errors repeats the same "
            "answers: it helps with " + ", ".join(tips) + " (another model or --ctx needs --force)")


# the job ------------------------------------------------------------------------------------

def manifest_params(settings: Settings) -> dict[str, Any]:
    """What must stay the same across runs of one job (not speed settings like --parallel)."""
    params = {**settings.params.to_dict(), "ctx": settings.n_ctx}
    if settings.system:  # only when given, so that jobs started without one still resume
        params["system"] = settings.system
    return params


def run_batch(jobfile: JobFile, *, output: Optional[Path], stdout: Optional[TextIO],
              model_path: str, open_model: Callable[[], Any], settings: Settings,
              progress: BatchProgress | None = None, decode: Optional[Callable[..., None]] = None) -> Summary:
    """Run every job not answered yet; write results to ``output`` (resumable) or ``stdout``.

    ``decode(todo, opened, settings, summary, progress, write)`` answers the records, ``opened``
    being what ``open_model()`` gave: by default ``decode_jobs`` on a Model; on a Ray cluster
    (chatglm3_cli.scale) the cluster's workers, with this same resume, manifest and output."""
    progress = progress or BatchProgress()
    summary = Summary(total=jobfile.total, output=str(output) if output else "-")
    # The real file, not a symlink's name: one lock and one manifest per results file.
    if output is not None:
        output = output.resolve()
    store = ResultsFile(output) if output is not None else None
    report = ScanReport()
    manifest: Manifest | None = None

    if store is not None:
        assert output is not None
        store.lock()
        try:
            manifest, report = _resume(store, output, jobfile, model_path, settings, summary)
        except BaseException:
            store.close()
            raise

    answered = report.answered

    def write(line: dict[str, Any]) -> None:
        if store is not None:
            store.append(line)
        else:
            assert stdout is not None
            stdout.write(dumps_line(line).decode("utf-8"))
            stdout.flush()

    todo: list[Job] = []
    for job in jobfile.jobs:
        if job.key in answered:
            summary.skipped += 1
            if not answered[job.key]:
                summary.failed += 1
            elif job.key in report.cut_off:
                summary.cut_off += 1
            else:
                summary.succeeded += 1
        else:
            todo.append(job)
    problems = []
    for p in jobfile.problems:
        if p.key is not None and p.key in answered:
            summary.skipped += 1
            summary.failed += 1
        else:
            problems.append(p)
    summary.todo = len(todo)
    summary.planned = len(todo) + len(problems)
    for note in summary.notes:
        progress.note(f"batch: {note}")
    progress.start(summary.planned, summary)

    try:
        # The model is opened before anything is written: a model that fails to load leaves
        # no manifest naming it behind.
        with (open_model() if todo else contextlib.nullcontext()) as model:
            summary.started = time.monotonic()  # speeds count decoding, not loading
            if manifest is not None and summary.planned:
                assert output is not None
                manifest.write(manifest_path(output))  # before the first line
            for p in problems:
                write(problem_line(p))
                summary.failed += 1
                summary.failed_now += 1
                summary.done_now += 1
                progress.advance(False, p.key, None, summary)  # listed already by validation
            if todo:
                assert model is not None
                (decode or decode_jobs)(todo, model, settings, summary, progress, write)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        if store is not None:
            store.close()
        summary.seconds = time.monotonic() - summary.started
        progress.finish(summary)
    return summary


def _resume(store: ResultsFile, output: Path, jobfile: JobFile, model_path: str,
            settings: Settings, summary: Summary) -> tuple[Manifest, ScanReport]:
    """Check the manifest (refusing another model or parameters) and repair the results file."""
    sha = file_sha256(model_path)
    records = {j.key: j.digest for j in jobfile.jobs}
    records.update({p.key: p.digest for p in jobfile.problems if p.key is not None})
    new = Manifest(model_sha256=sha, model_path=str(Path(model_path).resolve()),
                   model_size=Path(model_path).stat().st_size,
                   params=manifest_params(settings), input=jobfile.source,
                   input_sha256=jobfile.sha256, records=records)
    has_results = output.exists() and output.stat().st_size > 0
    # Without results there is nothing to be consistent with: a stale manifest is replaced.
    old = read_manifest(manifest_path(output)) if has_results else None
    diffs = check_manifest(old, new, output, has_results=has_results, force=settings.force)
    known = old_records(old)
    if old is not None and known is None:
        # A manifest of an earlier version lists no records: its answers are taken as they are.
        stale = None
    else:
        known = known or {}  # no manifest at all (--force): no answer in the file is ours

        def stale(key: str) -> bool:
            return key in records and known.get(key) != records[key]

        if has_results and known and not diffs and not settings.force:
            # Not one answered record of this input is in the results: another job's file.
            answered = store.answered_ids()
            if answered and not any(known.get(k) == records.get(k) for k in answered):
                raise ManifestMismatchError(
                    f"{output} holds the results of another job (none of its {len(answered)} "
                    f"answers belongs to a record of {jobfile.source} as it is now)")
    # Answers of records no longer in the input keep their hashes for a later resume.
    new.records = {**{k: v for k, v in (known or {}).items() if k not in records}, **records}
    if diffs and old:
        new.created = old.get("created", new.created)
        new.previous = list(old.get("previous") or []) + [
            {k: old.get(k) for k in ("version", "model", "params", "updated")}]
        summary.notes.append("--force: resuming with other settings (" + "; ".join(diffs) + ")")
    elif old:
        new.created = old.get("created", new.created)
        new.previous = list(old.get("previous") or [])
    report = store.prepare(retry_errors=settings.retry_errors, stale=stale)
    if report.dropped_stale:
        why = ("no manifest vouches for them" if old is None
               else "their records changed since they were answered")
        summary.notes.append(f"{report.dropped_stale} answers in {output} are redone: {why}")
    if report.truncated_bytes:
        summary.notes.append(f"repaired {output}: removed a half-written last line "
                             f"({report.truncated_bytes} bytes)")
    if report.dropped_duplicates or report.dropped_corrupt:
        summary.notes.append(f"repaired {output}: removed {report.dropped_duplicates} duplicate "
                             f"and {report.dropped_corrupt} unreadable lines")
    return new, report


def decode_jobs(todo: list[Job], model: "Model", settings: Settings, summary: Summary,
                progress: BatchProgress, write: Callable[[dict[str, Any]], None], *,
                decoder: Any = None) -> None:
    """Answer ``todo`` on ``model``: one result line each, written as it finishes. A Ray worker
    runs this too, with a ``decoder`` it keeps across calls (closed by its owner)."""
    from ..engine.decoder import DecodeRequest, DecoderStats, ParallelDecoder

    by_key = {job.key: job for job in todo}
    own = decoder is None
    if decoder is None:
        decoder = ParallelDecoder(model, n_parallel=settings.n_parallel, n_ctx=settings.n_ctx)

    def on_step(stats: DecoderStats) -> None:
        summary.items_in_flight, summary.tokens_in_flight = stats.in_flight, stats.in_flight_tokens
        progress.tick(summary)

    decoder.on_step = on_step

    def fail(job: Job, exc: ChatGLM3Error, comp: "Completion | None" = None) -> None:
        write(result_line(job, model_name=model.name, comp=comp, error=exc))
        summary.failure_kinds[type(exc).__name__] += 1
        if comp is not None:  # an answer that did not parse: its tokens were generated all the same
            summary.answered += 1
            summary.generated_tokens += comp.completion_tokens
        summary.failed += 1
        summary.failed_now += 1
        summary.done_now += 1
        progress.advance(False, job.key, exc.message, summary)

    def count(text: str) -> int:
        return len(model.tokenize(text))

    def requests() -> Iterator[DecodeRequest]:
        for job in todo:
            try:
                ids = model.prompt_ids(job.messages(settings.system))
                grammar = job.grammar()
                params = settings.params.with_(**job.overrides)
                if params.max_tokens is None:
                    params = params.with_(max_tokens=job.default_max_tokens(count))
            except ChatGLM3Error as e:  # a template that refuses these messages, a prompt too long...
                fail(job, e)
                continue
            except ValueError as e:  # what the record asks for cannot be done (a grammar's limits)
                fail(job, InputError(f"cannot prepare the record: {e}"))
                continue
            except Exception as e:  # a bug of ours: the record's line says so, not "bad input"
                fail(job, InternalError(f"internal error while preparing the record: {type(e).__name__}: {e}"))
                continue
            yield DecodeRequest(job.key, prompt_ids=ids, params=params, grammar=grammar)

    try:
        _collect(decoder, requests(), by_key, summary, progress, write, fail, model.name)
    finally:
        close = getattr(decoder, "close", None)
        if own and close is not None:
            close()


def _collect(decoder: Any, requests: Iterator[Any], by_key: dict[str, Job], summary: Summary,
             progress: BatchProgress, write: Callable[[dict[str, Any]], None],
             fail: Callable[..., None], model_name: str) -> None:
    for res in decoder.run(requests):
        job = by_key[res.key]
        comp = res.completion
        summary.evaluated_prompt_tokens = decoder.stats.evaluated_prompt_tokens
        if res.error is not None or comp is None:
            fail(job, res.error or GenerationError("no answer"))
            continue
        summary.prompt_tokens += comp.prompt_tokens
        # The answer as every path reads it (engine/answer.py): a call to an offered tool, or text.
        answer = read_answer(comp, job.offered_tools(), decoder.model.tool_style)
        comp = replace(comp, text=answer.content, finish_reason=answer.finish_reason)
        try:
            output = job.parse(answer.content, answer.call, answer.calls)
        except OutputFormatError as e:
            if comp.finish_reason == "length":  # say why it does not parse
                e = OutputFormatError(
                    f"the answer was cut off at max_tokens ({comp.completion_tokens} tokens) before "
                    f"it was complete: {e.message}", hint="raise max_tokens")
            fail(job, e, comp)
            continue
        write(result_line(job, model_name=model_name, comp=comp, output=output, error=None))
        summary.answered += 1
        summary.generated_tokens += comp.completion_tokens
        if comp.finish_reason == "length":
            summary.cut_off += 1
            summary.cut_off_now += 1
        else:
            summary.succeeded += 1
        summary.done_now += 1
        progress.advance(True, job.key, None, summary)
