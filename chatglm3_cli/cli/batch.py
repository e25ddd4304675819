"""`chatglm3 batch JOBS.jsonl`: many records through the parallel decoder, resumable.

Results go to a file beside the input (or -o FILE, or - for stdout); progress, the input's
problems and the summary go to stderr: a rich bar on a terminal, plain lines otherwise.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from . import console as console_mod
from .errors import UsageError, handle_errors
from .exit_codes import ExitCode
from .options import (
    ModelArgs,
    RayArgs,
    SamplingArgs,
    SamplingParams,
    SequenceCtx,
    SystemArgs,
    parallel_option,
    with_options,
)
from .progress import make_batch_progress

if TYPE_CHECKING:  # pragma: no cover
    from ..batch.jobs import JobFile
    from ..batch.runner import Settings, Summary

# A record without "max_tokens" gets its task's cap (batch/tasks.py), not an unbounded answer.
RecordCap = Annotated[Optional[int], typer.Option(
    "--max-tokens", min=1, metavar="N", show_default="each task's own cap, e.g. translate 3x the text + 32",
    help="Stop each answer after this many tokens (a record's own max_tokens wins).")]

MAX_REPORTED = 200  # invalid records listed on stderr (all of them with --strict)
# When this many records open the file and every one is invalid, the file is not a jobs file
# (a Markdown file given by mistake, say): stopped before the model loads, with a usage error.
FIRST_INVALID_STOP = 10


def default_output(jobs: str) -> Optional[Path]:
    if jobs == "-":
        return None  # stdin in, stdout out
    p = Path(jobs)
    if not p.is_file():  # a pipe (/dev/stdin, <(cmd)): results to stdout, nothing beside it
        return None
    stem = p.name[: -len(".jsonl")] if p.name.endswith(".jsonl") else p.name
    return p.with_name(f"{stem}.results.jsonl")


def _summary_line(s: "Summary") -> str:
    cut = f", {s.cut_off} cut off at max_tokens" if s.cut_off else ""
    parts = [f"{s.total} records: {s.succeeded} succeeded{cut}, {s.failed} failed"]
    if s.skipped:
        parts[0] += f" ({s.skipped} answered by an earlier run)"
    if s.todo:
        rate = f", {s.tokens_per_second:.1f} tok/s" if s.seconds > 0 and s.generated_tokens else ""
        on = f" on {s.workers_used} Ray worker{'s' if s.workers_used != 1 else ''}" if s.workers_used else ""
        parts.append(f"this run: {s.done_now} records{on}, {s.generated_tokens} tokens generated in "
                     f"{s.seconds:.1f}s{rate}")
        if s.prompt_tokens:
            parts.append(f"prompts: {s.prompt_tokens} tokens, {s.evaluated_prompt_tokens} evaluated")
    parts.append(f"results: {s.output if s.output != '-' else 'stdout'}")
    return "batch: " + " · ".join(parts)


@handle_errors
@with_options
def batch(
    jobs: Annotated[str, typer.Argument(
        help="JSONL input: task records or OpenAI Batch API lines ('-' for stdin).",
        metavar="JOBS.jsonl", show_default=False)],
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o", metavar="RESULTS.jsonl",
        show_default="JOBS.results.jsonl beside the input; stdout when the input is stdin",
        help="Where results go ('-' for stdout).")] = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Run nothing when any record is invalid (default: invalid records "
                         "become error lines and the rest runs).")] = False,
    retry_errors: Annotated[bool, typer.Option(
        "--retry-errors", help="Run the records that failed in an earlier run again.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Resume even with another model or other parameters than the job was "
                        "started with.")] = False,
    model: ModelArgs = ModelArgs.options(ctx=SequenceCtx, parallel=parallel_option("Records")),
    sampling: SamplingParams = SamplingArgs.options(max_tokens=RecordCap),
    system: SystemArgs = SystemArgs.options(),
    ray: RayArgs = RayArgs.options(),
) -> None:
    """Run a JSONL file of tasks or OpenAI Batch API lines; one result line per record.

    Tasks: chat, generate, translate, summarize, classify, extract, qa, rewrite. Re-running the
    same command resumes where it stopped.

    Examples: chatglm3 batch jobs.jsonl · chatglm3 batch jobs.jsonl --retry-errors
    · cat jobs.jsonl | chatglm3 batch - > results.jsonl · chatglm3 batch jobs.jsonl --ray auto --workers 8
    """
    from ..batch.runner import Settings, run_batch

    con = console_mod.current()
    cluster = ray.cluster(verbose=model.verbose)
    data, source = read_input(con, jobs)
    out_path = results_path(jobs, output, resume_flags=retry_errors or force)
    jobfile = parse_and_report(con, data, source, strict)

    sys_text = system.text()
    model_path = model.path()
    progress = make_batch_progress(con)
    n_parallel = model.n_parallel() if cluster is None else cluster.n_parallel(model.parallel)
    settings = Settings(params=sampling, n_parallel=n_parallel, n_ctx=model.ctx, retry_errors=retry_errors,
                        force=force, system=sys_text)
    open_model: Any = model.open_for_decoder
    decode = None
    if cluster is not None:  # the same job, answered by the cluster's workers
        from ..scale.batch import hooks

        open_model, decode = hooks(cluster, *RayArgs.worker_model(model, cluster))
    summary = run_batch(jobfile, output=out_path, stdout=con.stdout if out_path is None else None,
                        model_path=model_path, open_model=open_model, settings=settings,
                        progress=progress, decode=decode)
    finish(con, summary, settings, out_path)


def read_input(con: console_mod.Console, jobs: str) -> tuple[bytes, str]:
    """The JSONL bytes and how messages name them ('-' is stdin, which must be a pipe)."""
    from ..files import MAX_JOBS_INPUT, read_bytes

    if jobs == "-":
        if con.stdin_isatty:
            raise UsageError("JOBS.jsonl is '-' (stdin), but stdin is a terminal: pipe the records in")
        return con.read_stdin_bytes(MAX_JOBS_INPUT), "stdin"
    return read_bytes(jobs, limit=MAX_JOBS_INPUT), jobs


def results_path(jobs: str, output: Optional[str], *, resume_flags: bool) -> Optional[Path]:
    """-o, or JOBS.results.jsonl beside the input; None: stdout (nothing to resume)."""
    from ..errors import OutputWriteError
    from ..files import is_stdout_name, write_target

    out_path = default_output(jobs) if output is None else (None if is_stdout_name(output) else Path(output))
    if out_path is not None:
        # a results file is read back and resumed: a device or FIFO can be neither (and nothing
        # is ever created beside one: no lock, no manifest next to /dev/...)
        try:
            write_target(out_path)
        except OutputWriteError as e:
            raise OutputWriteError(e.message, hint="give a results file, or `-o -` for stdout") from None
    if out_path is not None and jobs != "-" and out_path.resolve() == Path(jobs).resolve():
        raise UsageError("the results file cannot be the input file")
    if out_path is None and resume_flags:
        raise UsageError("--retry-errors and --force resume a results file: give one with -o")
    return out_path


def parse_and_report(con: console_mod.Console, data: bytes, source: str, strict: bool) -> JobFile:
    """The records; every invalid one listed on stderr (up to MAX_REPORTED unless --strict,
    which then runs nothing)."""
    from ..batch.jobs import parse_jobs
    from ..errors import InvalidJobsError

    jobfile = parse_jobs(data, source)
    if jobfile.problems:
        n = len(jobfile.problems)
        what = "nothing was run" if strict else "they become error lines; the rest runs"
        con.error(f"{source}: {n} invalid record{'s' if n != 1 else ''} of {jobfile.total} ({what}):")
        shown = jobfile.problems if strict else jobfile.problems[:MAX_REPORTED]
        for p in shown:
            con.error(f"  {p.describe()}")
        if len(shown) < n:
            con.error(f"  ... and {n - len(shown)} more (each has an error line in the results)")
        if strict:
            raise InvalidJobsError(f"{source}: {n} invalid record{'s' if n != 1 else ''}; nothing was run")
        first_valid = min((j.line for j in jobfile.jobs), default=None)
        leading = sum(1 for p in jobfile.problems if first_valid is None or p.line < first_valid)
        if first_valid is None or leading >= FIRST_INVALID_STOP:
            what = (f"none of its {jobfile.total} records is a valid job" if first_valid is None
                    else f"its first {leading} records are all invalid")
            raise UsageError(f"{source}: {what}, so it does not look like a jobs file; nothing was run",
                             hint='give a JSON Lines file, one job per line, e.g. {"id": "1", "prompt": "Hi"} '
                                  "(see `chatglm3 batch --help`)")
    return jobfile


def finish(con: console_mod.Console, summary: Summary, settings: Settings, out_path: Optional[Path]) -> None:
    """The summary on stderr, then the exit: 0, INTERRUPTED, or PARTIAL_FAILURE with advice."""
    from ..batch.runner import retry_advice
    from ..errors import BatchFailedError

    con.error(_summary_line(summary))
    if summary.cut_off_now:
        n = summary.cut_off_now
        con.error(f"batch: {n} answer{'s' if n != 1 else ''} stopped at max_tokens before the model "
                  f"finished (finish_reason \"length\"): raise max_tokens in the records or with "
                  f"--max-tokens, and write to another -o file")
    if summary.interrupted:
        again = ("run the same command again to resume" if out_path is not None
                 else "the results above are complete lines")
        con.error(f"batch: interrupted: {summary.done_now} records written this run; {again}")
        raise typer.Exit(ExitCode.INTERRUPTED)
    if summary.failed:
        msg = f"{summary.failed} of {summary.total} records failed"
        if out_path is None:
            raise BatchFailedError(msg, hint="see the error lines in the results")
        raise BatchFailedError(msg, hint=retry_advice(summary, settings))
