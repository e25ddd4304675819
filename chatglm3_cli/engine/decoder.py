"""Many sequences in one llama.cpp context: continuous batching for batch and translate.

``ParallelDecoder.run(requests)`` keeps up to N requests in flight in one context with N
sequences. Each step decodes one token for every live sequence in a single llama_decode; a
finished sequence frees its KV cells and the next request takes its place. Prompts that begin
with the same tokens (a job's instructions, a system prompt) share one evaluation: the common
prefix is evaluated once into a dedicated sequence and copied to each request, so only the rest
is evaluated per request.

Each sequence has a KV stream of its own (llama.cpp's non-unified KV cache), for speed and
exactness at once: a row's attention covers only its own sequence's cells (in one unified pool
every row scores every sequence's cells and masks them: 1.25-1.45x the cost of a 2- and
4-row step on the 6B shapes, docs/benchmarks.md), and a sequence's cells sit at the indices
they would have in a context of its own, so answers are the same at every --parallel without
flash attention (llama.cpp's CPU kernel rounds differently for one query row, a few, and 64+).
llama.cpp puts the sequences of one decode call into one micro-batch only when their ids are
consecutive and each has the same number of tokens; the step builder keeps them so
(``align_rows``), filling gaps with rows in empty streams; a step that evaluates prompt
chunks beside decoding rows is split in two (one more pass over the weights), so beside a
single decoding row the prompt chunks go alone and the row waits a step. A copy between
streams copies the whole stream (at the next decode call) and then drops the cells past the
prefix.

Results come out in the order requests finish; every request yields exactly one result, with
either a Completion or the typed error that stopped that request (never the whole run).

A server feeds ``run`` from a queue that is empty most of the time: its iterator yields ``WAIT``
for "nothing to admit now" (the running sequences go on), and ``idle`` blocks until there is
(only called when nothing is in flight). A request can stream its text (``on_text``), be
cancelled between steps (``cancelled``), and ``retain=True`` keeps each finished conversation
(prompt and answer) as a shared prefix, so the next turn of it is evaluated only from where
it differs. Shared prefixes live in a PrefixStore: several at once, the least recently used
evicted first, within the cells that sequences in flight cannot need.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

from ..errors import ChatGLM3Error, GenerationError
from . import promptcache
from .prefixes import PrefixStore, usable_prefix
from .prompt import Message
from .sampling import SamplingParams
from .sequence import OnText, SequenceState
from .step_costs import PadMode, RowPadding, StepTimes

if TYPE_CHECKING:  # pragma: no cover
    from .completion import Completion
    from .model import Model


@dataclass
class DecodeRequest:
    key: str
    messages: Sequence[Message] | None = None
    prompt_ids: Sequence[int] | None = None  # instead of messages
    params: SamplingParams = field(default_factory=SamplingParams)
    grammar: str | None = None  # GBNF constraining the generated text (metadata line included)
    # Called (in the decoding thread) with each new piece of answer text and the metadata line
    # read so far; returning True ends the answer there (finish_reason "stop").
    on_text: OnText | None = None
    # Polled between steps: True frees the sequence at once (finish_reason "cancelled").
    cancelled: Callable[[], bool] | None = None
    raw: bool = False  # text as generated: no metadata line, no stripping (raw completions)
    stops: Sequence[str] = ()  # strings that end the answer where they appear (not included)


class _Wait:
    def __repr__(self) -> str:
        return "WAIT"


# Yielded by a request iterator: nothing to admit right now, keep decoding what is in flight.
WAIT = _Wait()


@dataclass
class DecodeResult:
    key: str
    completion: "Completion | None" = None
    error: ChatGLM3Error | None = None


@dataclass
class DecoderStats:
    requests: int = 0
    prompt_tokens: int = 0  # prompt tokens of all requests
    evaluated_prompt_tokens: int = 0  # of which actually evaluated (the rest came from shared prefixes)
    generated_tokens: int = 0  # by finished sequences
    decode_calls: int = 0
    drafted_tokens: int = 0  # prompt-lookup speculation: tokens drafted and evaluated
    accepted_tokens: int = 0  # of which the model confirmed
    in_flight: int = 0  # sequences generating now (as of the last step)
    in_flight_tokens: int = 0  # tokens they have generated so far
    padded_steps: int = 0  # decode steps given padding rows (steps.RowPadding)
    kept_prefixes: int = 0  # shared prefixes held in the KV cache now
    kept_prefix_tokens: int = 0  # the tokens they hold


# A prefix shorter than this is not worth a separate evaluation and a cell copy.
MIN_SHARED_PREFIX = 16
# Streams that hold shared prefixes (a job's instructions; on a server, kept conversations),
# besides the N generating ones; each takes a full sequence's KV memory.
PREFIX_SEQS = 2
LLAMA_MAX_SEQ = 256
# llama.cpp rounds each stream's cells up to a multiple of this.
STREAM_ALIGN = 256


def stream_layout(n_parallel: int, n_prefixes: int, pad_mode: str) -> tuple[int, int]:
    """(pad streams, prefix streams) after the n_parallel generating ones. Padding a step's
    rows to a multiple of four (step_costs.RowPadding) puts one row in each of as many empty
    streams: free generating streams when there are any, else pad streams. Automatic padding
    only ever pads a missing fourth row (3 to 4) without evidence, so it gets one pad stream
    where n_parallel is 3 mod 4; ``on`` (tests, measurements) gets all it may need."""
    if pad_mode == "off":
        pad = 0
    elif pad_mode == "on":
        pad = -n_parallel % RowPadding.GROUP
    else:
        pad = 1 if n_parallel % RowPadding.GROUP == RowPadding.GROUP - 1 else 0
    pad = min(pad, max(0, LLAMA_MAX_SEQ - n_parallel - 1))
    return pad, max(1, min(n_prefixes, LLAMA_MAX_SEQ - n_parallel - pad))


def align_rows(rows: Sequence[int], empty: Sequence[int], want: int) -> list[int]:
    """Streams to give one filler row each so that a step's rows (``rows``: the streams with
    one row each) form one micro-batch of consecutive streams, and, where ``want`` is more than
    that, to pad it to ``want`` rows with streams adjacent to them. ``empty``: streams that hold
    no cells (a filler row there is removed after the step). Returns [] where the gaps cannot
    all be filled (llama.cpp then splits the step, as it would anyway)."""
    if not rows:
        return []
    lo, hi = min(rows), max(rows)
    have, free = set(rows), set(empty)
    gaps = [s for s in range(lo, hi + 1) if s not in have]
    if any(g not in free for g in gaps):
        return []
    fill = list(gaps)
    n = len(rows) + len(fill)
    while n < want:
        if hi + 1 in free:
            hi += 1
            fill.append(hi)
        elif lo - 1 in free:
            lo -= 1
            fill.append(lo)
        else:
            break
        n += 1
    if n < want and len(fill) > len(gaps):  # padding only pays in full: keep just the gaps
        fill = fill[:len(gaps)]
    return fill


@dataclass
class _Slot:
    """A sequence of the context in use: its answer's state and what is left to evaluate."""

    seq: int
    req: DecodeRequest
    answer: SequenceState
    sampler: Any  # the model's sampler chain (llama/sampler.py's Sampler)
    pending: list[int]  # prompt tokens not evaluated yet
    n_past: int  # cells this sequence holds
    shared: int  # prompt tokens that came from the shared prefix
    row: int = -1  # batch row holding this sequence's logits in the current step
    t0: float = 0.0
    t_prompt_done: float = 0.0

    @property
    def prompt(self) -> list[int]:
        return self.answer.prompt


