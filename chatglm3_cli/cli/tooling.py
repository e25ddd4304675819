"""Tools and the code interpreter on the command line: options, approval prompts, rendering.

The library (chatglm3_cli.tools) reads and runs calls; this module only builds the toolbox from
the options, asks the person at the terminal, and shows calls and results on stderr.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Annotated, Any, Callable, ClassVar, Iterator, Optional, TextIO

import typer

from .errors import UsageError
from .options import OptionGroup
from .visible import visible

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.model import Model
    from ..tools.chain import Toolbox, ToolCall, ToolOutcome

@dataclasses.dataclass(frozen=True)
class ToolArgs(OptionGroup):
    """What the model may call (chat, run): Python tools, spec-only tools, or the interpreter;
    checked when built, so usage errors come before any model loads."""

    PANEL: ClassVar[str] = "Tools"

    tools: Annotated[Optional[list[str]], typer.Option(
        "--tools", metavar="FILE.py",
        help="Python file whose public functions the model may call (repeatable). Each call is "
             "shown and runs only after you approve it.")] = None
    tool_json: Annotated[Optional[list[str]], typer.Option(
        "--tool-json", metavar="FILE",
        help="OpenAI-style tool specs (JSON) the model may call; you answer its calls yourself "
             "(repeatable).")] = None
    code: Annotated[bool, typer.Option(
        "--code", help="Code interpreter: the model writes Python that runs, after your approval, "
                       "in a Jupyter kernel in --workdir. A cell can reach your files, the network and "
                       "the environment (secret-looking variables such as HF_TOKEN are removed).")] = False
    workdir: Annotated[Optional[str], typer.Option(
        "--workdir", metavar="DIR", show_default="a new temporary directory",
        help="The interpreter's working directory (created if missing).")] = None
    cell_timeout: Annotated[float, typer.Option(
        "--cell-timeout", min=1.0, metavar="SECONDS",
        help="Interrupt a code cell that runs longer than this.")] = 60.0
    yes: Annotated[bool, typer.Option(
        "--yes", help="DANGEROUS: run every tool call and code cell without asking.")] = False
    max_tool_calls: Annotated[int, typer.Option(
        "--max-tool-calls", min=0, metavar="N",
        help="Stop after this many tool calls in a row without a plain answer.")] = 5

    @classmethod
    def from_options(cls, **values: Any) -> "ToolArgs":
        args = cls(**values)
        check_options(args.tools, args.tool_json, args.code, args.workdir)
        return args

    @property
    def wanted(self) -> bool:
        return bool(self.tools or self.tool_json or self.code)

    def toolbox(self) -> Optional["Toolbox"]:
        """The toolbox these options describe (None without tools); the caller closes it."""
        if not self.wanted:
            return None
        return build_toolbox(self.tools, self.tool_json, self.code, workdir=self.workdir,
                             cell_timeout=self.cell_timeout)


APPROVE_PROMPT = "Run it? [y]es / [n]o / [a]lways for this tool: "


def check_options(tools: Optional[list[str]], tool_json: Optional[list[str]], code: bool,
                  workdir: Optional[str]) -> None:
    """Usage errors, before any model is loaded."""
    if code and (tools or tool_json):
        raise UsageError("--code cannot be combined with --tools/--tool-json: ChatGLM3's official "
                         "prompts give the model either a tool list or the code interpreter, not both")
    if workdir and not code:
        raise UsageError("--workdir is the code interpreter's directory: it needs --code")


def build_toolbox(tools: Optional[list[str]], tool_json: Optional[list[str]], code: bool, *,
                  workdir: Optional[str], cell_timeout: float) -> "Toolbox":
    from ..tools.chain import Toolbox
    from ..tools.functions import load_json_tools, load_python_tools

    functions = []
    for path in tools or []:
        functions += load_python_tools(path)
    for path in tool_json or []:
        functions += load_json_tools(path)
    interpreter = None
    if code:
        from ..errors import InterpreterError
        from ..tools.interpreter import Interpreter

        try:
            import ipykernel  # noqa: F401
            import jupyter_client  # noqa: F401
        except ImportError as e:
            raise InterpreterError(f"--code needs jupyter_client and ipykernel ({e})") from e
        interpreter = Interpreter(workdir, timeout=cell_timeout)
    return Toolbox(functions, interpreter=interpreter)


def check_model(model: "Model", toolbox: "Toolbox") -> None:
    """Tools need a model that was trained for them."""
    if model.tool_style is None:
        raise UsageError(f"{visible(model.name)} has no tool-calling format: it is neither ChatGLM3 nor "
                         "GLM-4, and its chat template does not support tools")
    toolbox.style = model.tool_style
    if toolbox.interpreter is not None and model.family != "chatglm3":
        raise UsageError("--code is ChatGLM3's code-interpreter mode; this model is not ChatGLM3")


def parse_answer(text: Optional[str]) -> str:
    """A typed answer to the approval prompt: yes, no or always (anything else is no)."""
    word = (text or "").strip().lower()
    if word in ("y", "yes"):
        return "yes"
    if word in ("a", "always"):
        return "always"
    return "no"


def show_call(err: TextIO, call: "ToolCall", *, color: bool, workdir: Any = None) -> None:
    """The call, as the person approving it needs to see it (code with highlighting on a terminal)."""
    if call.code is not None:
        where = f" in {visible(str(workdir))}" if workdir else ""
        err.write(f"The model wants to run this Python code{where}:\n")
        # Control characters spelled out: "\x1b[2K\r" could otherwise hide a line from the reader.
        code = visible(call.code.rstrip("\n"), lines=True)
        if color:
            from rich.console import Console
            from rich.syntax import Syntax

            Console(file=err, force_terminal=True, soft_wrap=True).print(
                Syntax(code, "python", line_numbers=False, word_wrap=True))
        else:
            err.write(code + "\n")
    else:
        err.write(f"The model wants to call {visible(call.describe())}\n")
    err.flush()


def show_outcome(err: TextIO, outcome: "ToolOutcome", *, max_lines: int = 12) -> None:
    status = {"ok": "result", "error": "error", "refused": "refused", "invalid": "not run",
              "interrupted": "interrupted"}.get(outcome.status, outcome.status)
    text = visible(outcome.observation, lines=True)
    lines = text.splitlines() or [""]
    shown = "\n  ".join(lines[:max_lines])
    if len(lines) > max_lines:
        shown += f"\n  … ({len(lines) - max_lines} more lines)"
    err.write(f"[{status}] {shown}\n")
    for p in outcome.images:
        err.write(f"[image saved] {visible(str(p))}\n")
    err.flush()


def terminal_ask(read_line: Callable[[str], Optional[str]], err: TextIO, *, color: bool,
                 workdir: Any = None) -> Callable[["ToolCall"], str]:
    """An ``Approvals.ask`` that shows the call and reads yes / no / always."""
    def ask(call: "ToolCall") -> str:
        show_call(err, call, color=color, workdir=workdir)
        try:
            return parse_answer(read_line(APPROVE_PROMPT))
        except EOFError:
            err.write("\n")
            return "no"
        except KeyboardInterrupt:  # Ctrl-C stops the whole chain, not just this call
            err.write("\n")
            raise

    return ask


def tty_line_reader(err: TextIO) -> Optional[Callable[[str], Optional[str]]]:
    """A way to read an answer from the terminal even when stdin is a pipe; None without one."""
    import sys

    from .console import isatty

    if isatty(sys.stdin):
        def read(prompt: str) -> Optional[str]:
            err.write(prompt)
            err.flush()
            line = sys.stdin.readline()
            return line if line else None
        return read
    try:
        tty = open("/dev/tty", "r+")
    except OSError:
        return None

    def read_tty(prompt: str) -> Optional[str]:
        tty.write(prompt)
        tty.flush()
        line = tty.readline()
        return line if line else None
    return read_tty


def list_tools(toolbox: "Toolbox") -> str:
    lines = []
    for f in toolbox.functions.values():
        params = f.spec.get("parameters", {}).get("properties", {})
        kind = "" if f.function is not None else " (you answer its calls)"
        desc = (f.spec.get("description") or "").strip().splitlines()
        lines.append(f"  {f.name}({', '.join(params)}){kind}" + (f": {desc[0]}" if desc else ""))
    if toolbox.interpreter is not None:
        lines.append(f"  interpreter: Python in a Jupyter kernel, working directory {toolbox.interpreter.workdir}")
    return "\n".join(lines) if lines else "  no tools (start chat with --tools FILE.py, --tool-json FILE or --code)"


def chat_approvals(yes: bool) -> Any:
    """--yes approves everything; otherwise the chat asks at each call (None: the REPL's own)."""
    from ..tools.chain import Approvals

    return Approvals(approve_all=True) if yes else None


def specs(toolbox: Optional["Toolbox"]) -> Optional[list[dict[str, Any]]]:
    return (toolbox.specs() or None) if toolbox is not None else None


@contextlib.contextmanager
def closing(toolbox: Optional["Toolbox"]) -> Iterator[None]:
    """The interpreter's kernel is shut down when the command ends, however it ends."""
    try:
        yield
    finally:
        if toolbox is not None:
            toolbox.close()


def run_approvals(con: Any, toolbox: "Toolbox", yes: bool) -> Any:
    """Consent for `run`: --yes, else a terminal to ask on; with neither, tools that would
    execute something are refused up front (a usage error, before the model loads)."""
    from ..tools.chain import Approvals

    if yes:
        return Approvals(approve_all=True)
    if not toolbox.executes:
        return Approvals()
    reader = tty_line_reader(con.stderr)
    if reader is None:
        raise UsageError("no terminal to approve tool calls on: run in a terminal, or pass --yes "
                         "to run every call without asking (dangerous)")
    workdir = toolbox.interpreter.workdir if toolbox.interpreter is not None else None
    return Approvals(terminal_ask(reader, con.stderr, color=con.stderr_isatty, workdir=workdir))


def follow_calls(session: Any, turn: Any, toolbox: "Toolbox", approvals: Any, *, err: TextIO,
                 stream: Callable[[Any], None], max_calls: int, show: bool = True, color: bool = False) -> Any:
    """Run the model's tool calls after `turn` (chat and run alike): a call that runs without
    asking is shown before it runs, each outcome after it (unless `show` is off: --json)."""
    from ..tools.chain import run_chain

    def on_call(call: "ToolCall") -> None:
        if show and approvals.preapproved(call):  # else the approval prompt shows it
            show_call(err, call, color=color)

    def on_outcome(outcome: "ToolOutcome") -> None:
        if show:
            show_outcome(err, outcome)

    return run_chain(session, turn, toolbox, approvals, stream=stream, max_calls=max_calls,
                     on_call=on_call, on_outcome=on_outcome)


def chain_end_note(chain: Any, max_calls: int, *, in_chat: bool) -> Optional[str]:
    """Why a chain stopped short, for the user: too many calls, or a call only they can answer."""
    if chain.limit_reached:
        return f"stopped: the model asked for more than {max_calls} tool calls in a row (--max-tool-calls {max_calls})"
    if chain.pending is not None:
        call = visible(chain.pending.describe())
        if in_chat:
            return f"the model calls {call}: type the result; it goes back as the observation"
        return (f"the model calls {call}: answer it in `chatglm3 chat --tool-json`, "
                "or give the tool an implementation with --tools FILE.py")
    return None


def answer_with_tools(con: Any, m: "Model", toolbox: "Toolbox", approvals: Any, *, system: Optional[str],
                      text: str, params: Any, max_calls: int, as_json: bool,
                      verbose_prompt: bool) -> Any:
    """`run` with tools: plain answers go to stdout as they stream; tool calls, results and
    images are shown on stderr; returns the last Completion and the chain for --json."""
    from ..chat.session import ChatSession
    from ..engine.prompt import Message
    from ..engine.toolcalls import call_marker_start

    check_model(m, toolbox)
    session = ChatSession(m, system=toolbox.system_prompt(system), params=params, tools=toolbox.specs() or None)
    if verbose_prompt:
        ids = m.prompt_ids(session.system_messages() + [Message("user", text)])
        con.error(f"prompt: {len(ids)} tokens")
        con.error(" ".join(str(i) for i in ids))
    state = {"wrote": False, "nl": True}

    def write(piece: str) -> None:
        if piece:
            con.write(piece)
            state["wrote"], state["nl"] = True, piece.endswith("\n")

    def stream(turn: Any) -> None:
        gen = turn.generation
        # A template model writes its call in its text: what may be a call waits for the end.
        text, sent = "", 0
        try:
            for piece in turn:
                if as_json or gen.metadata:  # a call is not the answer: it is shown on stderr
                    continue
                if toolbox.style != "template":
                    write(piece)
                    continue
                text += piece
                cut = call_marker_start(text)
                if cut > sent:
                    write(text[sent:cut])
                    sent = cut
            if text[sent:] and (turn.result is None or toolbox.call_in(turn.result)[0] is None):
                write(text[sent:])
        finally:
            turn.close()
            if state["wrote"] and not state["nl"]:
                con.write("\n")
                state["nl"] = True

    try:
        chain = follow_calls(session, session.ask(text), toolbox, approvals, err=con.stderr, stream=stream,
                             max_calls=max_calls, show=not as_json, color=con.stderr_isatty)
    finally:
        toolbox.close()
    note = chain_end_note(chain, max_calls, in_chat=False)
    if note and not as_json:
        con.error(note)
    return session, chain
