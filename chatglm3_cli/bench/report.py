"""`chatglm3 bench`'s report: the figures, their spread, and the stable JSON form.

Each figure is the median of alternating runs with its min and max. The JSON form
(``to_dict``) is a stable schema for scripts: keys are only ever added, and ``schema`` changes
if one ever changes.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

SCHEMA = 1
# Runs whose fastest is more than this many times the slowest measured a busy machine, not the
# tool: their medians and ratios are flagged instead of reported as facts.
NOISY_RATIO = 1.5

# Issue targets shown beside the measurements.
GRAMMAR_TARGET = 0.9
SPEC_TARGET_COPY = 1.5
SPEC_TARGET_OTHER = 0.97
STEADY_RSS_TARGET = 1.10
LOAD_PEAK_TARGET = 1.3
LOAD_TARGET = 0.45  # beside one competing generation, at least this share of the speed alone


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