class ParallelDecoder:
    """Decode many requests with up to ``n_parallel`` sequences in flight in one context.

    ``n_ctx`` is the context size of each sequence, as a user means it; the context has a
    stream of that many cells for each generating sequence, each of ``n_prefixes`` shared
    prefixes, and the streams that pad steps (stream_layout)."""

    def __init__(self, model: "Model", *, n_parallel: int = 4, n_ctx: int | None = None,
                 n_batch: int = 512, speculate: int | None = None, n_prefixes: int = PREFIX_SEQS) -> None:
        from . import memory
        from .llama import placement

        if n_parallel < 1:
            raise ValueError("n_parallel must be >= 1")
        self.model = model
        self.n_parallel = n_parallel
        self.n_ctx = n_ctx or min(model.n_ctx, 4096)
        if n_parallel + 1 > LLAMA_MAX_SEQ:
            raise ValueError(f"n_parallel must be below {LLAMA_MAX_SEQ}")
        pad_mode: PadMode = getattr(model, "pad_rows", "auto")
        n_pad, n_prefix_seqs = stream_layout(n_parallel, n_prefixes, pad_mode)
        # Streams n_parallel.. pad steps (step_costs.py) beside the generating ones; the
        # prefix streams come after them.
        self.pad_seqs = list(range(n_parallel, n_parallel + n_pad))
        first_prefix = n_parallel + n_pad
        self.n_prefix_seqs = n_prefix_seqs
        n_streams = first_prefix + n_prefix_seqs
        per_stream = -(-(self.n_ctx + 1) // STREAM_ALIGN) * STREAM_ALIGN
        cache_type = getattr(model, "cache_type", "f16")
        memory.check_context(model.info, n_cells=per_stream * n_streams, n_batch=n_batch,
                             what=f"{n_parallel} parallel sequences of {self.n_ctx} tokens "
                                  f"(and {n_streams - n_parallel} for shared prompts and padding)",
                             lower="--parallel or --ctx", on_cpu=model.n_gpu_layers == 0,
                             cache_type=cache_type,
                             flash_attn=placement.uses_flash_attn(model.n_gpu_layers != 0, per_stream, cache_type))
        self.ctx = model.new_context(n_ctx=per_stream * n_streams, n_batch=n_batch,
                                     n_seq_max=n_streams, kv_unified=False)
        # What llama.cpp made (a small context caps it), a multiple of PROMPT_ALIGN (llama/context.py).
        self.n_batch = self.ctx.n_batch
        self.prefixes = PrefixStore(self.ctx, range(first_prefix, first_prefix + n_prefix_seqs))
        # Step times by row count (shared with the speculation policy) and whether padding pays.
        self.times: StepTimes = getattr(model, "step_times", None) or StepTimes()
        self.padding = RowPadding(self.times, pad_mode) if pad_mode != "off" else None
        self.fmt = model.answer_format
        self.stats = DecoderStats()
        self.live = 0  # sequences in flight in the current run (read by other threads)
        # Draft tokens per sequence and step (prompt lookup; 0 = off). By default the model's
        # setting, with its SpecPolicy (if any) deciding step by step whether drafting pays.
        self.speculate = max(0, getattr(model, "speculate", 0) if speculate is None else speculate)
        self.policy = getattr(model, "spec_policy", None) if speculate is None else None
        # Called after every decoding step with ``stats`` (live token counts for progress
        # displays); a slow callback slows decoding, so it should only copy numbers.
        self.on_step: Callable[[DecoderStats], None] | None = None

    def close(self) -> None:
        self.ctx.close()

    def __enter__(self) -> "ParallelDecoder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # request intake ----------------------------------------------------------------------

    def _prompt(self, req: DecodeRequest, cache: dict[str, list[int]]) -> list[int]:
        if req.key in cache:
            return cache.pop(req.key)
        if req.prompt_ids is not None:
            return list(req.prompt_ids)
        return self.model.prompt_ids(list(req.messages or []))

    def _prefix_budget(self, live: int) -> int:
        """KV cells shared prefixes may hold: each has a stream of its own, whatever ``live``
        sequences are in flight."""
        return self.n_ctx * self.n_prefix_seqs

    def _evaluate(self, seq: int, tokens: list[int], start: int, end: int) -> None:
        """Evaluate tokens[start:end] into a sequence now, in chunks cut at multiples of
        n_batch (aligned positions: as the prompt would be cut alone)."""
        pos = start
        while pos < end:
            stop = min(end, (pos // self.n_batch + 1) * self.n_batch)
            self.ctx.decode_entries([(tokens[p], p, seq, False) for p in range(pos, stop)], interruptible=True)
            self.stats.decode_calls += 1
            pos = stop
        self.stats.evaluated_prompt_tokens += end - start

    def _keep(self, seq: int, tokens: list[int], live: int, anchor: int | None = None) -> None:
        """Keep the first len(tokens) cells of a sequence (which holds them) as a shared prefix
        (``anchor``: PrefixStore.reserve)."""
        if len(tokens) < MIN_SHARED_PREFIX:
            return
        kept = self.prefixes.reserve(tokens, self._prefix_budget(live), anchor)
        if kept is not None:
            # Saved from ``seq``, which holds exactly these cells now: the copy into ``kept``
            # is only made at the next decode call.
            promptcache.decoder_kept(self, seq, tokens)  # on disk, for later processes
            self.ctx.copy_seq(seq, kept, 0, len(tokens))
        self._count_prefixes()

    def _count_prefixes(self) -> None:
        # Copied into the stats, which other threads read (a server's /metrics).
        self.stats.kept_prefixes, self.stats.kept_prefix_tokens = len(self.prefixes), self.prefixes.cells

    def _start(self, seq: int, req: DecodeRequest, prompt: list[int],
               upcoming: list[int] | None, live: int) -> _Slot:
        """Set up sequence ``seq`` for a request; ``live`` sequences are in flight with it."""
        from ..errors import PromptTooLongError

        if len(prompt) + 1 > self.n_ctx:
            raise PromptTooLongError(len(prompt), self.n_ctx)
        if not prompt:
            raise ChatGLM3Error("empty prompt")
        # What can fail (an invalid grammar) is built before any cell is given to this
        # sequence; whatever fails after that clears the sequence, so that its next request
        # starts from an empty one (left-over cells make llama_decode fail for the whole run).
        sampler = self.model.new_sampler(req.params, req.grammar)
        try:
            # Sequences in flight may need the cells of idle ones: kept prefixes give them back.
            self.prefixes.fit(self._prefix_budget(live))
            self._count_prefixes()
            # The last prompt token is always evaluated, for its logits; shared prefixes end at
            # aligned positions so that each prompt is cut as it would be alone (PROMPT_ALIGN).
            limit = len(prompt) - 1
            source, shared = self.prefixes.find(prompt, limit)
            # or a longer one saved on disk by an earlier process (promptcache.py)
            source, shared = promptcache.decoder_restore(self, prompt, limit, source, shared, live)
            if shared < MIN_SHARED_PREFIX:
                shared = 0
            if shared:
                self.ctx.copy_seq(source, seq, 0, shared)
            if upcoming is not None:
                # The next request starts like this one: evaluate what they share now, once,
                # and keep it for the next.
                candidate = usable_prefix(prompt, upcoming, limit)
                if candidate >= max(MIN_SHARED_PREFIX, shared + MIN_SHARED_PREFIX):
                    self._evaluate(seq, prompt, shared, candidate)
                    shared = candidate
                    self._keep(seq, prompt[:candidate], live)
            if req.params.repeat_penalty != 1.0:
                sampler.accept_prompt(prompt)
        except BaseException:
            sampler.close()
            self.ctx.remove(seq, 0, -1)
            raise
        self.stats.prompt_tokens += len(prompt)
        answer = SequenceState(self.fmt, prompt, req.params, n_ctx=self.n_ctx, raw=req.raw, stops=req.stops,
                               on_text=req.on_text, speculate=self.speculate)
        return _Slot(seq=seq, req=req, answer=answer, sampler=sampler, pending=prompt[shared:],
                     n_past=shared, shared=shared)

    # the loop ----------------------------------------------------------------------------

    def run(self, requests: Iterable[DecodeRequest], *, idle: Callable[[], None] | None = None,
            retain: bool = False) -> Iterator[DecodeResult]:
        """Decode every request; ``requests`` may yield WAIT (see the module's docstring)."""
        import time
        from collections import deque

        from .llama.context import align_down

        queue = iter(requests)
        lookahead: deque[DecodeRequest] = deque()
        ids_cache: dict[str, list[int]] = {}
        slots: dict[int, _Slot] = {}
        free = list(range(self.n_parallel - 1, -1, -1))
        exhausted = False

        def next_request() -> DecodeRequest | None:
            nonlocal exhausted
            if lookahead:
                return lookahead.popleft()
            if exhausted:
                return None
            r = next(queue, None)
            if r is None:
                exhausted = True
            return None if r is WAIT else r

        def peek_prompt() -> list[int] | None:
            nonlocal exhausted
            if not lookahead and not exhausted:
                r = next(queue, None)
                if r is None:
                    exhausted = True
                elif r is not WAIT:
                    lookahead.append(r)
            if not lookahead:
                return None
            r = lookahead[0]
            if r.key not in ids_cache:
                try:
                    ids_cache[r.key] = self._prompt(r, {})
                except ChatGLM3Error:
                    return None
            return ids_cache[r.key]

        try:
            while True:
                # Fill free sequences with new requests.
                while free:
                    req = next_request()
                    if req is None:
                        break
                    self.stats.requests += 1
                    try:
                        prompt = self._prompt(req, ids_cache)
                        slot = self._start(free[-1], req, prompt, peek_prompt(), live=len(slots) + 1)
                    except ChatGLM3Error as e:
                        yield DecodeResult(req.key, error=e)
                        continue
                    slot.t0 = time.perf_counter()
                    slots[free.pop()] = slot
                # Cancelled requests leave before the step (a client that went away).
                for slot in [s for s in slots.values() if s.req.cancelled is not None and s.req.cancelled()]:
                    del slots[slot.seq]
                    free.append(slot.seq)
                    yield DecodeResult(slot.req.key, completion=self._finish(
                        slot, "cancelled", time.perf_counter()))
                self.live = len(slots)
                if not slots:
                    if exhausted and not lookahead:
                        return
                    if idle is not None and not lookahead:
                        idle()
                    continue
                # One step: a token for every generating sequence, then prompt chunks. Beside
                # decoding rows llama.cpp splits a step with prompt chunks in two micro-batches
                # (module docstring): one more pass over the weights. With one decoding row the
                # step carries the prompt chunks alone and that row waits for the next step
                # (bench -p 2 measured 1.01 of raw so, 0.91-0.95 split); with more, waiting
                # rows cost more than the pass (-p 4: 0.88 against 0.95-0.97 split).
                entries: list[tuple[int, int, int, bool]] = []
                generating = [s for s in slots.values() if s.answer.next_token is not None]
                prompting = len(generating) <= 1 and any(s.pending and s.answer.next_token is None
                                                         for s in slots.values())
                if prompting:
                    generating = []
                room = self.n_batch - len(generating)
                for slot in generating:
                    room -= len(slot.answer.make_draft(min(room, self.speculate)))
                if len(generating) > 1:
                    # one micro-batch needs as many tokens from each sequence (module docstring)
                    shortest = min(len(slot.answer.draft) for slot in generating)
                    for slot in generating:
                        del slot.answer.draft[shortest:]
                n_draft = sum(len(s.answer.draft) for s in generating)
                if n_draft and self.policy is not None and not self.policy.want(
                        len(generating), len(generating), n_draft):
                    for slot in generating:
                        slot.answer.draft = []
                    n_draft = 0
                self.stats.drafted_tokens += n_draft
                for slot in slots.values():
                    slot.row = -1
                    tok = slot.answer.next_token
                    if tok is not None and not prompting:
                        slot.row = len(entries)
                        entries.append((tok, slot.n_past, slot.seq, True))
                        entries += [(d, slot.n_past + 1 + i, slot.seq, True) for i, d in enumerate(slot.answer.draft)]
                n_generating = len(entries)
                for slot in slots.values():
                    room = self.n_batch - len(entries)
                    if not slot.pending or room <= 0:
                        continue
                    n_take = len(slot.pending)
                    if n_take > room:  # cut only at an aligned position, as a prompt alone is
                        n_take = align_down(slot.n_past + room) - slot.n_past
                        if n_take <= 0:
                            continue
                    take = slot.pending[:n_take]
                    for i, t in enumerate(take):
                        last = i == len(take) - 1 and len(take) == len(slot.pending)
                        if last:
                            slot.row = len(entries)
                        entries.append((t, slot.n_past + i, slot.seq, last))
                    self.stats.evaluated_prompt_tokens += len(take)
                has_prompt = len(entries) > n_generating
                fillers = self._fillers(entries, free, n_generating, has_prompt, n_draft)
                if fillers:
                    entries += [(entries[0][0], 0, seq, False) for seq in fillers]
                # by stream, each one's tokens in order: llama.cpp's micro-batches take
                # consecutive streams (the sort is stable)
                entries.sort(key=lambda e: e[2])
                first_row: dict[int, int] = {}
                for i, (_tok, _pos, seq, wants_logits) in enumerate(entries):
                    if wants_logits and seq not in first_row:
                        first_row[seq] = i
                for slot in slots.values():
                    if slot.row >= 0:
                        slot.row = first_row[slot.seq]
                n_rows = len(entries)
                ts = time.perf_counter()
                try:
                    # Prompt chunks take long: Ctrl-C may abort them (never a single-token step,
                    # where a Python call per graph node would cost a few percent).
                    self.ctx.decode_entries(entries, interruptible=has_prompt)
                except GenerationError as e:
                    # The requests of this step fail; the run goes on with the others.
                    for slot in list(slots.values()):
                        slot.sampler.close()
                        self.ctx.remove(slot.seq, 0, -1)
                        del slots[slot.seq]
                        free.append(slot.seq)
                        yield DecodeResult(slot.req.key, error=e)
                    continue
                finally:
                    for seq in fillers:
                        self.ctx.remove(seq, 0, -1)
                self.stats.decode_calls += 1
                now = time.perf_counter()
                if not has_prompt:  # a step's cost by its rows (prompt rows vary too much)
                    self.times.timed(n_rows, now - ts)
                for slot in slots.values():
                    if slot.answer.next_token is not None:
                        if not prompting:
                            slot.n_past += 1
                    elif slot.pending:
                        done = [e for e in entries if e[2] == slot.seq]  # its chunk in this step
                        slot.n_past += len(done)
                        slot.pending = slot.pending[len(done):]
                        if not slot.pending:
                            slot.t_prompt_done = now
                            slot.answer.prompt_done()
                finished: list[_Slot] = []
                for slot in slots.values():
                    if slot.row < 0:
                        continue
                    answer, i = slot.answer, 0
                    while True:
                        tok = slot.sampler.sample(self.ctx, slot.row + i)
                        if answer.take(tok) is not None:
                            finished.append(slot)
                            break
                        if not answer.confirms(i, tok):
                            break
                        # Drafted and already evaluated in this step: the next token comes from
                        # the following row.
                        slot.n_past += 1
                        self.stats.accepted_tokens += 1
                        i += 1
                    if answer.draft and answer.finish_reason is None:
                        self.ctx.remove(slot.seq, slot.n_past, -1)  # drop the unconfirmed rest
                    if answer.draft and self.policy is not None:
                        self.policy.judged(len(answer.draft), i)
                    answer.draft = []
                # Sequences finishing in this step still count: their results are handed out
                # right after, and only then do their tokens move to the consumer's totals.
                self.stats.in_flight = len(slots)
                self.stats.in_flight_tokens = sum(len(s.answer.generated) for s in slots.values())
                if self.on_step is not None:
                    self.on_step(self.stats)
                for slot in finished:
                    del slots[slot.seq]
                    free.append(slot.seq)
                    if retain:  # the cells it holds, in order: its next turn starts with them
                        self._keep(slot.seq, (slot.prompt + slot.answer.generated)[:slot.n_past], live=len(slots),
                                   anchor=len(slot.prompt))
                    completion = self._finish(slot, None, time.perf_counter())
                    yield DecodeResult(slot.req.key, completion=completion)
                self.live = len(slots)
        finally:
            self.live = 0
            self.stats.in_flight = self.stats.in_flight_tokens = 0
            for slot in slots.values():
                slot.sampler.close()
                self.ctx.remove(slot.seq, 0, -1)

    def _fillers(self, entries: list[tuple[int, int, int, bool]], free: Sequence[int],
                 n_generating: int, has_prompt: bool, n_draft: int) -> list[int]:
        """Empty streams to give one row each in a step of single-token rows: the gaps
        between the step's streams, so that its rows make one micro-batch, and the rows that
        pad it where that pays (step_costs.RowPadding)."""
        if n_draft or has_prompt:  # rows of several tokens each: llama.cpp splits as it must
            return []
        streams = sorted({e[2] for e in entries})
        want = self.padding.rows(n_generating) if self.padding is not None else len(streams)
        fill = align_rows(streams, [*free, *self.pad_seqs], want)
        if want > len(streams) and len(streams) + len(fill) >= want:
            self.stats.padded_steps += 1
        return fill

    def _finish(self, slot: _Slot, reason: str | None, now: float) -> "Completion":
        """The slot's Completion (``reason``: where no token ended it); frees its cells."""
        from .completion import Timings

        slot.answer.close(reason)
        slot.sampler.close()
        self.ctx.remove(slot.seq, 0, -1)
        self.stats.generated_tokens += len(slot.answer.generated)
        t_prompt = (slot.t_prompt_done or now) - slot.t0
        # The first token is sampled in the step that evaluates the prompt's last chunk.
        timings = Timings(prompt_tokens=len(slot.prompt) - slot.shared, prompt_ms=t_prompt * 1000,
                          first_token_ms=t_prompt * 1000, generated_tokens=len(slot.answer.generated),
                          generation_ms=(now - (slot.t_prompt_done or now)) * 1000)
        return slot.answer.completion(timings, slot.shared)
