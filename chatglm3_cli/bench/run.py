"""`chatglm3 bench`'s run: our engine and a raw llama.cpp loop on the same model.

Runs alternate (raw, ours, raw, ours...) so that a noisy machine hurts both alike. The report's
types are in report.py, the table in format.py, the A/B rows in compare.py.
"""
from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from .compare import grammar_ab, speculation_ab
from .measure import bytes_per_token, current_rss_bytes, measure_bandwidth, peak_rss_bytes
from .report import BenchReport, LoadReport, MemoryReport, ParallelRow, Side, Spread


def _filler_prompt(model: Any, n: int) -> list[int]:
    from ..engine.prompt import Message

    body = model.tokenize("The philosophy of people is a sophisticated subject. 你好，世界！" * (n // 8 + 4))
    ids = model.prompt_ids([Message("user", "")])
    head, tail = ids[:-1], ids[-1:]
    return head + body[: max(1, n - len(head) - len(tail))] + tail


def run_bench(path: str | os.PathLike[str], *, prompt_tokens: int = 128, gen_tokens: int = 32,
              parallel: list[int] | None = None, reps: int = 3, records: int = 8,
              threads: int | None = None, gpu_layers: int | None = None, chat_template: Any = None,
              load: int = 0,
              progress: Callable[[str], None] = lambda s: None) -> BenchReport:
    from ..engine.model import SPECULATE_DRAFT, Model
    from ..engine.sampling import SamplingParams

    parallel = parallel or [1, 2, 4]
    n_ctx = max(256, prompt_tokens + gen_tokens + 16)
    progress("loading the model")
    from ..engine.llama import runtime

    runtime.llama()  # the library's own memory is not the model's
    base_rss = current_rss_bytes()
    t_load = time.perf_counter()
    model = Model(path, n_ctx=n_ctx, n_threads=threads, n_gpu_layers=gpu_layers, chat_template=chat_template)
    t_load = time.perf_counter() - t_load
    load_peak = peak_rss_bytes()
    try:
        prompt = _filler_prompt(model, prompt_tokens)
        greedy = SamplingParams(temperature=0, max_tokens=gen_tokens)
        ours_side, raw_side, loaded = _single_stream(model, prompt, greedy, gen_tokens, n_ctx, reps, load,
                                                     str(path), threads, progress)
        # Steady state: the model and our one-sequence context, after generating (the raw
        # loop's context is freed).
        model.reset()
        model.generate(prompt_ids=prompt, params=greedy).complete()
        bufs = model.chat_context.buffer_bytes if model.chat_context is not None else {"kv": 0, "compute": 0}
        memory = MemoryReport(file_bytes=Path(path).stat().st_size, mmap=model.llama.mmap, load_s=t_load,
                              load_peak_rss=load_peak, steady_rss=current_rss_bytes(),
                              kv_bytes=bufs["kv"], compute_bytes=bufs["compute"], base_rss=base_rss,
                              dropped_pages=getattr(model.llama, "dropped_pages", False))
        rows = _parallel_rows(model, greedy, records, parallel, gen_tokens, reps, progress)
        grammar_rows = grammar_ab(model, prompt, gen_tokens, reps, progress)
        spec_rows = speculation_ab(model, gen_tokens, reps, progress)
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


def _single_stream(model: Any, prompt: list[int], greedy: Any, gen_tokens: int, n_ctx: int, reps: int,
                   load: int, path: str, threads: int | None,
                   progress: Callable[[str], None]) -> tuple[Side, Side, LoadReport]:
    """Single-stream runs, raw and ours alternating; with `load`, also ours alone against ours
    beside `load` competing processes, alternating."""
    from ..engine.cpu import omp_policy
    from .raw import RawContext

    stops = set(model.stop_tokens)
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
                competitors.append(Competitor(path, threads=threads))
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
    return ours_side, raw_side, loaded


def _parallel_rows(model: Any, greedy: Any, records: int, parallel: list[int], gen_tokens: int, reps: int,
                   progress: Callable[[str], None]) -> list[ParallelRow]:
    """`records` short prompts through the raw loop and our decoder at each parallel level,
    `reps` runs each, the two sides alternating (the order flipped every run)."""
    from ..engine.decoder import DecodeRequest, ParallelDecoder
    from ..engine.prompt import Message
    from .raw import RawContext

    stops = set(model.stop_tokens)
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
    return rows
