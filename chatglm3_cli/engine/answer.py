"""What a finished answer comes back as, the same on every path (run --json, chat, batch
results, OpenAI Batch lines, serve streamed and not): its content, the tool call it ended
with (if any), and the finish reason.

The rule (README: "Answers in several parts"), after the official ChatGLM3 demo and the
OpenAI API:
- an answer is one or more messages (segments), split where the model writes
  ``<|assistant|>``; each begins with a metadata line (empty for text, a tool's name for a
  call);
- the content is the segments' text joined by a blank line;
- when the answer ended with the tool-call stop (``<|observation|>``), its last segment names
  a tool that was offered, and the call's arguments read as literals, that segment is the tool
  call (finish_reason "tool_calls") and the content is the text before it (empty: none);
- a model whose chat template took the tools (style "template") writes its calls in its
  text and ends its turn as usual: when the answer ended (finish "stop"), its text is one or
  more ``<tool_call>`` JSON ``</tool_call>`` blocks (text allowed before the first, nothing
  after the last) or one bare JSON object ``{"name", "arguments"|"parameters"}``, and every
  call names an offered tool, those are the calls (finish_reason "tool_calls", the content is
  the text before them);
- otherwise (no tools offered, a tool that was not offered, arguments that cannot be read)
  the call's text stays in the content and the finish reason is "stop": the official
  ``process_response`` hands such a message back as ``{"name", "content"}``, which is the
  content here and the tool's name in the answer's ``metadata``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Collection

from .sequence import SEGMENT_SEPARATOR
from .toolcalls import read_call, read_template_calls

if TYPE_CHECKING:  # pragma: no cover
    from .completion import Completion


@dataclass(frozen=True)
class Call:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    content: str
    call: Call | None  # the (first) call
    finish_reason: str
    calls: tuple[Call, ...] = ()  # every call, ``call`` first (a template model may write several)


def read_answer(comp: "Completion", offered: Collection[str] = (), style: str | None = "chatglm3") -> Answer:
    """The answer of a Completion when the tools named ``offered`` were offered."""
    if style == "template":
        read = read_template_calls(comp.text, offered) if comp.finish_reason == "stop" else None
        if read is None:
            return Answer(comp.text, None, comp.finish_reason)
        calls = tuple(Call(name, args) for name, args in read[1])
        return Answer(read[0], calls[0], "tool_calls", calls)
    segments = comp.segments
    last = segments[-1] if segments else None
    if comp.finish_reason == "tool_calls" and last is not None and last.metadata in offered and last.metadata:
        args = read_call(last.text, style or "chatglm3")
        if args is not None:
            content = SEGMENT_SEPARATOR.join(s.text for s in segments[:-1] if s.text)
            call = Call(last.metadata, args)
            return Answer(content, call, "tool_calls", (call,))
    reason = "stop" if comp.finish_reason == "tool_calls" else comp.finish_reason
    return Answer(comp.text, None, reason)
