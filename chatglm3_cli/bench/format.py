"""`chatglm3 bench`'s table: what a user asks first (tokens/s, memory, first token), then the
comparison with a raw llama.cpp loop and the A/B rows."""
from __future__ import annotations

from typing import Any

from .report import (
    LOAD_PEAK_TARGET,
    LOAD_TARGET,
    STEADY_RSS_TARGET,
    BenchReport,
    MemoryReport,
    RatioRow,
    Spread,
)


def _load_mode(m: MemoryReport) -> str:
    if not m.mmap:
        return "read (not mapped)"
    return "mapped, pages left dead by repacking dropped" if m.dropped_pages else "mapped"


def _headline(rep: BenchReport) -> list[str]:
    """What a user asks first: how fast this model reads a prompt and writes an answer here, how
    soon the first token comes, and how much memory it takes (our engine's figures)."""
    o = rep.ours
    gib = 2 ** 30

    def fig(s: Spread, unit: str) -> str:
        return f"{s.median:.2f} {unit} ({min(s.runs):.2f}-{max(s.runs):.2f})" if s.runs else "-"

    rows = [("prompt", fig(o.prefill_tps, "tokens/s"), f"reading {rep.prompt_tokens} tokens"),
            ("answer", fig(o.decode_tps, "tokens/s"), f"writing {rep.gen_tokens} tokens"),
            ("first token", fig(o.ttft_s, "s"), "after the prompt is sent")]
    if rep.memory:
        m = rep.memory
        rows.append(("memory", f"{(m.steady_rss - m.base_rss) / gib:.2f} GiB",
                     f"while generating; {(m.load_peak_rss - m.base_rss) / gib:.2f} GiB at most while "
                     f"loading ({m.load_s:.1f} s)"))
    else:
        rows.append(("memory", f"{rep.peak_rss_bytes / gib:.2f} GiB", "at most (the whole process)"))
    if rep.parallel:
        best = max(rep.parallel, key=lambda p: p.ours_gen_tps)
        rows.append(("in parallel", f"{best.ours_gen_tps:.2f} tokens/s",
                     f"answer tokens with {best.n} sequences at once ({rep.records} records)"))
    head = (f"{rep.model} ({rep.family}, {rep.quant or '?'}, {rep.size_bytes / 1e9:.2f} GB), "
            f"{rep.threads} threads, {rep.gpu_layers} GPU layers; median of {rep.reps} runs (min-max)")
    return [head] + [f"  {label:14}{value:<32}{note}" for label, value, note in rows]


def format_report(rep: BenchReport) -> str:
    """The human-readable table."""
    d = rep.to_dict()
    s = d["single"]

    def sp(x: dict[str, Any]) -> str:
        return f"{x['median']:.2f} ({x['min']:.2f}-{x['max']:.2f})"

    warnings = rep.warnings()
    lines = [f"warning: {w}" if i == 0 else f"  {w}" for i, w in enumerate(warnings)]
    lines += _headline(rep)
    lines += [
        "", "compared with a raw llama.cpp loop on the same model",
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
