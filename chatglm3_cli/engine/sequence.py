"""One answer being decoded: the per-sequence state machine that every decoding loop drives.

``generate.Generation`` (run, chat: one sequence) and ``decoder.ParallelDecoder`` (batch,
translate, serve: many sequences in one context) decide only *what is evaluated in which
step*. What a sampled token means is decided here, once: token bytes to UTF-8 text,
ChatGLM3's metadata line, a new ``<|assistant|>`` segment, stop and tool-stop tokens, stop
strings, the token limit and a full context, prompt-lookup drafts and which of them the model
confirmed, and the Completion at the end.

States: ``PROMPTING`` (prompt cells being evaluated), ``GENERATING`` (tokens being sampled),
``DONE`` (a finish reason is set; nothing more is taken).
"""
from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

from .speculation import PromptLookup

if TYPE_CHECKING:  # pragma: no cover
    from .completion import Completion, Timings
    from .sampling import SamplingParams

PROMPTING = "prompting"
GENERATING = "generating"
DONE = "done"

# Longer than any tool name (OpenAI caps function names at 64): a first line this long without
# "\n" is content, not metadata, and streaming need not wait for more of it.
_MAX_METADATA_CHARS = 64
# Between the segments of one answer in its joined text (README: "Answers in several parts").
SEGMENT_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class AnswerFormat:
    """What a model's answers look like: read once from the Model, shared by its sequences."""

    stop_tokens: frozenset[int]
    tool_stop: int | None  # the stop token that ends a tool call (ChatGLM3's <|observation|>)
    segment_token: int | None  # a new message inside the answer (ChatGLM3's <|assistant|>)
    metadata_line: bool  # answers (and each segment) begin with a metadata line
    token_bytes: Callable[[int], bytes]


@dataclass
class Segment:
    """One message of an answer: its metadata line (a tool's name, or empty) and its text."""

    metadata: str
    text: str
    # The model's own token ids of this message (without the <|assistant|> that starts it):
    # replayed as they are in the next turn's prompt.
    tokens: list[int] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, str]:
        return {"metadata": self.metadata, "text": self.text}


class Utf8Stream:
    """Joins token bytes into text without ever splitting a multi-byte character.

    ChatGLM3 spells rare characters and emoji as byte tokens (<0xF0> <0x9F> ...), so one
    character can arrive over several tokens. Invalid bytes become U+FFFD, as in the
    official decode.
    """

    def __init__(self) -> None:
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return self._dec.decode(data)

    def finish(self) -> str:
        return self._dec.decode(b"", final=True)


class AnswerShaper:
    """Turns the raw generated text into the answer, incrementally.

    ChatGLM3 begins its answer with a metadata line: empty for a plain answer, the tool's name
    for a tool call. The official ``process_response`` splits on the first "\\n", and strips
    the content of a plain answer. We do the same while streaming: the metadata line is held
    back, leading whitespace dropped, and trailing whitespace held until more text follows, so
    the streamed pieces join to exactly the final answer. ``segments`` holds each message's
    metadata and text (without the separator).
    """

    def __init__(self, *, metadata_line: bool) -> None:
        self.metadata: str = ""
        # Other models: only the leading space of an SPM vocabulary's first piece is dropped.
        self._state = "meta" if metadata_line else "lead_raw"
        self._meta_buf = ""
        self._pending_ws = ""
        self._emitted = False
        self._separate = False
        self.segments: list[Segment] = [Segment("", "")]

    def new_segment(self) -> None:
        """The model wrote ``<|assistant|>`` inside its answer: a new message begins, with its
        own metadata line (ChatGLM3 does this to start a tool call or interpreter cell after
        some text; the official process_response splits on it). The segments' text is joined
        by a blank line; ``metadata`` becomes the new segment's."""
        self._state = "meta"
        self._meta_buf = ""
        self._pending_ws = ""
        self.metadata = ""
        self._separate = self._emitted
        self.segments.append(Segment("", ""))

    def feed(self, text: str) -> str:
        out = self._feed(text)
        if out:
            self.segments[-1].text += out
            if self._separate:
                out = SEGMENT_SEPARATOR + out
                self._separate = False
            self._emitted = True
        return out

    def _feed(self, text: str) -> str:
        if not text:
            return ""
        if self._state == "meta":
            self._meta_buf += text
            if "\n" in self._meta_buf:
                meta, rest = self._meta_buf.split("\n", 1)
                self._meta_buf = ""
                self.metadata = self.segments[-1].metadata = meta.strip()
                self._state = "lead" if not self.metadata else "raw"
                return self._feed(rest)
            if len(self._meta_buf) > _MAX_METADATA_CHARS:
                rest, self._meta_buf = self._meta_buf, ""
                self._state = "lead"
                return self._feed(rest)
            return ""
        if self._state == "raw":
            return text
        if self._state == "lead_raw":
            text = text.lstrip()
            if text:
                self._state = "raw"
            return text
        if self._state == "lead":
            text = text.lstrip()
            if not text:
                return ""
            self._state = "body"
        # body: hold trailing whitespace until we know it is not the end
        text = self._pending_ws + text
        stripped = text.rstrip()
        self._pending_ws = text[len(stripped):]
        return stripped

    def finish(self) -> str:
        if self._state == "meta":  # never saw the metadata line's end: it was all content
            rest, self._meta_buf = self._meta_buf, ""
            self._state = "lead"
            return self.feed(rest)
        self._pending_ws = ""
        return ""


