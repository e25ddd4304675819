"""The run: planned chunks go to the decoder, answers are checked and kept, split and retried
on a mismatch (down to one unit, then the unit is counted as failed), and a file whose chunks
are all resolved is rendered and written."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from ..errors import PromptTooLongError
from .checkpoint import Checkpoint, chunk_key
from .chunks import Mismatch, Piece, build_chunks, format_request, make_pieces, parse_answer
from .formats import Document
from .instructions import instructions
from .job import Settings
from .output import finish_file
from .progress import TranslateProgress
from .results import FileResult, Summary, UnitFailure
from .validate import InstructionEcho, check_all, same_text, wordy

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.decoder import DecodeResult, DecoderStats
    from ..engine.model import Model

DEFAULT_SEQ_CTX = 4096


@dataclass
class FileState:
    result: FileResult
    doc: Document
    fmt: str
    checkpoint: Checkpoint
    parts: dict[int, dict[int, str]] = field(default_factory=dict)  # unit -> part -> translation
    n_parts: dict[int, int] = field(default_factory=dict)
    failed_units: set[int] = field(default_factory=set)
    roots_left: int = 0
    seps: dict[tuple[int, int], str] = field(default_factory=dict)  # source whitespace after a part
    roots: list["_Node"] = field(default_factory=list)
    last_unit: int = -1  # the last unit planned (previews stop there)
    started: bool = False
    done: bool = False


@dataclass
class _Node:
    file: FileState
    pieces: list[Piece]
    root: "_Node | None" = None  # the planned chunk this one was split from
    left: int = 1  # for a root: its requests still unresolved
    decoded: bool = False  # for a root: some answer came from the model (not the checkpoint)


class Run:
    def __init__(self, model: "Model", settings: Settings, model_id: str, summary: Summary,
                 progress: TranslateProgress, make_decoder: Callable[..., Any]) -> None:
        self.model = model
        self.settings = settings
        self.model_id = model_id
        self.summary = summary
        self.progress = progress
        self.make_decoder = make_decoder
        self.n_seq = settings.n_ctx or min(model.n_ctx, DEFAULT_SEQ_CTX)
        self.pending: deque[_Node] = deque()
        self.in_flight: dict[str, _Node] = {}
        self.unstarted: deque[FileState] = deque()
        self._ids = 0
        self._instr: dict[str, tuple[str, str, int]] = {}
        self._echo: dict[str, InstructionEcho] = {}
        self.decoder: Any = None
        self.params_key = {k: v for k, v in settings.params.to_dict().items() if k != "max_tokens"}
        self._planned_source_tokens = 0

    # planning ---------------------------------------------------------------------------

    def count(self, text: str) -> int:
        return len(self.model.tokenize(text))

    def instr(self, fmt: str) -> tuple[str, str, int]:
        if fmt not in self._instr:
            from ..engine.prompt import Message

            system, key_text = instructions(self.settings, fmt)
            n = len(self.model.prompt_ids([Message("system", system), Message("user", "")]))
            self._instr[fmt] = (system, key_text, n)
            self._echo[fmt] = InstructionEcho(system)
        return self._instr[fmt]

    def accepted(self, node: _Node, translations: Sequence[str]) -> list[str]:
        """The translations when each is one of its piece (validate.py); raises Mismatch."""
        self.instr(node.file.fmt)
        check_all(node.pieces, translations, self._echo[node.file.fmt])
        for p, tr in zip(node.pieces, translations, strict=True):
            unit = node.file.doc.units[p.unit]
            if unit.check is not None and p.text == unit.text:  # a format's own rule, on a whole unit
                reason = unit.check(tr)
                if reason is not None:
                    raise Mismatch(reason)
        return list(translations)

    def plan(self, f: FileState) -> None:
        _, _, n_instr = self.instr(f.fmt)
        room = self.n_seq - n_instr - 8
        budget = min(self.settings.max_chunk_tokens, room // 3)
        if budget < 16:
            raise PromptTooLongError(n_instr + 48, self.n_seq)
        pieces = make_pieces(f.doc.units, self.count, budget)
        chunks = build_chunks(pieces, budget, self.settings.max_chunk_units)
        if self.settings.preview is not None:
            chunks = chunks[: self.settings.preview]
        for p in pieces:
            f.n_parts[p.unit] = max(f.n_parts.get(p.unit, 0), p.part + 1)
            f.seps[(p.unit, p.part)] = p.sep
        f.result.units = len(f.doc.units)
        for line, excerpt in f.doc.unmapped:
            f.result.failures.append(UnitFailure(line, "the parser's view of this block does not match "
                                                       "the source exactly (tabs?)", excerpt))
        f.result.chunks = len(chunks)
        f.roots_left = len(chunks)
        f.last_unit = chunks[-1][-1].unit if chunks else -1
        self.summary.chunks += len(chunks)
        # Before any chunk is back, guess that an answer is about as long as its source.
        self._planned_source_tokens += sum(p.tokens for c in chunks for p in c)
        self.summary.expected_item_tokens = self._planned_source_tokens / max(1, self.summary.chunks)
        for c in chunks:
            node = _Node(f, list(c))
            node.root = node
            f.roots.append(node)
        if self.settings.preview is not None:
            # a preview shows the units of its chunks, not the rest of a split unit
            f.n_parts = {u: n for u, n in f.n_parts.items() if u <= f.last_unit}

    def start(self, f: FileState) -> None:
        if not f.started:
            f.started = True
            self.progress.file_started(f.result.view(), self.summary)
        if f.roots_left == 0:
            self.finish_file(f)  # nothing to translate (only code, say)
        for node in f.roots:
            self.submit(node)

    def key(self, node: _Node) -> str:
        _, key_text, _ = self.instr(node.file.fmt)
        texts = [p.text for p in node.pieces]
        joined = "\n".join(texts)
        return chunk_key(model=self.model_id, instructions=key_text,
                         glossary=self.settings.glossary.occurring(joined),
                         params=self.params_key, texts=texts)

    def submit(self, node: _Node, *, front: bool = False) -> None:
        hit = node.file.checkpoint.get(self.key(node))
        if hit is not None and hit["status"] == "ok" and len(hit["translations"]) == len(node.pieces):
            try:  # an answer kept by an older version passes today's checks, or is asked again
                cached = self.accepted(node, hit["translations"])
            except Mismatch:
                cached = None
            if cached is not None:
                node.file.result.cached += 1
                self.summary.cached += 1
                self.apply(node, cached)
                return
        if hit is not None and hit["status"] == "split" and len(node.pieces) > 1:
            self.split(node, record=False)
            return
        if front:
            self.pending.appendleft(node)
        else:
            self.pending.append(node)

    # answers ----------------------------------------------------------------------------

    def apply(self, node: _Node, translations: Sequence[str]) -> None:
        f = node.file
        for p, tr in zip(node.pieces, translations, strict=True):
            f.parts.setdefault(p.unit, {})[p.part] = tr
            if wordy(p.text):
                f.result.wordy += 1
                if same_text(p.text, tr):
                    f.result.unchanged += 1
        self.resolved(node)

    def fail(self, node: _Node, reason: str) -> None:
        f = node.file
        for p in node.pieces:
            if p.unit not in f.failed_units:
                f.failed_units.add(p.unit)
                u = f.doc.units[p.unit]
                excerpt = " ".join(f.doc.source_of(u).split())
                f.result.failures.append(UnitFailure(u.line, reason, excerpt[:60] + ("…" if len(excerpt) > 60 else ""),
                                                     where=u.where))
        self.resolved(node)

    def split(self, node: _Node, *, record: bool = True) -> None:
        if record:
            node.file.checkpoint.add(self.key(node), "split")
            node.file.result.retries += 1
            self.summary.retries += 1
        half = (len(node.pieces) + 1) // 2
        root = node.root or node
        root.left += 1  # two children replace this node
        a = _Node(node.file, node.pieces[:half], root=root)
        b = _Node(node.file, node.pieces[half:], root=root)
        # children go first in the queue, so a file finishes before the next is started
        self.submit(b, front=True)
        self.submit(a, front=True)

    def resolved(self, node: _Node) -> None:
        root = node.root or node
        root.left -= 1
        if root.left > 0:
            return
        f = node.file
        f.roots_left -= 1
        f.result.chunks_done += 1
        self.summary.chunks_done += 1
        if root.decoded:  # not only from the checkpoint: its tokens count in the speed and time left
            self.summary.answered += 1
        self.progress.advance(f.result.view(), self.summary)
        if f.roots_left == 0:
            self.finish_file(f)

    def on_step(self, stats: "DecoderStats") -> None:
        self.summary.items_in_flight, self.summary.tokens_in_flight = stats.in_flight, stats.in_flight_tokens
        self.progress.tick(self.summary)

    def on_result(self, res: "DecodeResult") -> None:
        node = self.in_flight.pop(res.key)
        (node.root or node).decoded = True
        f = node.file
        comp = res.completion
        if comp is not None:
            self.summary.generated_tokens += comp.completion_tokens
            self.summary.prompt_tokens += comp.prompt_tokens
        stats = getattr(self.decoder, "stats", None)
        if stats is not None:
            self.summary.evaluated_prompt_tokens = stats.evaluated_prompt_tokens
        try:
            if res.error is not None or comp is None:
                if isinstance(res.error, PromptTooLongError):
                    raise Mismatch("the chunk does not fit the context")
                raise Mismatch(res.error.message if res.error else "no answer")
            if comp.finish_reason == "length":
                raise Mismatch("the answer was cut off (too long)")
            translations = self.accepted(node, parse_answer(comp.text, node.pieces))
        except Mismatch as e:
            if len(node.pieces) > 1:
                self.split(node)
            else:
                self.fail(node, str(e))
            return
        f.checkpoint.add(self.key(node), "ok", translations)
        self.apply(node, translations)

    # decoding ---------------------------------------------------------------------------

    def requests(self) -> Iterator[Any]:
        from ..engine.decoder import DecodeRequest
        from ..engine.prompt import Message

        while True:
            if not self.pending:
                if self.unstarted:  # the next file, while the last requests are still decoding
                    self.start(self.unstarted.popleft())
                    continue
                return
            node = self.pending.popleft()
            system, _, _ = self.instr(node.file.fmt)
            ids = self.model.prompt_ids([Message("system", system),
                                         Message("user", format_request(node.pieces))])
            src = sum(p.tokens + 4 for p in node.pieces)
            room = self.n_seq - len(ids) - 1
            if room < 8:
                # too long for the context even before answering: smaller, or a failed unit
                if len(node.pieces) > 1:
                    self.split(node)
                else:
                    self.fail(node, "the unit does not fit the context (raise --ctx)")
                continue
            self._ids += 1
            key = str(self._ids)
            self.in_flight[key] = node
            node.file.result.requests += 1
            self.summary.requests += 1
            cap = min(room, 3 * src + 32)
            if self.settings.max_answer_tokens is not None:
                cap = min(cap, self.settings.max_answer_tokens)
            params = self.settings.params.with_(max_tokens=max(1, cap))
            yield DecodeRequest(key, prompt_ids=ids, params=params)

    def run(self, files: Sequence[FileState]) -> None:
        self.unstarted = deque(f for f in files if not f.done)
        while True:
            while not self.pending and self.unstarted:
                self.start(self.unstarted.popleft())
            if not self.pending:
                return
            if self.decoder is None:
                self.decoder = self.make_decoder(self.model, n_parallel=self.settings.n_parallel,
                                                 n_ctx=self.n_seq)
                self.decoder.on_step = self.on_step
            for res in self.decoder.run(self.requests()):
                self.on_result(res)

    def close(self) -> None:
        if self.decoder is not None:
            close = getattr(self.decoder, "close", None)
            if close is not None:
                close()
            self.decoder = None

    def finish_file(self, f: FileState) -> None:
        finish_file(f, self.settings, self.summary, self.progress)
