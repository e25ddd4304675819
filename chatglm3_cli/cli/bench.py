"""`chatglm3 bench`: how fast is this model here, and is the tool in the way?"""
from __future__ import annotations

import json
from typing import Annotated

import typer

from . import console as console_mod
from .errors import UsageError, handle_errors
from .options import ModelArgs, with_options


@handle_errors
@with_options
def bench(
    prompt_tokens: Annotated[int, typer.Option(
        "--prompt-tokens", min=8, help="Prompt length for the single-stream runs.")] = 128,
    gen_tokens: Annotated[int, typer.Option(
        "--gen-tokens", min=2, help="Tokens to generate per run and per record.")] = 32,
    parallel: Annotated[str, typer.Option(
        "--parallel", "-p", metavar="N,N,...", help="Sequences in flight to compare, e.g. 1,2,4,8.")] = "1,2,4",
    records: Annotated[int, typer.Option("--records", min=1, help="Records in each parallel run.")] = 8,
    reps: Annotated[int, typer.Option(
        "--reps", min=1, help="Runs of each measurement, ours and raw alternating (median and spread).")] = 3,
    load: Annotated[int, typer.Option(
        "--load", min=0, max=8, help="Also measure single-stream decode beside this many competing "
        "generations of the same model (other processes), alternating with runs alone.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON (a stable schema).")] = False,
    model: ModelArgs = ModelArgs.options(omit=("ctx", "verbose", "speculate", "cache_type")),
) -> None:
    """Measure prompt and generation speed against a raw llama.cpp loop on the same model.

    Single stream and parallel, and the machine's memory-bandwidth limit.
    """
    from ..bench.format import format_report
    from ..bench.run import run_bench

    try:
        levels = sorted({int(x) for x in parallel.split(",") if x.strip()})
    except ValueError:
        raise UsageError(f"--parallel takes numbers separated by commas, not {parallel!r}") from None
    if not levels or min(levels) < 1:
        raise UsageError("--parallel needs at least one number >= 1")
    con = console_mod.current()
    report = run_bench(model.path(), prompt_tokens=prompt_tokens, gen_tokens=gen_tokens,
                       parallel=levels, reps=reps, records=records, threads=model.threads,
                       gpu_layers=model.gpu_layers, chat_template=model.template(), load=load,
                       progress=lambda s: con.error(f"bench: {s}…"))
    if as_json:
        con.write(json.dumps(report.to_dict(), indent=2) + "\n")
        for w in report.warnings():  # the table carries them; JSON readers see "noisy" too
            con.error(f"bench: warning: {w}")
    else:
        con.write(format_report(report) + "\n")
