"""`chatglm3 bench`'s measurements: our engine and a raw llama.cpp loop on the same model.

Runs alternate (raw, ours, raw, ours...) so that a noisy machine hurts both alike; each
figure is the median of the runs with its min and max. The JSON form (``to_dict``) is a stable
schema for scripts: keys are only ever added, and ``schema`` changes if one ever changes.
"""
from __future__ import annotations

import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

SCHEMA = 1
# Runs whose fastest is more than this many times the slowest measured a busy machine, not the
# tool: their medians and ratios are flagged instead of reported as facts.
NOISY_RATIO = 1.5


@dataclass
class Spread:
    runs: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else 0.0

    @property
    def ratio(self) -> float | None:
        """max / min of the runs (None with fewer than two runs)."""
        if len(self.runs) < 2:
            return None
        lo, hi = min(self.runs), max(self.runs)
        return float("inf") if lo <= 0 < hi else (hi / lo if lo > 0 else 1.0)

    @property
    def noisy(self) -> bool:
        r = self.ratio
        return r is not None and r > NOISY_RATIO

    def to_dict(self) -> dict[str, Any]:
        return {"median": round(self.median, 4), "min": round(min(self.runs), 4) if self.runs else 0.0,
                "max": round(max(self.runs), 4) if self.runs else 0.0, "runs": [round(x, 4) for x in self.runs],
                "noisy": self.noisy}


@dataclass
class Side:
    prefill_tps: Spread = field(default_factory=lambda: Spread([]))
    decode_tps: Spread = field(default_factory=lambda: Spread([]))
    ttft_s: Spread = field(default_factory=lambda: Spread([]))

    def to_dict(self) -> dict[str, Any]:
        return {"prefill_tokens_per_s": self.prefill_tps.to_dict(),
                "decode_tokens_per_s": self.decode_tps.to_dict(),
                "time_to_first_token_s": self.ttft_s.to_dict()}


@dataclass
class ParallelRow:
    n: int
    ours_total_tps: float
    ours_gen_tps: float
    raw_total_tps: float
    raw_gen_tps: float
    speedup_ours: float = 1.0
    speedup_raw: float = 1.0
    # ours/raw of each run (ours and raw alternate, the order flipped every run): the ratio is
    # their median, so that a busy moment hits one run, not one side
    ratios: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if self.ratios:
            return statistics.median(self.ratios)
        return self.ours_total_tps / self.raw_total_tps if self.raw_total_tps else None

    def to_dict(self) -> dict[str, Any]:
        return {"parallel": self.n,
                "ours": {"total_tokens_per_s": round(self.ours_total_tps, 3),
                         "generated_tokens_per_s": round(self.ours_gen_tps, 3),
                         "speedup_vs_1": round(self.speedup_ours, 3)},
                "raw": {"total_tokens_per_s": round(self.raw_total_tps, 3),
                        "generated_tokens_per_s": round(self.raw_gen_tps, 3),
                        "speedup_vs_1": round(self.speedup_raw, 3)},
                "ours_over_raw": round(self.ratio, 3) if self.ratio is not None else None,
                "ours_over_raw_runs": [round(r, 3) for r in self.ratios]}


@dataclass
class LoadReport:
    """Single-stream decode alone and beside competing generations (`--load N`), alternating."""

    competitors: int
    omp_policy: str
    alone_tps: Spread
    loaded_tps: Spread
    competitor_tps: Spread
    ratios: Spread  # each loaded run over the alone run just before it

    def to_dict(self) -> dict[str, Any]:
        return {"competitors": self.competitors, "omp_wait_policy": self.omp_policy,
                "alone_decode_tokens_per_s": self.alone_tps.to_dict(),
                "loaded_decode_tokens_per_s": self.loaded_tps.to_dict(),
                "competitor_decode_tokens_per_s": self.competitor_tps.to_dict(),
                "loaded_over_alone": self.ratios.to_dict(), "target": LOAD_TARGET}