class Verbatim(AnswerShaper):
    """The shaper of a raw completion: text passes unchanged, one segment."""

    def __init__(self) -> None:
        super().__init__(metadata_line=False)

    def feed(self, text: str) -> str:
        self.segments[-1].text += text
        return text

    def finish(self) -> str:
        return ""


class StopScanner:
    """Finds stop strings (OpenAI ``stop``) in streamed text. Text that could be the start of
    a stop string is held back until the next piece shows it is not."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self._held = ""
        self.hit = False

    def feed(self, piece: str) -> str:
        """The text that can be released now; sets ``hit`` when a stop string was found."""
        if not self.stops:
            return piece
        text = self._held + piece
        # The stop string that is complete first ends the text (as if fed a character at a
        # time, whatever the pieces): the least end, then the longest.
        found = [(i + len(s), i) for s in self.stops for i in [text.find(s)] if i >= 0]
        if found:
            self._held = ""
            self.hit = True
            return text[:min(found)[1]]
        # Hold the longest tail that is a proper prefix of some stop string.
        keep = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(text)), keep, -1):
                if text.endswith(s[:n]):
                    keep = n
                    break
        self._held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep] if keep else text

    def flush(self) -> str:
        out, self._held = ("" if self.hit else self._held), ""
        return out


# Called with each new piece of answer text and the current segment's metadata line;
# returning True ends the answer there (finish_reason "stop").
OnText = Callable[[str, str], "bool | None"]


@dataclass
class SequenceState:
    """One answer's decoding state. A loop evaluates ``next_token`` (and ``draft``) for it in
    some step, then hands each sampled token to ``take`` until it says to stop."""

    fmt: AnswerFormat
    prompt: list[int]
    params: "SamplingParams"
    n_ctx: int  # cells this sequence may hold: prompt and answer never exceed it
    raw: bool = False  # text as generated: no metadata line, no stripping (raw completions)
    stops: Sequence[str] = ()
    on_text: OnText | None = None
    speculate: int = 0  # prompt-lookup draft tokens per step (0: off)
    state: str = PROMPTING
    generated: list[int] = field(default_factory=list)
    pieces: list[str] = field(default_factory=list)
    next_token: int | None = None  # sampled, to be evaluated in the next step
    draft: list[int] = field(default_factory=list)  # drafted tokens evaluated after next_token
    finish_reason: str | None = None
    stop_token: int | None = None
    emitted: str = ""  # the text released by the last take()

    def __post_init__(self) -> None:
        self.shaper: AnswerShaper = Verbatim() if self.raw else AnswerShaper(metadata_line=self.fmt.metadata_line)
        self._segment_token = None if self.raw or not self.fmt.metadata_line else self.fmt.segment_token
        self.utf8 = Utf8Stream()
        self.scanner = StopScanner(self.stops)
        self.lookup = PromptLookup(self.prompt) if self.speculate else None
        self._starts = [0]  # where each segment's tokens begin in ``generated``

    @property
    def metadata(self) -> str:
        """The current segment's metadata line (a tool's name once a call is being written)."""
        return self.shaper.metadata

    def prompt_done(self) -> None:
        self.state = GENERATING

    def take(self, tok: int) -> str | None:
        """A sampled token; the finish reason when the answer ends with it, else None (and
        ``next_token`` is tok, to be evaluated). ``emitted`` holds the text it released."""
        self.emitted = ""
        if tok in self.fmt.stop_tokens:
            self.stop_token = tok
            return self._end("tool_calls" if tok == self.fmt.tool_stop else "stop")
        self.generated.append(tok)
        if tok == self._segment_token:
            self.shaper.new_segment()
            self._starts.append(len(self.generated))
        if self._release(self.shaper.feed(self.utf8.feed(self.fmt.token_bytes(tok)))):
            return self._end("stop")
        limit = self.params.max_tokens
        # The last token is kept in the answer but needs no evaluation.
        if (limit is not None and len(self.generated) >= limit) or len(self.prompt) + len(self.generated) >= self.n_ctx:
            return self._end("length")
        self.next_token = tok
        return None

    def _release(self, text: str) -> bool:
        """Pass shaped text through the stop strings to the answer; True to stop here."""
        out = self.scanner.feed(text) if text else ""
        if out:
            self.pieces.append(out)
            self.emitted += out
            if self.on_text is not None and self.on_text(out, self.shaper.metadata):
                return True
        return self.scanner.hit

    def _end(self, reason: str) -> str:
        self.state = DONE
        self.finish_reason = reason
        self.next_token = None
        return reason

    # prompt-lookup speculation ------------------------------------------------------------

    def make_draft(self, k: int) -> list[int]:
        """Up to k tokens to evaluate after next_token in the coming step (kept in ``draft``)."""
        self.draft = []
        if self.lookup is None or k <= 0 or self.next_token is None:
            return self.draft
        self.lookup.extend(self.generated[len(self.lookup.tokens) - len(self.prompt):])
        k = min(k, self.speculate, self.n_ctx - len(self.prompt) - len(self.generated) - 1)
        if self.params.max_tokens is not None:
            k = min(k, self.params.max_tokens - len(self.generated) - 1)
        self.draft = self.lookup.draft(k) if k > 0 else []
        return self.draft

    def confirms(self, i: int, tok: int) -> bool:
        """Whether token ``tok``, sampled from the row of draft token i-1 (or of next_token for
        i == 0), is draft token i: it is then evaluated already, and the next token comes from
        the following row."""
        if self.state == DONE or i >= len(self.draft) or tok != self.draft[i]:
            return False
        self.next_token = None
        return True

    # the end ------------------------------------------------------------------------------

    def close(self, reason: str | None = None) -> None:
        """End the answer (``reason`` where no token ended it: interrupted, cancelled) and
        release what the shaper and the stop strings still hold."""
        if reason is not None and self.finish_reason is None:
            self._end(reason)
        tail = self.shaper.feed(self.utf8.finish()) + self.shaper.finish()
        if not self.scanner.hit:
            tail = self.scanner.feed(tail) + self.scanner.flush() if tail else self.scanner.flush()
        if tail:
            self.pieces.append(tail)
            self.emitted = tail
            if self.on_text is not None and reason not in ("cancelled", "interrupted"):
                self.on_text(tail, self.shaper.metadata)
        else:
            self.emitted = ""
        if self.scanner.hit and self.finish_reason in ("length", "tool_calls"):
            self.finish_reason = "stop"  # a stop string ended the text before that

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def segments(self) -> list[Segment]:
        """Each message of the answer as far as its text was released (a stop string may have
        cut it): the shaper's segments cut to the joined text's length."""
        left = len(self.text)
        out: list[Segment] = []
        emitted_before = False
        ends = [i - 1 for i in self._starts[1:]] + [len(self.generated)]
        for seg, start, end in zip(self.shaper.segments, self._starts, ends, strict=True):
            if seg.text and emitted_before:
                left -= len(SEGMENT_SEPARATOR)
                if left < 0:
                    break
            take = seg.text[:max(0, left)]
            left -= len(take)
            out.append(Segment(seg.metadata, take, self.generated[start:end]))
            emitted_before = emitted_before or bool(seg.text)
        return out

    def completion(self, timings: "Timings", cached_tokens: int) -> "Completion":
        from .completion import Completion

        segments = self.segments()
        return Completion(text=self.text, metadata=segments[-1].metadata if segments else "",
                          finish_reason=self.finish_reason or "interrupted", prompt_tokens=len(self.prompt),
                          cached_tokens=cached_tokens, completion_tokens=len(self.generated),
                          timings=timings, tokens=list(self.generated), stop_token=self.stop_token,
                          segments=segments)
