"""The tool loop: read the model's call, ask for consent, run it, answer with an observation.

``Toolbox`` knows what the model may call (Python functions, spec-only tools, the code
interpreter) and runs one call; ``Approvals`` decides whether a call may run (--yes, "always"
for a tool, else the caller's ``ask`` callback); ``run_chain`` drives a ChatSession through
calls and observations until the model answers in plain text or the chain limit is reached.
Nothing the model writes runs unless ``Approvals.allowed`` said yes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Sequence

from ..engine.prompt import Message
from ..engine.toolcalls import read_call
from .functions import FunctionTool, check_unique
from .interpreter import INTERPRETER_METADATA, INTERPRETER_SYSTEM_PROMPT, Interpreter, extract_code, truncate

if TYPE_CHECKING:  # pragma: no cover
    from ..chat.session import ChatSession, Turn

DEFAULT_MAX_CALLS = 5
Status = Literal["ok", "error", "refused", "manual", "invalid", "interrupted"]
REFUSED = "The user refused to run this call."


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any] | None = None  # a function call's (literal) arguments
    code: str | None = None                  # an interpreter cell
    text: str = ""                           # the model's message as written
    problem: str | None = None               # why it cannot run (unknown tool, unreadable arguments)

    def describe(self) -> str:
        """One line for people: name(arguments) or the interpreter's first code line."""
        if self.code is not None:
            first = self.code.strip().splitlines()[0] if self.code.strip() else ""
            return f"interpreter: {first}" + (" …" if len(self.code.strip().splitlines()) > 1 else "")
        if self.arguments is None:
            return f"{self.name}(?)"
        return f"{self.name}({', '.join(f'{k}={v!r}' for k, v in self.arguments.items())})"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.code is not None:
            out["code"] = self.code
        else:
            out["arguments"] = self.arguments
        if self.problem:
            out["problem"] = self.problem
        return out


@dataclass
class ToolOutcome:
    call: ToolCall
    status: Status
    observation: str            # what goes back to the model (already truncated)
    images: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {**self.call.to_dict(), "status": self.status, "result": self.observation}
        if self.images:
            out["images"] = [str(p) for p in self.images]
        return out


class Approvals:
    """Consent for tool calls: everything with ``approve_all`` (--yes), tools the user said
    "always" to, otherwise whatever ``ask`` answers ("yes", "no" or "always"); no ``ask`` and
    no --yes means no."""

    def __init__(self, ask: Callable[[ToolCall], str] | None = None, *, approve_all: bool = False) -> None:
        self.ask = ask
        self.approve_all = approve_all
        self.always: set[str] = set()

    def preapproved(self, call: ToolCall) -> bool:
        """Allowed without asking (--yes, or "always" for this tool)."""
        return self.approve_all or call.name in self.always

    def allowed(self, call: ToolCall) -> bool:
        if self.preapproved(call):
            return True
        if self.ask is None:
            return False
        answer = self.ask(call)
        if answer == "always":
            self.always.add(call.name)
            return True
        return answer == "yes"


