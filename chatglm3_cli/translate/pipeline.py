"""The translate run: files in, translated files out, through the shared parallel decoder.

1. Each file is read, parsed into units (``formats``) and checked (type, UTF-8, empty, where
   the output goes); a bad file is reported and the others go on.
2. Units become chunks up to a token budget that leaves room for the answer (``chunks``). The
   instructions are the same for every chunk of a format and come first (the system message),
   so the decoder evaluates them once and shares them across requests.
3. Chunks answered by an earlier run come from the checkpoint; the rest go to the decoder.
   An answer that does not fit (units, ids, placeholders) is retried as two halves, down to
   one unit; a unit that still fails keeps its source text and is listed, never dropped.
4. A file whose chunks are all done is rendered and written through a temp file and a rename.
"""
from __future__ import annotations

import os
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

from ..errors import ChatGLM3Error, InputError, OutputWriteError, PromptTooLongError, UnsupportedFormatError
from ..files import atomic_write_bytes, read_bytes, write_target
from ..progress import RunStats, TranslateProgress
from ..textio import decode_text
from . import written
from .checkpoint import Checkpoint, checkpoint_path, chunk_key
from .chunks import Mismatch, Piece, build_chunks, format_request, join_parts, make_pieces, parse_answer
from .formats import FORMATS, Document, format_for, parse, supported_list
from .glossary import Glossary
from .languages import Language

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.decoder import DecodeResult, DecoderStats
    from ..engine.model import Model
    from ..engine.sampling import SamplingParams

_BOM = b"\xef\xbb\xbf"
DEFAULT_SEQ_CTX = 4096


# settings, inputs, results -------------------------------------------------------------------

@dataclass
class Settings:
    target: Language
    params: "SamplingParams"
    source: Optional[Language] = None  # None: the model detects it
    n_parallel: int = 4
    n_ctx: Optional[int] = None  # per sequence; None: the model's, at most 4096
    bilingual: bool = False
    glossary: Glossary = field(default_factory=Glossary)
    prompt_template: Optional[str] = None  # --prompt-file: replaces the instructions
    preview: Optional[int] = None  # translate only the first N chunks of each file
    max_answer_tokens: Optional[int] = None  # cap per answer; default 3x the chunk's tokens + 32
    max_chunk_tokens: int = 768
    max_chunk_units: int = 16
    overwrite: bool = False  # replace an existing output that translate did not write


@dataclass
class FileTask:
    label: str  # how messages name it: the path, or "stdin"
    path: Optional[Path] = None  # None: ``data`` holds the input (stdin)
    output: Optional[Path] = None  # None: the text is returned in FileResult.text
    fmt: Optional[str] = None  # None: from the extension
    data: Optional[bytes] = None
    checkpoint: Optional[str] = None  # what the checkpoint is named after; default: the output


@dataclass
class UnitFailure:
    line: int  # where the unit starts in the input
    reason: str
    excerpt: str


@dataclass
class FileResult:
    task: FileTask
    status: str = "pending"  # translated, partial, failed, preview, interrupted
    error: Optional[str] = None
    units: int = 0
    chunks: int = 0
    chunks_done: int = 0
    cached: int = 0
    retries: int = 0
    wordy: int = 0  # pieces with enough letters to tell whether they were translated
    unchanged: int = 0  # of those, answers identical to the source (a weak model echoing it)
    requests: int = 0
    failures: list[UnitFailure] = field(default_factory=list)
    text: Optional[str] = None  # the rendered output when it is not written to a file

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "partial", "interrupted")


