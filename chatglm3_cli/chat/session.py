"""A conversation with a model: messages, sampling settings, and the context window.

Each turn evaluates only what is new: the assistant's answers are kept as the token ids the
model generated, so the next prompt begins with exactly what the KV cache already holds.
When a turn would not fit, the oldest turns leave the window (the system prompt never does).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

from ..engine.prompt import Message
from ..engine.sampling import SamplingParams
from ..errors import PromptTooLongError

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.completion import Completion
    from ..engine.generate import Generation
    from ..engine.model import Model


@dataclass
class Turn:
    """One answer being generated: iterate for text; the session records it when it ends."""

    session: "ChatSession"
    generation: "Generation"
    dropped: int = 0  # turns that left the context window to make room for this one
    _done: bool = field(default=False, repr=False)

    def __iter__(self) -> Iterator[str]:
        try:
            if self.session.tools and self.session.model.tool_style == "template":
                yield from self._held_back()
            else:
                yield from self.generation
        finally:
            self._finish()

    def _held_back(self) -> Iterator[str]:
        """A model whose chat template took the tools writes a call as text (``<tool_call>``, or
        a JSON object): text from where a call may begin waits until the answer ends, and is
        shown only when it was not a call to an offered tool (the call is shown as a call)."""
        from ..engine.toolcalls import call_marker_start, function_specs, read_template_calls

        text, sent = "", 0
        for piece in self.generation:
            text += piece
            upto = call_marker_start(text)
            if upto > sent:
                yield text[sent:upto]
                sent = upto
        offered = {f["name"] for f in function_specs(self.session.tools or [])}
        if sent < len(text) and read_template_calls(text, offered) is None:
            yield text[sent:]

    def close(self) -> None:
        self.generation.close()
        self._finish()

    @property
    def result(self) -> "Completion | None":
        return self.generation.result

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        r = self.generation.result
        if r is None:
            return
        self.session._record(r)


class ChatSession:
    def __init__(self, model: "Model", *, system: str | None = None,
                 params: SamplingParams | None = None, messages: list[Message] | None = None,
                 tools: list[dict[str, Any]] | None = None) -> None:
        self.model = model
        self.params = params or SamplingParams()
        self.system = system or None
        # Tool specs the model may call: they go first, in ChatGLM3's tool system message.
        self.tools = tools or None
        self.messages: list[Message] = list(messages or [])  # user/assistant/observation turns
        self.window_start = 0  # index of the first message still inside the context window
        self.last_prompt_tokens = 0
        self.last_completion: "Completion | None" = None
        self._told_dropped = False

    # conversation ------------------------------------------------------------------------

    def system_messages(self) -> list[Message]:
        """The tools message (when there are tools), then the system prompt."""
        from ..engine.toolcalls import tools_message

        out = [tools_message(self.tools)] if self.tools else []
        return out + ([Message("system", self.system)] if self.system else [])

    def all_messages(self) -> list[Message]:
        """The whole conversation, system messages first (what is saved)."""
        return self.system_messages() + self.messages

    def add(self, message: Message) -> None:
        """Record a message without answering it (an observation the chain will not follow)."""
        self.messages.append(message)

    def clear(self) -> None:
        """Forget the turns; the system prompt stays."""
        self.messages = []
        self.window_start = 0

    def load(self, messages: list[Message]) -> None:
        system = [m for m in messages if m.role == "system" and m.tools is None]
        if system:
            self.system = system[0].content or None
        tools = [m for m in messages if m.role == "system" and m.tools is not None]
        if tools:
            self.tools = tools[0].tools
        self.messages = [m for m in messages if m.role != "system"]
        for m in self.messages:
            if m.token_ids is not None and not _spells(self.model, m):
                m.token_ids = None  # another model's, or edited: the text is encoded instead
        self.window_start = 0
        self.last_prompt_tokens, self.last_completion = 0, None

    def switch_model(self, model: "Model") -> "Model":
        """Answer with another model from now on (/load of a conversation made with it); the
        system prompt, sampling settings and tools stay. Returns the model it replaced (the
        caller closes it). Load the messages again after it: saved token ids are checked
        against the model that reads them."""
        old, self.model = self.model, model
        for m in self.messages:
            m.token_ids = None  # the old model's spelling: the text is encoded again
        self.window_start = 0
        self.last_prompt_tokens, self.last_completion = 0, None
        return old

    @property
    def context_used(self) -> int:
        c = self.last_completion
        if c is None and self.messages:  # resumed or loaded: what the conversation takes now
            return len(self._prompt_ids())
        return self.last_prompt_tokens + (c.completion_tokens if c else 0)

    @property
    def n_ctx(self) -> int:
        return self.model.n_ctx

    # turns -------------------------------------------------------------------------------

    def ask(self, text: str, *, role: str = "user") -> Turn:
        """Add a user message and start the answer."""
        msg = Message(role, text)
        self.messages.append(msg)
        try:
            return self._start()
        except BaseException:
            self.messages.pop()
            raise

    def regen(self) -> Turn:
        """Drop the last answer and answer the same prompt again (its prefix stays cached)."""
        if not self.messages or self.messages[-1].role != "assistant":
            raise ValueError("there is no answer to regenerate")
        removed: list[Message] = []
        while self.messages and self.messages[-1].role == "assistant":  # every message of the answer
            removed.insert(0, self.messages.pop())
        try:
            return self._start()
        except BaseException:
            self.messages += removed
            raise

    def take_dropped_notice(self, dropped: int) -> str | None:
        """The user is told once that old turns left the context window."""
        if dropped and not self._told_dropped:
            self._told_dropped = True
            return ("the conversation no longer fits the context: the oldest turns were dropped "
                    "from what the model sees (the system prompt is kept; raise --ctx to keep more)")
        return None

    def _answer_room(self) -> int:
        want = self.params.max_tokens or 1024
        return max(1, min(want, self.n_ctx // 4))

    def _start(self) -> Turn:
        before = self.window_start
        ids = self._prompt_ids()
        room = self._answer_room()
        # Drop whole exchanges from the front until the prompt leaves room for the answer.
        while len(ids) + room > self.n_ctx and self.window_start < len(self.messages) - 1:
            self.window_start += 1
            while (self.window_start < len(self.messages) - 1
                   and self.messages[self.window_start].role != "user"):
                self.window_start += 1
            ids = self._prompt_ids()
        if len(ids) + 1 > self.n_ctx:
            raise PromptTooLongError(len(ids), self.n_ctx)
        gen = self.model.generate(prompt_ids=ids, params=self.params)
        self.last_prompt_tokens = len(ids)
        return Turn(self, gen, dropped=self.window_start - before)

    def _prompt_ids(self) -> list[int]:
        window = self.messages[self.window_start:]
        msgs = self.system_messages() + window
        return self.model.prompt_ids(msgs)

    def _record(self, r: "Completion") -> None:
        self.last_completion = r
        own = self.model.family in ("chatglm3", "glm4")
        if own and len(r.segments) > 1:
            # Each message of the answer is an assistant message of this turn (as the official
            # process_response keeps them); their token ids replay the model's own answer.
            for i, seg in enumerate(r.segments):
                last = i == len(r.segments) - 1
                self.messages.append(Message("assistant", seg.text, metadata=seg.metadata, token_ids=seg.tokens,
                                             interrupted=last and r.finish_reason == "interrupted"))
            return
        self.messages.append(Message("assistant", r.text, metadata=r.metadata, token_ids=r.tokens if own else None,
                                     interrupted=r.finish_reason == "interrupted"))


def _spells(model: "Model", m: Message) -> bool:
    """Whether saved token ids are this model's spelling of an answer: every id in its
    vocabulary, and their text, split and stripped as answers are (metadata line, content),
    gives the message's metadata and content."""
    ids = m.token_ids or []
    llama = getattr(model, "_llama", None)
    if llama is None or not all(0 <= i < llama.n_vocab for i in ids):
        return False
    text = b"".join(llama.token_bytes(i) for i in ids).decode("utf-8", errors="replace")
    meta, _, body = text.partition("\n") if model.metadata_line else ("", "", text)
    return meta.strip() == m.metadata.strip() and body.strip() == m.content.strip()