class Toolbox:
    """What the model may call in one conversation. Owns the interpreter's kernel: close it."""

    def __init__(self, functions: Sequence[FunctionTool] = (), *, interpreter: Interpreter | None = None,
                 style: str | None = "chatglm3") -> None:
        check_unique(functions)
        self.functions = {f.name: f for f in functions}
        self.interpreter = interpreter
        self.style = style or "chatglm3"

    @property
    def empty(self) -> bool:
        return not self.functions and self.interpreter is None

    def specs(self) -> list[dict[str, Any]]:
        return [f.spec for f in self.functions.values()]

    def system_prompt(self, user_system: str | None) -> str | None:
        """The conversation's system prompt: the user's, else the interpreter's official one.
        (Function specs go in their own system message first: ChatSession(tools=specs()).)"""
        if user_system:
            return user_system
        return INTERPRETER_SYSTEM_PROMPT if self.interpreter is not None else None

    def read(self, metadata: str, text: str) -> ToolCall:
        """The call in a message that ended with <|observation|>."""
        name = metadata.strip()
        if name == INTERPRETER_METADATA and self.interpreter is not None:
            code = extract_code(text)
            if code is None:
                return ToolCall(name, code="", text=text, problem="the message holds no ```python block")
            return ToolCall(name, code=code, text=text)
        args = read_call(text, self.style)
        if name not in self.functions:
            return ToolCall(name, arguments=args, text=text,
                            problem=f"there is no tool named {name!r}" if name else "the call names no tool")
        if args is None:
            return ToolCall(name, text=text, problem="its arguments cannot be read (only literal values are accepted)")
        problem = self.functions[name].check(args)
        return ToolCall(name, arguments=args, text=text,
                        problem=f"invalid arguments: {problem}" if problem else None)

    def call_in(self, r: Any) -> tuple[ToolCall | None, Any]:
        """The call a Completion ended with (None: a plain answer), and the Completion as the
        caller reports it. A model whose chat template took the tools (style "template")
        writes its call in its text and ends its turn as usual: engine/answer.py reads it, and
        the Completion reported has the content before the call and finish "tool_calls"."""
        if self.style == "template":
            from dataclasses import replace

            from ..engine.answer import read_answer

            answer = read_answer(r, set(self.functions), "template")
            if answer.call is None:
                return None, r
            name, args = answer.call.name, answer.call.arguments
            problem = self.functions[name].check(args)
            call = ToolCall(name, arguments=args, text=r.text,
                            problem=f"invalid arguments: {problem}" if problem else None)
            return call, replace(r, text=answer.content, finish_reason="tool_calls")
        if r.finish_reason != "tool_calls":
            return None, r
        # The call is the answer's last message (text may come before it, engine/answer.py).
        return self.read(r.metadata, r.segments[-1].text if r.segments else r.text), r

    @property
    def executes(self) -> bool:
        """Whether any call could execute something here (code, or a tool with a function):
        without that, no one needs to be asked."""
        return self.interpreter is not None or any(f.function is not None for f in self.functions.values())

    def needs_consent(self, call: ToolCall) -> bool:
        """Whether running this call would execute anything."""
        if call.problem:
            return False
        if call.code is not None:
            return True
        fn = self.functions.get(call.name)
        return fn is not None and fn.function is not None

    def run(self, call: ToolCall, approvals: Approvals) -> ToolOutcome:
        """Run the call if it may run; every path ends in the observation the model will see."""
        if call.problem:
            return ToolOutcome(call, "invalid", f"Error: {call.problem}")
        if not self.needs_consent(call):
            return ToolOutcome(call, "manual", "")  # a spec-only tool: the user answers
        fn = self.functions.get(call.name)
        if not approvals.allowed(call):
            return ToolOutcome(call, "refused", REFUSED)
        if call.code is not None:
            assert self.interpreter is not None
            cell = self.interpreter.run(call.code)
            status: Status = "interrupted" if cell.interrupted else "error" if (cell.error or cell.timed_out) else "ok"
            return ToolOutcome(call, status, cell.observation(), images=cell.images)
        assert fn is not None and call.arguments is not None
        try:
            text = fn.call(call.arguments)
        except KeyboardInterrupt:
            return ToolOutcome(call, "interrupted", "Error: interrupted by the user")
        except Exception as e:  # the tool's own failure goes back to the model, as in the demo
            return ToolOutcome(call, "error", truncate(f"Error: {type(e).__name__}: {e}"))
        return ToolOutcome(call, "ok", truncate(text))

    def close(self) -> None:
        if self.interpreter is not None:
            self.interpreter.close()


@dataclass
class ChainResult:
    outcomes: list[ToolOutcome] = field(default_factory=list)
    limit_reached: bool = False
    pending: ToolCall | None = None  # a call left unanswered (limit, manual tool, interruption)
    last: Any = None                 # the last Completion


def run_chain(session: "ChatSession", turn: "Turn", toolbox: Toolbox, approvals: Approvals, *,
              stream: Callable[["Turn"], None], max_calls: int = DEFAULT_MAX_CALLS,
              on_call: Callable[[ToolCall], None] = lambda c: None,
              on_outcome: Callable[[ToolOutcome], None] = lambda o: None) -> ChainResult:
    """Stream ``turn``; while the model ends a message with a tool call, run it (with consent)
    and answer with the observation, at most ``max_calls`` times in a row."""
    out = ChainResult()
    while True:
        stream(turn)
        r = turn.result
        out.last = r
        if r is None:
            return out
        call, out.last = toolbox.call_in(r)
        if call is None:
            return out
        if len(out.outcomes) >= max_calls:
            out.limit_reached = True
            out.pending = call
            return out
        on_call(call)
        outcome = toolbox.run(call, approvals)
        if outcome.status == "manual":
            out.pending = call
            return out
        out.outcomes.append(outcome)
        on_outcome(outcome)
        if outcome.status == "interrupted":
            session.add(Message("observation", outcome.observation))
            return out
        turn = session.ask(outcome.observation, role="observation")