@dataclass
class Summary(RunStats):
    """The run's counts: items are chunks (``chunks`` planned, ``chunks_done``); tokens, speed
    and time left come from RunStats."""

    files: list[FileResult] = field(default_factory=list)
    cached: int = 0  # answers taken from the checkpoint
    requests: int = 0  # requests decoded this run
    retries: int = 0  # chunks split after a mismatch
    unused_terms: Counter = field(default_factory=Counter)  # (term, translation) -> times

    @property
    def chunks(self) -> int:  # planned chunks, all files
        return self.planned

    @chunks.setter
    def chunks(self, n: int) -> None:
        self.planned = n

    @property
    def chunks_done(self) -> int:
        return self.done_now

    @chunks_done.setter
    def chunks_done(self, n: int) -> None:
        self.done_now = n

    @property
    def failed_files(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    @property
    def failed_units(self) -> int:
        return sum(len(f.failures) for f in self.files)

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(not f.failed for f in self.files)


# instructions --------------------------------------------------------------------------------

_FORMAT_RULES = {
    "txt": "The text is plain text. Keep the line breaks inside a unit.",
    "md": ("The text is Markdown. Keep its markup (#, *, _, >, [link text]{{n}}) where it is and "
           "translate the words, including link texts."),
    "srt": ("Each unit is one subtitle cue. Translate each cue on its own, about as short as the "
            "source, keeping its line breaks; never move words between cues."),
    "vtt": ("Each unit is one subtitle cue. Translate each cue on its own, about as short as the "
            "source, keeping its line breaks; never move words between cues."),
}

DEFAULT_INSTRUCTIONS = (
    "You are a professional translator. Translate the user's text {from_part}into {to}.\n"
    "The text comes as numbered units: each starts on a new line with its number in square "
    "brackets, like [1].\n"
    "Answer with the same units, in the same order: each number in square brackets followed by "
    "the translation of that unit only. Never merge, split, skip or add units.\n"
    "Placeholders such as {{1}} stand for code, links and markup: copy each one unchanged into "
    "the translation of its unit.\n"
    "Answer with the translation only: no notes, no explanations.\n"
    "{format_rules}"
)


def instructions(settings: Settings, fmt: str) -> tuple[str, str]:
    """(the system message, the same without the glossary: part of each chunk's checkpoint key)."""
    src = settings.source
    template = settings.prompt_template if settings.prompt_template is not None else DEFAULT_INSTRUCTIONS
    filled = (template.replace("{from_part}", f"from {src.name} " if src else "")
              .replace("{from}", src.name if src else "the language it is written in")
              .replace("{to}", settings.target.name)
              .replace("{format_rules}", _FORMAT_RULES[fmt]))
    key_text = filled.replace("{glossary}", "")
    g = settings.glossary
    block = ("Always translate these terms as given:\n" + g.block()) if g else ""
    if "{glossary}" in filled:
        system = filled.replace("{glossary}", block)
    else:
        system = filled + ("\n" + block if block else "")
    return system.strip(), key_text.strip()


# the run ---------------------------------------------------------------------------------------

@dataclass
class _File:
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
    file: _File
    pieces: list[Piece]
    root: "_Node | None" = None  # the planned chunk this one was split from
    left: int = 1  # for a root: its requests still unresolved
    decoded: bool = False  # for a root: some answer came from the model (not the checkpoint)


class _Run:
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
        self.unstarted: deque[_File] = deque()
        self._ids = 0
        self._instr: dict[str, tuple[str, str, int]] = {}
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
        return self._instr[fmt]

    def plan(self, f: _File) -> None:
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

    def start(self, f: _File) -> None:
        if not f.started:
            f.started = True
            self.progress.file_started(f.result, self.summary)
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
            node.file.result.cached += 1
            self.summary.cached += 1
            self.apply(node, hit["translations"])
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
            if _wordy(p.text):
                f.result.wordy += 1
                if _same_text(p.text, tr):
                    f.result.unchanged += 1
        self.resolved(node)

    def fail(self, node: _Node, reason: str) -> None:
        f = node.file
        for p in node.pieces:
            if p.unit not in f.failed_units:
                f.failed_units.add(p.unit)
                u = f.doc.units[p.unit]
                excerpt = " ".join(f.doc.text[u.start:u.end].split())
                f.result.failures.append(UnitFailure(u.line, reason, excerpt[:60] + ("…" if len(excerpt) > 60 else "")))
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
        self.progress.advance(f.result, self.summary)
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
            translations = parse_answer(comp.text, node.pieces)
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

    def run(self, files: Sequence[_File]) -> None:
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

    # output -----------------------------------------------------------------------------

    def finish_file(self, f: _File) -> None:
        f.done = True
        r = f.result
        translations: dict[int, str] = {}
        spaced = self.settings.target.spaced
        glossary = self.settings.glossary
        for unit, n in f.n_parts.items():
            got = f.parts.get(unit, {})
            if unit in f.failed_units or len(got) != n:
                continue
            translations[unit] = join_parts([(got[k], f.seps.get((unit, k), "")) for k in range(n)], spaced)
            if glossary:
                for pair in glossary.unused(f.doc.units[unit].text, translations[unit]):
                    self.summary.unused_terms[pair] += 1
        preview = self.settings.preview is not None
        wanted = [u for u in f.n_parts if not preview or u <= f.last_unit]
        if wanted and not translations:
            # Every unit failed: the output would be the input under a new name. Write nothing.
            r.status = "failed"
            r.error = (f"{r.task.label}: nothing was translated (all {len(wanted)} units failed, "
                       f"listed above); no output written")
            self.progress.file_done(r, self.summary)
            return
        if r.wordy and r.unchanged == r.wordy and not r.failures:
            # A weak model may copy its input back: every answer the same as its source text.
            r.status = "failed"
            r.error = (f"{r.task.label}: the model returned the text untranslated (all {r.wordy} "
                       f"units came back identical to the source; is it already in "
                       f"{self.settings.target.name}?); no output written")
            self.progress.file_done(r, self.summary)
            return
        text = f.doc.render(translations, bilingual=self.settings.bilingual,
                            upto=f.last_unit if preview else None)
        if preview:
            r.text = text
            r.status = "preview"
        else:
            if r.task.output is not None:
                try:
                    _check_overwrite(r.task, self.settings.overwrite)  # again: hours may have passed
                    write_atomic(r.task.output, text.encode("utf-8"))
                except (OSError, OutputWriteError) as e:
                    r.status = "failed"
                    err = e if isinstance(e, OutputWriteError) else OutputWriteError(
                        f"cannot write {r.task.output}: {e.strerror or e}")
                    r.error = err.describe()
                    self.progress.file_done(r, self.summary)
                    return
            else:
                r.text = text
            r.status = "partial" if r.failures else "translated"
            if not r.failures:
                f.checkpoint.remove()
        self.progress.file_done(r, self.summary)


def _wordy(text: str) -> bool:
    """Enough letters that an identical answer means "not translated", not a name or a number."""
    return sum(c.isalpha() for c in text) >= 8


def _same_text(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def retry_advice(summary: Summary, params: "SamplingParams") -> str:
    """What would change the outcome of a run with failed units. Units that failed were already
    retried alone (chunks split down to one unit), so "smaller chunks" cannot help; at
    temperature 0 the same command gives the same answers."""
    reasons = [u.reason for f in summary.files for u in f.failures]
    ctx = any("context" in r for r in reasons)
    if params.temperature > 0:
        return "see the list above; run the same command again to retry only what failed (sampling gives other answers)"
    tips = (["raise --ctx for units that do not fit the context"] if ctx else []) + [
        "use a larger model", "or a --temperature above 0 (which translates every chunk again)"]
    return ("see the list above; at temperature 0 the same command repeats the same answers: "
            + ", ".join(tips))


def write_atomic(path: Path, data: bytes) -> None:
    """Write through a temp file and a rename (files.atomic_write_bytes: never half a file, a
    symlink written through, a device refused), and remember that translate wrote it."""
    atomic_write_bytes(path, [data])
    written.record(path, data)


# loading ---------------------------------------------------------------------------------------

def load(task: FileTask, *, overwrite: bool = True) -> tuple[str, Document]:
    """Read, decode and parse one input; check where its output goes. Raises typed errors."""
    fmt = task.fmt or (format_for(task.path) if task.path is not None else "txt")
    if fmt is None or fmt not in FORMATS:
        ext = task.path.suffix if task.path is not None and task.path.suffix else "(no extension)"
        raise UnsupportedFormatError(
            f"{task.label}: cannot translate {ext} files (supported: {supported_list()})",
            hint="pass --format txt|md|srt|vtt to treat it as one of those")
    if task.data is not None:
        data = task.data
    else:
        assert task.path is not None
        data = read_bytes(task.path, task.label)
    text = decode_text(data, task.label)
    if not text.strip():
        raise InputError(f"{task.label} is empty: nothing to translate")
    doc = parse(fmt, text, task.label)
    doc.bom = data.startswith(_BOM)
    if task.output is not None:
        check_output(task, overwrite=overwrite)
    return fmt, doc


def check_output(task: FileTask, *, overwrite: bool = True) -> None:
    out = task.output
    assert out is not None
    if out.is_dir():
        raise OutputWriteError(f"cannot write {out}: a directory is in the way")
    if task.path is not None and out.resolve() == task.path.resolve():
        raise OutputWriteError(f"{task.label}: the output would overwrite the input",
                               hint="write elsewhere with -o DIR")
    target = write_target(out)  # a device, FIFO or socket is refused
    _check_overwrite(task, overwrite)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".chatglm3-probe.", dir=target.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputWriteError(f"cannot write {out}: {e.strerror or e}") from None


def _check_overwrite(task: FileTask, overwrite: bool) -> None:
    """An existing output that translate did not write (a hand-made translation, or ours edited
    by hand since) is never replaced unless asked to."""
    out = task.output
    if out is not None and not overwrite and not written.may_write(out):
        raise OutputWriteError(f"{out} already exists and was not written by chatglm3 translate "
                               "(or was edited since): not overwriting it",
                               hint="pass --overwrite to replace it, or write elsewhere with -o DIR")


def _default_decoder(model: "Model", *, n_parallel: int, n_ctx: int) -> Any:
    from ..engine.decoder import ParallelDecoder

    return ParallelDecoder(model, n_parallel=n_parallel, n_ctx=n_ctx)


def translate(tasks: Sequence[FileTask], *, open_model: Callable[[], "Model"], settings: Settings,
              model_id: Optional[str] = None, progress: Optional[TranslateProgress] = None,
              make_decoder: Optional[Callable[..., Any]] = None) -> Summary:
    """Translate every task; a file that fails is reported in its FileResult and the rest go on.

    ``open_model`` is called only when some file can be translated. ``model_id`` keys the
    checkpoints (default: the sha256 of the opened model's file, cached by path, size and
    mtime). Ctrl-C
    stops the run (``summary.interrupted``); finished chunks stay in the checkpoints.
    """
    progress = progress or TranslateProgress()
    summary = Summary(files=[FileResult(t) for t in tasks])
    loaded: list[tuple[FileResult, str, Document]] = []
    for r in summary.files:
        try:
            fmt, doc = load(r.task, overwrite=settings.overwrite or settings.preview is not None)
        except ChatGLM3Error as e:
            r.status, r.error = "failed", e.describe()
            continue
        loaded.append((r, fmt, doc))
    run: Optional[_Run] = None
    files: list[_File] = []
    try:
        if loaded:
            with open_model() as model:
                if model_id is None:
                    from ..files import file_sha256

                    model_id = file_sha256(model.path)
                run = _Run(model, settings, model_id, summary, progress,
                           make_decoder or _default_decoder)
                for r, fmt, doc in loaded:
                    name = r.task.checkpoint or (str(r.task.output.resolve()) if r.task.output else None)
                    ckpt = Checkpoint(checkpoint_path(name) if name else None)
                    f = _File(r, doc, fmt, ckpt)
                    files.append(f)
                    r.status = "running"
                    try:
                        run.plan(f)
                    except ChatGLM3Error as e:
                        r.status, r.error = "failed", e.describe()
                        f.done = True
                        continue
                progress.start(summary)
                summary.started = time.monotonic()
                run.run(files)
                run.close()
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        if run is not None:
            run.close()
        for f in files:
            f.checkpoint.close()
            if not f.done:
                f.result.status = "interrupted"
        summary.seconds = time.monotonic() - summary.started
        progress.finish(summary)
    return summary


__all__ = ["Settings", "FileTask", "retry_advice", "FileResult", "Summary", "UnitFailure", "translate",
           "instructions", "load", "write_atomic", "Glossary", "Language"]