@dataclass
class MemoryReport:
    """Resident memory: the peak while loading, and steady while generating one sequence."""

    file_bytes: int
    mmap: bool
    load_s: float
    load_peak_rss: int
    steady_rss: int
    kv_bytes: int
    compute_bytes: int
    base_rss: int = 0  # the process before loading (Python, libraries): outside the targets

    dropped_pages: bool = False  # the mapped file's dead pages were given back while loading

    @property
    def steady_budget(self) -> int:
        """What generating needs: file + KV cache + compute buffers (the target allows 10% more)."""
        return self.file_bytes + self.kv_bytes + self.compute_bytes

    @property
    def load_peak_over_file(self) -> float:
        """The load's peak, above the process before it, over the file size."""
        return (self.load_peak_rss - self.base_rss) / self.file_bytes if self.file_bytes else 0.0

    @property
    def steady_over_budget(self) -> float:
        return (self.steady_rss - self.base_rss) / self.steady_budget if self.steady_budget else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"mapped": self.mmap, "dropped_pages": self.dropped_pages, "load_s": round(self.load_s, 3),
                "rss_before_load_bytes": self.base_rss,
                "load_peak_rss_bytes": self.load_peak_rss, "steady_rss_bytes": self.steady_rss,
                "kv_cache_bytes": self.kv_bytes, "compute_buffer_bytes": self.compute_bytes,
                "load_peak_over_file": round(self.load_peak_over_file, 3) if self.file_bytes else None,
                "steady_over_budget": round(self.steady_over_budget, 3) if self.steady_budget else None,
                "targets": {"load_peak_over_file": LOAD_PEAK_TARGET,
                            "steady_rss": "file + KV cache + compute buffers + 10%"}}


