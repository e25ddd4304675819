"""`chatglm3 run`: one prompt in, one answer out; made for pipes and scripts."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from ..engine.sampling import DEFAULT_ANSWER_CAP
from . import console as console_mod
from .errors import UsageError, handle_errors
from .exit_codes import ExitCode
from .options import ModelArgs, SamplingArgs, SamplingParams, SystemArgs, with_options
from .tooling import ToolArgs

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.completion import Completion
    from ..engine.generate import Generation
    from ..engine.model import Model
    from ..engine.prompt import Message


@handle_errors
@with_options
def run(
    prompt: Annotated[Optional[list[str]], typer.Argument(
        help="The prompt. Piped stdin comes first, then -f FILE, then these words.",
        metavar="PROMPT...", show_default=False)] = None,
    file: Annotated[Optional[str], typer.Option(
        "--file", "-f", help="Read the prompt from a file ('-' for stdin).", metavar="PATH")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print one JSON object (response, metadata, usage, timings) instead of text.")] = False,
    stats: Annotated[bool, typer.Option("--stats", help="Print token counts and speed to stderr.")] = False,
    verbose_prompt: Annotated[bool, typer.Option(
        "--verbose-prompt", help="Print the exact prompt token ids and their text to stderr.")] = False,
    model: ModelArgs = ModelArgs.options(),
    # A cap where no one watches the answer stream: a model that never ends its turn would
    # otherwise fill the whole context (reported on stderr when it is reached).
    sampling: SamplingParams = SamplingArgs.options(max_tokens=DEFAULT_ANSWER_CAP),
    system: SystemArgs = SystemArgs.options(),
    tool_args: ToolArgs = ToolArgs.options(),
) -> None:
    """Answer one prompt and exit.

    Examples: chatglm3 run "Hello" · git diff | chatglm3 run "review this" · chatglm3 run -f q.txt --json
    """
    from ..engine.prompt import Message

    con = console_mod.current()
    text = gather_prompt(con, prompt, file)
    sys_text = system.text()
    messages = ([Message("system", sys_text)] if sys_text else []) + [Message("user", text)]

    if tool_args.wanted:
        _run_with_tools(con, model, tool_args, sys_text, text, sampling, as_json, stats, verbose_prompt)
        return

    with model.open() as m:
        ids = m.prompt_ids(messages)
        if verbose_prompt:
            show_prompt(con, m, ids)
        gen = m.generate(prompt_ids=ids, params=sampling)
        result = gen.complete() if as_json else stream(con, gen)
        if as_json:
            con.write(json.dumps(json_record(m, messages, result), ensure_ascii=False) + "\n")
        if result.finish_reason == "length":
            # Truncation is not success, but the text is still the answer: say so on stderr.
            con.error(cut_off_note(result, sampling, m.n_ctx))
        if stats:
            _stats(con, result)


def gather_prompt(con: console_mod.Console, prompt: Optional[list[str]], file: Optional[str]) -> str:
    """Piped stdin, then -f FILE, then the words, joined by blank lines. Nothing at all on a
    terminal: usage and exit 2, rather than waiting for input."""
    from ..textio import decode_text, read_text_file

    parts: list[str] = []
    stdin_used = False
    if not con.stdin_isatty and file != "-":
        data = con.read_stdin_bytes()
        stdin_used = True
        if data.strip():
            parts.append(decode_text(data, "stdin").strip("\n"))
    if file is not None:
        if file == "-":
            if con.stdin_isatty:
                raise UsageError("-f - reads the prompt from stdin, but stdin is a terminal")
            parts.append(decode_text(con.read_stdin_bytes(), "stdin").strip("\n"))
        else:
            parts.append(read_text_file(file).strip("\n"))
    if prompt:
        parts.append(" ".join(prompt))
    text = "\n\n".join(p for p in parts if p.strip())
    if not text.strip():
        if stdin_used or file is not None:
            raise UsageError("the prompt is empty")
        con.error("Usage: chatglm3 run [OPTIONS] [PROMPT]...  (or pipe text in: echo hi | chatglm3 run)")
        con.error("Try 'chatglm3 run --help' for help.")
        raise typer.Exit(ExitCode.USAGE)
    return text


def show_prompt(con: console_mod.Console, m: Model, ids: list[int]) -> None:
    """--verbose-prompt: the token ids and their text, on stderr."""
    con.error(f"prompt: {len(ids)} tokens")
    con.error(" ".join(str(i) for i in ids))
    con.error("".join(f"[{t}]" for _, t in m.describe(ids)))


def stream(con: console_mod.Console, gen: Generation) -> Completion:
    """Write the answer as it comes, ending with one newline (also when stopped early)."""
    wrote_any = False
    ends_newline = True
    try:
        for piece in gen:
            con.write(piece)
            wrote_any = True
            ends_newline = piece.endswith("\n")
    finally:
        gen.close()
        if wrote_any and not ends_newline:
            con.write("\n")
    assert gen.result is not None
    return gen.result


def json_record(m: Model, messages: list[Message], result: Completion) -> dict[str, Any]:
    """--json without tools: one object for the whole exchange. No tool was offered, so a
    tool-shaped answer is content (engine/answer.py); "metadata" still names the tool."""
    from ..engine.answer import read_answer

    answer = read_answer(result)
    return {
        "model": str(m.path), "family": m.family,
        "messages": [msg.to_dict() for msg in messages],
        "response": answer.content, "metadata": result.metadata,
        "segments": [s.to_dict() for s in result.segments],
        "finish_reason": answer.finish_reason, "usage": result.usage,
        "timings": result.timings.to_dict(),
    }


def cut_off_note(result: Completion, sampling: SamplingParams, n_ctx: int) -> str:
    """Why an answer ended at finish_reason "length": --max-tokens, or a full context."""
    if sampling.max_tokens is not None and result.completion_tokens >= sampling.max_tokens:
        return (f"note: the answer was cut off at {sampling.max_tokens} tokens (--max-tokens): "
                f"raise it to let the model finish")
    return f"note: the answer was cut off: the context of {n_ctx} tokens is full (raise --ctx)"


def _run_with_tools(con: console_mod.Console, model: ModelArgs, tools: ToolArgs, sys_text: Optional[str],
                    text: str, sampling: SamplingParams, as_json: bool, stats: bool, verbose_prompt: bool) -> None:
    """One prompt with tools: the model's calls run (with consent) until it answers."""
    from . import tooling

    toolbox = tools.toolbox()
    assert toolbox is not None
    with tooling.closing(toolbox):
        approvals = tooling.run_approvals(con, toolbox, tools.yes)  # before the model loads
        with model.open() as m:
            session, chain = tooling.answer_with_tools(
                con, m, toolbox, approvals, system=sys_text, text=text, params=sampling,
                max_calls=tools.max_tool_calls, as_json=as_json, verbose_prompt=verbose_prompt)
            result = chain.last
            if as_json:
                con.write(json.dumps({
                    "model": str(m.path), "family": m.family,
                    "messages": [msg.to_dict() for msg in session.all_messages()],
                    "response": result.text if result and result.finish_reason != "tool_calls" else "",
                    "metadata": result.metadata if result else "",
                    "finish_reason": result.finish_reason if result else "interrupted",
                    "tool_calls": [o.to_dict() for o in chain.outcomes],
                    "pending_call": chain.pending.to_dict() if chain.pending else None,
                    "tool_call_limit_reached": chain.limit_reached,
                    "usage": result.usage if result else None,
                    "timings": result.timings.to_dict() if result else None,
                }, ensure_ascii=False) + "\n")
            if stats and result is not None:
                _stats(con, result)


def _stats(con: console_mod.Console, result: Any) -> None:
    t = result.timings
    pt = f"{t.prompt_tps:.1f} tok/s" if t.prompt_tps else "-"
    gt = f"{t.generation_tps:.1f} tok/s" if t.generation_tps else "-"
    con.error(f"prompt: {result.prompt_tokens} tokens ({result.cached_tokens} cached), "
              f"{t.prompt_tokens} evaluated in {t.prompt_ms / 1000:.2f}s, {pt} | "
              f"generation: {t.generated_tokens} tokens in {t.generation_ms / 1000:.2f}s, {gt} | "
              f"finish: {result.finish_reason}")