def current_rss_bytes() -> int:
    """Resident set size now (0 where /proc is absent)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class RatioRow:
    """One A/B comparison of single-stream decode speed, alternating A and B."""

    name: str
    a_tps: Spread  # the baseline (no grammar / no speculation)
    b_tps: Spread
    ratios: Spread  # each B run over the A run just before it
    target: float
    acceptance: float | None = None  # speculation: accepted / drafted tokens

    def to_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "baseline_decode_tokens_per_s": self.a_tps.to_dict(),
             "decode_tokens_per_s": self.b_tps.to_dict(), "ratio": self.ratios.to_dict(), "target": self.target}
        if self.acceptance is not None:
            d["acceptance"] = round(self.acceptance, 3)
        return d


# Workloads for speculation: answers that copy their input, and one that does not.
SPEC_WORKLOADS = {
    "rewrite": ("Rewrite this paragraph in a more formal tone, keeping its facts:\n\n"
                "The new library opened on Monday. It has three floors, a cafe and a garden on the roof. "
                "Children can borrow up to ten books at a time, and adults up to twenty. The library is "
                "open from nine in the morning to eight in the evening, every day except Sunday."),
    "extract": ("Extract every person as JSON objects with name, role and city:\n\n"
                "Maria Lopez, the head engineer, moved from Madrid to Berlin. Tom Becker, a designer in "
                "Hamburg, works with her. Anna Schmidt, the project manager, lives in Munich."),
    "translate-markdown": ("Translate this Markdown into French. Keep code blocks unchanged.\n\n"
                           "## Install\n\nRun the installer, then check it:\n\n```bash\npip install "
                           "chatglm3-cli\nchatglm3 --version\nchatglm3 run -m chatglm3-6b \"Hello\"\n```\n\n"
                           "## Use\n\nStart a chat with `chatglm3 chat`."),
    "free (no copying)": "Write a short story about a lighthouse keeper who finds a message in a bottle.",
}

GRAMMARS = {
    "classify": 'root ::= "\\n" " "? ("positive" | "negative" | "neutral" | "mixed")',
    "text": 'root ::= "\\n" [a-zA-Z ,.]+',
    "extract (JSON)": None,  # from a schema, built at run time
}
EXTRACT_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "city": {"type": "string"},
                                                   "age": {"type": "integer"}}, "required": ["name", "city"]}


# Issue targets shown beside the measurements.
GRAMMAR_TARGET = 0.9
SPEC_TARGET_COPY = 1.5
SPEC_TARGET_OTHER = 0.97
STEADY_RSS_TARGET = 1.10
LOAD_PEAK_TARGET = 1.3
LOAD_TARGET = 0.45  # beside one competing generation, at least this share of the speed alone


@dataclass
class BenchReport:
    model: str
    family: str
    quant: str | None
    size_bytes: int
    threads: int
    gpu_layers: int
    prompt_tokens: int
    gen_tokens: int
    reps: int
    records: int
    ours: Side
    raw: Side
    parallel: list[ParallelRow]
    peak_rss_bytes: int
    bandwidth_gbps: float
    bytes_per_token: int
    load: LoadReport | None = None
    memory: "MemoryReport | None" = None
    grammar: list[RatioRow] = field(default_factory=list)
    speculation: list[RatioRow] = field(default_factory=list)
    spec_draft: int = 0
    # Whether our contexts used llama.cpp's flash attention (the raw loop takes llama.cpp's
    # default, "auto": on for a CPU). Without it every row computes scores over all the KV
    # cells of a step, so parallel steps cost more than raw's (docs/benchmarks.md).
    ours_flash_attn: bool | None = None

    def warnings(self) -> list[str]:
        """One line per figure whose runs spread too widely to trust."""
        out = []
        for side_name, side in (("raw", self.raw), ("ours", self.ours)):
            for what, spread in (("prefill", side.prefill_tps), ("decode", side.decode_tps),
                                 ("first token", side.ttft_s)):
                if spread.noisy:
                    r = spread.ratio
                    times = "an unbounded factor" if r == float("inf") else f"{r:.1f}x"
                    out.append(f"{side_name} {what}: runs from {min(spread.runs):.2f} to "
                               f"{max(spread.runs):.2f} ({times} apart)")
        if out:
            out.insert(0, f"too noisy to trust: runs differ by more than {NOISY_RATIO}x, so the "
                          f"machine was busy; the medians, ratios and parallel rows below may "
                          f"measure other load, not the tool (rerun when idle, or with more --reps)")
        return out

    @property
    def limit_tps(self) -> float:
        return self.bandwidth_gbps * 1e9 / self.bytes_per_token if self.bytes_per_token else 0.0

    def to_dict(self) -> dict[str, Any]:
        ours_d, raw_d = self.ours.decode_tps.median, self.raw.decode_tps.median
        ours_p, raw_p = self.ours.prefill_tps.median, self.raw.prefill_tps.median
        return {
            "schema": SCHEMA,
            "model": {"path": self.model, "family": self.family, "quant": self.quant, "size_bytes": self.size_bytes},
            "settings": {"threads": self.threads, "gpu_layers": self.gpu_layers, "prompt_tokens": self.prompt_tokens,
                         "gen_tokens": self.gen_tokens, "reps": self.reps, "parallel_records": self.records},
            "single": {"ours": self.ours.to_dict(), "raw": self.raw.to_dict(),
                       "ours_over_raw": {"prefill": round(ours_p / raw_p, 3) if raw_p else None,
                                         "decode": round(ours_d / raw_d, 3) if raw_d else None}},
            "parallel": [r.to_dict() for r in self.parallel],
            "noisy": bool(self.warnings()),
            "warnings": self.warnings(),
            "memory": {"peak_rss_bytes": self.peak_rss_bytes, **(self.memory.to_dict() if self.memory else {})},
            "bandwidth": {"measured_read_gb_per_s": round(self.bandwidth_gbps, 2),
                          "model_bytes_per_token": self.bytes_per_token,
                          "decode_limit_tokens_per_s": round(self.limit_tps, 3),
                          "ours_fraction_of_limit": round(ours_d / self.limit_tps, 3) if self.limit_tps else None},
            "load": self.load.to_dict() if self.load else None,
            "grammar": [r.to_dict() for r in self.grammar],
            "speculation": {"draft_tokens": self.spec_draft, "workloads": [r.to_dict() for r in self.speculation]},
            "attention": {"ours_flash_attn": self.ours_flash_attn, "raw_flash_attn": "auto"},
        }


def measure_bandwidth(threads: int, size_mb: int = 512) -> float:
    """Memory read bandwidth in GB/s: `threads` threads each summing their part of a large
    array (numpy releases the GIL), best of five."""
    import concurrent.futures

    import numpy as np

    a = np.ones(size_mb * (1 << 20) // 8, dtype=np.float64)
    parts = np.array_split(a, threads)
    best = float("inf")
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for _ in range(5):
            t = time.perf_counter()
            list(pool.map(np.sum, parts))
            best = min(best, time.perf_counter() - t)
    return a.nbytes / best / 1e9


def bytes_per_token(info: Any) -> int:
    """Weight bytes read to generate one token: every tensor but the embedding table, of
    which only one row is read."""
    total = 0
    for t in info.tensors:
        n = t.nbytes() or 0
        if t.name == "token_embd.weight" and len(t.shape) == 2 and t.shape[1]:
            n //= t.shape[1]
        total += n
    return total


def peak_rss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def _filler_prompt(model: Any, n: int) -> list[int]:
    from ..engine.prompt import Message

    body = model.tokenize("The philosophy of people is a sophisticated subject. 你好，世界！" * (n // 8 + 4))
    ids = model.prompt_ids([Message("user", "")])
    head, tail = ids[:-1], ids[-1:]
    return head + body[: max(1, n - len(head) - len(tail))] + tail


def _decode_tps(c: Any) -> float | None:
    t = c.timings
    return t.generated_tokens / t.generation_ms * 1000 if t.generation_ms > 0 and t.generated_tokens > 1 else None


def _grammar_ab(model: Any, prompt: list[int], gen_tokens: int, reps: int,
                progress: Callable[[str], None]) -> list[RatioRow]:
    """Single-stream decode with each grammar against the same prompt without one, alternating.
    On random weights the model's first choice is nearly always rejected, so this measures the
    resampling path too."""
    from ..engine.decoder import DecodeRequest, ParallelDecoder
    from ..engine.grammar import schema_grammar
    from ..engine.sampling import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=gen_tokens)
    rows = []
    with ParallelDecoder(model, n_parallel=1, n_ctx=len(prompt) + gen_tokens + 8, speculate=0) as dec:
        def one(grammar: str | None) -> float | None:
            r = next(iter(dec.run([DecodeRequest("b", prompt_ids=prompt, params=params, grammar=grammar)])))
            return _decode_tps(r.completion) if r.completion else None

        for name, g in GRAMMARS.items():
            g = g if g is not None else schema_grammar(EXTRACT_SCHEMA)
            row = RatioRow(name, Spread([]), Spread([]), Spread([]), GRAMMAR_TARGET)
            for rep in range(reps):
                progress(f"grammar {name}, run {rep + 1}/{reps}")
                a, b = one(None), one(g)
                if a and b:
                    row.a_tps.runs.append(a)
                    row.b_tps.runs.append(b)
                    row.ratios.runs.append(b / a)
            rows.append(row)
    return rows


def _speculation_ab(model: Any, gen_tokens: int, reps: int, progress: Callable[[str], None]) -> list[RatioRow]:
    """Single-stream greedy decode with prompt-lookup speculation on and off, alternating, on
    answers that copy their input and on one that does not."""
    from ..engine.model import SPECULATE_DRAFT
    from ..engine.prompt import Message
    from ..engine.sampling import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=gen_tokens)
    saved = model.speculate
    rows = []
    try:
        for name, text in SPEC_WORKLOADS.items():
            prompt = model.prompt_ids([Message("user", text)])
            target = SPEC_TARGET_OTHER if name.startswith("free") else SPEC_TARGET_COPY
            row = RatioRow(name, Spread([]), Spread([]), Spread([]), target)
            drafted = accepted = 0
            for rep in range(reps):
                progress(f"speculation, {name}, run {rep + 1}/{reps}")
                got = []
                for spec in (0, SPECULATE_DRAFT):
                    model.speculate = spec
                    model.reset()
                    g = model.generate(prompt_ids=prompt, params=params)
                    got.append(_decode_tps(g.complete()))
                    drafted += g.spec.drafted
                    accepted += g.spec.accepted
                if got[0] and got[1]:
                    row.a_tps.runs.append(got[0])
                    row.b_tps.runs.append(got[1])
                    row.ratios.runs.append(got[1] / got[0])
            row.acceptance = accepted / drafted if drafted else 0.0
            rows.append(row)
    finally:
        model.speculate = saved
    return rows


def run_bench(path: str | os.PathLike[str], *, prompt_tokens: int = 128, gen_tokens: int = 32,
              parallel: list[int] | None = None, reps: int = 3, records: int = 8,
              threads: int | None = None, gpu_layers: int | None = None, chat_template: Any = None,
              load: int = 0,
              progress: Callable[[str], None] = lambda s: None) -> BenchReport:
    from ..engine.cpu import omp_policy
    from ..engine.decoder import DecodeRequest, ParallelDecoder
    from ..engine.model import SPECULATE_DRAFT, Model
    from ..engine.prompt import Message
    from ..engine.sampling import SamplingParams
    from .raw import RawContext

    parallel = parallel or [1, 2, 4]
    n_ctx = max(256, prompt_tokens + gen_tokens + 16)
    progress("loading the model")
    from ..engine import backend

    backend.llama()  # the library's own memory is not the model's
    base_rss = current_rss_bytes()
    t_load = time.perf_counter()
    model = Model(path, n_ctx=n_ctx, n_threads=threads, n_gpu_layers=gpu_layers, chat_template=chat_template)
    t_load = time.perf_counter() - t_load
    load_peak = peak_rss_bytes()
    try:
        stops = set(model.stop_tokens)
        prompt = _filler_prompt(model, prompt_tokens)
        greedy = SamplingParams(temperature=0, max_tokens=gen_tokens)
        raw = RawContext(model.llama.ptr, n_ctx=n_ctx, n_threads=model.n_threads)
        ours_side, raw_side = Side(), Side()
        competitors: list[Any] = []
        loaded = LoadReport(load, omp_policy() or "?", Spread([]), Spread([]), Spread([]), Spread([]))

        def ours_decode(min_s: float = 1.0) -> float | None:
            """Decode tok/s of single-stream runs, repeated for at least min_s (small models)."""
            n, ms, t = 0, 0.0, time.perf_counter()
            while time.perf_counter() - t < min_s:
                model.reset()
                r = model.generate(prompt_ids=prompt, params=greedy).complete()
                if r.completion_tokens <= 1:
                    break
                n += r.timings.generated_tokens
                ms += r.timings.generation_ms
            return n / ms * 1000 if ms > 0 else None

        try:
            if load:
                from .load import Competitor

                progress(f"starting {load} competing generation{'s' if load > 1 else ''}")
                for _ in range(load):
                    competitors.append(Competitor(str(path), threads=threads))
            for rep in range(reps):
                progress(f"single stream, run {rep + 1}/{reps}")
                p_s, ttft, d_s, n = raw.single(prompt, gen_tokens, stops)
                raw_side.prefill_tps.runs.append(len(prompt) / p_s)
                raw_side.ttft_s.runs.append(ttft)
                if n > 1:
                    raw_side.decode_tps.runs.append(n / d_s)
                model.reset()
                r = model.generate(prompt_ids=prompt, params=greedy).complete()
                tm = r.timings
                ours_side.prefill_tps.runs.append(tm.prompt_tps or 0.0)
                ours_side.ttft_s.runs.append(tm.first_token_ms / 1000)
                if tm.generation_tps and r.completion_tokens > 1:
                    ours_side.decode_tps.runs.append(tm.generation_tps)
                if competitors:
                    progress(f"single stream beside {load} competing, run {rep + 1}/{reps}")
                    alone = ours_decode()
                    for c in competitors:
                        c.resume()
                    time.sleep(0.5)  # let them reach their steady state
                    t0 = time.time()
                    beside = ours_decode()
                    t1 = time.time()
                    for c in competitors:
                        c.pause()
                    others = [c.tokens_per_s(t0, t1) for c in competitors]
                    if alone and beside:
                        loaded.alone_tps.runs.append(alone)
                        loaded.loaded_tps.runs.append(beside)
                        loaded.ratios.runs.append(beside / alone)
                    if all(o is not None for o in others):
                        loaded.competitor_tps.runs.append(sum(others) / len(others))
        finally:
            raw.close()
            for c in competitors:
                c.close()
        # Steady state: the model and our one-sequence context, after generating (the raw
        # loop's context is freed).
        model.reset()
        model.generate(prompt_ids=prompt, params=greedy).complete()
        bufs = model.chat_context.buffer_bytes if model.chat_context is not None else {"kv": 0, "compute": 0}
        memory = MemoryReport(file_bytes=Path(path).stat().st_size, mmap=model.llama.mmap, load_s=t_load,
                              load_peak_rss=load_peak, steady_rss=current_rss_bytes(),
                              kv_bytes=bufs["kv"], compute_bytes=bufs["compute"], base_rss=base_rss,
                              dropped_pages=getattr(model.llama, "dropped_pages", False))

        topics = ["the sea", "a city at night", "mountains", "a library", "rain", "trains", "an old map",
                  "the moon", "a garden", "winter", "a market", "bridges", "a lighthouse", "the desert"]
        # Records differ from their first word, so neither side can share a prompt prefix and
        # both do the same work (sharing is measured on its own: evaluated_prompt_tokens).
        prompts = [model.prompt_ids([Message("user", f"{i}. {topics[i % len(topics)].capitalize()}: "
                                                     "write a short poem about it.")])
                   for i in range(records)]
        n_prompt = sum(len(p) for p in prompts)
        rows: list[ParallelRow] = []
        per_seq = max(len(p) for p in prompts) + gen_tokens + 8
        def raw_run(n: int) -> tuple[float, int]:
            rawp = RawContext(model.llama.ptr, n_ctx=per_seq * n, n_threads=model.n_threads, n_seq=n)
            try:
                return rawp.parallel(prompts, n, gen_tokens, stops)
            finally:
                rawp.close()

        def our_run(n: int) -> tuple[float, int]:
            with ParallelDecoder(model, n_parallel=n, n_ctx=per_seq) as dec:
                t = time.perf_counter()
                results = list(dec.run(DecodeRequest(str(i), prompt_ids=p, params=greedy)
                                       for i, p in enumerate(prompts)))
                return time.perf_counter() - t, sum(x.completion.completion_tokens for x in results if x.completion)

        for n in parallel:
            runs: list[tuple[float, int, float, int]] = []
            for rep in range(reps):  # alternate which side goes first
                progress(f"{records} records, {n} in parallel, run {rep + 1}/{reps}")
                if rep % 2 == 0:
                    raw_t, raw_gen = raw_run(n)
                    our_t, our_gen = our_run(n)
                else:
                    our_t, our_gen = our_run(n)
                    raw_t, raw_gen = raw_run(n)
                runs.append((our_t, our_gen, raw_t, raw_gen))
            tot = [((n_prompt + og) / ot, og / ot, (n_prompt + rg) / rt, rg / rt) for ot, og, rt, rg in runs]
            med = [statistics.median(x[i] for x in tot) for i in range(4)]
            rows.append(ParallelRow(n, med[0], med[1], med[2], med[3], ratios=[x[0] / x[2] for x in tot]))
        if rows:
            base = next((r for r in rows if r.n == 1), rows[0])
            for row in rows:
                row.speedup_ours = row.ours_total_tps / base.ours_total_tps
                row.speedup_raw = row.raw_total_tps / base.raw_total_tps
        grammar_rows = _grammar_ab(model, prompt, gen_tokens, reps, progress)
        spec_rows = _speculation_ab(model, gen_tokens, reps, progress)
        progress("measuring memory bandwidth")
        bw = measure_bandwidth(model.n_threads)
        return BenchReport(
            model=str(path), family=model.family, quant=model.info.quant, size_bytes=Path(path).stat().st_size,
            threads=model.n_threads, gpu_layers=model.n_gpu_layers, prompt_tokens=len(prompt),
            gen_tokens=gen_tokens, reps=reps, records=records, ours=ours_side, raw=raw_side, parallel=rows,
            peak_rss_bytes=peak_rss_bytes(), bandwidth_gbps=bw, bytes_per_token=bytes_per_token(model.info),
            load=loaded if load else None, memory=memory, grammar=grammar_rows, speculation=spec_rows,
            spec_draft=SPECULATE_DRAFT,
            ours_flash_attn=model.chat_context.flash_attn if model.chat_context is not None else None)
    finally:
        model.close()


def _load_mode(m: MemoryReport) -> str:
    if not m.mmap:
        return "read (not mapped)"
    return "mapped, pages left dead by repacking dropped" if m.dropped_pages else "mapped"


def format_report(rep: BenchReport) -> str:
    """The human-readable table."""
    d = rep.to_dict()
    s = d["single"]

    def sp(x: dict[str, Any]) -> str:
        return f"{x['median']:.2f} ({x['min']:.2f}-{x['max']:.2f})"

    warnings = rep.warnings()
    lines = [f"warning: {w}" if i == 0 else f"  {w}" for i, w in enumerate(warnings)]
    lines += [
        f"model: {rep.model} ({rep.family}, {rep.quant or '?'}, {rep.size_bytes / 1e9:.2f} GB) | "
        f"threads {rep.threads} | gpu layers {rep.gpu_layers}",
        f"single stream: prompt {rep.prompt_tokens} tokens, generate {rep.gen_tokens}, {rep.reps} runs "
        "(median, min-max)",
        f"{'':6}{'prefill tok/s':>24}{'decode tok/s':>24}{'first token s':>24}",
    ]
    for side in ("raw", "ours"):
        x = s[side]
        lines.append(f"{side:6}{sp(x['prefill_tokens_per_s']):>24}{sp(x['decode_tokens_per_s']):>24}"
                     f"{sp(x['time_to_first_token_s']):>24}")
    r = s["ours_over_raw"]
    noisy = " (noisy: see the warning)" if warnings else ""
    lines.append(f"{'ratio':6}{r['prefill'] if r['prefill'] is not None else '-':>24}"
                 f"{r['decode'] if r['decode'] is not None else '-':>24}   (ours / raw){noisy}")
    if rep.parallel:
        lines += ["", f"parallel: {rep.records} records (prompt + up to {rep.gen_tokens} tokens each), "
                      f"{rep.reps} runs alternating ours and raw (medians; ours/raw: median of the runs)",
                  f"{'N':>3}{'raw tok/s':>12}{'ours tok/s':>12}{'ours gen tok/s':>16}"
                  f"{'raw xN1':>9}{'ours xN1':>10}{'ours/raw':>10}"]
        for p in rep.parallel:
            lines.append(f"{p.n:>3}{p.raw_total_tps:>12.2f}{p.ours_total_tps:>12.2f}{p.ours_gen_tps:>16.2f}"
                         f"{p.speedup_raw:>9.2f}{p.speedup_ours:>10.2f}{p.ratio or 0:>10.3f}")
        if rep.ours_flash_attn is False:
            lines.append("(raw takes llama.cpp's flash attention, ours does not, so that answers do not depend "
                         "on --parallel: CHATGLM3_FLASH_ATTN=auto compares like with like)")
    bw = d["bandwidth"]
    lines += ["", f"memory: peak RSS {rep.peak_rss_bytes / 2**30:.2f} GiB | read bandwidth "
                  f"{bw['measured_read_gb_per_s']:.1f} GB/s | {rep.bytes_per_token / 1e9:.2f} GB read per token "
                  f"-> limit {bw['decode_limit_tokens_per_s']:.2f} tok/s; single-stream decode is "
                  f"{(bw['ours_fraction_of_limit'] or 0) * 100:.0f}% of it"]
    def ab(title: str, rows: list[RatioRow], base: str) -> None:
        if not rows:
            return
        lines.extend(["", title, f"  {'':22}{base + ' tok/s':>22}{'tok/s':>22}{'ratio (min-max)':>24}{'target':>8}"])
        for r in rows:
            extra = f"  accepted {r.acceptance * 100:.0f}% of drafts" if r.acceptance is not None else ""
            lines.append(f"  {r.name:22}{sp(r.a_tps.to_dict()):>22}{sp(r.b_tps.to_dict()):>22}"
                         f"{sp(r.ratios.to_dict()):>24}{'>= ' + str(r.target):>8}{extra}")

    if rep.memory:
        m = rep.memory
        gib = 2 ** 30
        lines += [
            f"model memory: {_load_mode(m)}, loaded in {m.load_s:.1f} s; above the "
            f"{m.base_rss / gib:.2f} GiB the process held before loading:",
            f"  peak while loading {(m.load_peak_rss - m.base_rss) / gib:.2f} GiB = {m.load_peak_over_file:.2f}x "
            f"the file (target <= {LOAD_PEAK_TARGET}x)",
            f"  steady while generating {(m.steady_rss - m.base_rss) / gib:.2f} GiB = {m.steady_over_budget:.2f}x "
            f"of file {m.file_bytes / gib:.2f} + KV cache {m.kv_bytes / gib:.2f} + compute buffers "
            f"{m.compute_bytes / gib:.2f} GiB (target <= {STEADY_RSS_TARGET}x)"]
    if rep.load:
        ld = rep.load
        lines += ["", f"under load: {ld.competitors} competing generation(s) of this model beside ours, "
                      f"alternating with runs alone (OpenMP wait policy: {ld.omp_policy})",
                  f"  decode alone {sp(ld.alone_tps.to_dict())} tok/s, beside them {sp(ld.loaded_tps.to_dict())}, "
                  f"each competitor {sp(ld.competitor_tps.to_dict())}",
                  f"  loaded / alone {sp(ld.ratios.to_dict())} (target >= {LOAD_TARGET} beside one; "
                  f"a fair share of the cores is {1 / (ld.competitors + 1):.2f})"]
    ab("grammar: single-stream decode with a grammar against the same prompt without", rep.grammar, "free")
    ab(f"speculation (prompt lookup, {rep.spec_draft} draft tokens): decode with it against without",
       rep.speculation, "off")
    return "\n".join(lines)
