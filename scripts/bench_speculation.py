#!/usr/bin/env python3
"""Prompt-lookup speculation off, auto and always on, side by side, on a real model and the
6B-shaped file: single-stream greedy decode tok/s of each mode on copy-heavy answers (rewrite,
extract, Markdown translation) and one that copies nothing, alternated in one run.

    python scripts/bench_speculation.py                      # SmolLM2-135M (downloads 93 MB once)
    python scripts/bench_speculation.py --model FILE.gguf --tokens 48 --reps 3

"auto" starts each answer with a fresh policy (as a new `chatglm3 run` does), so its
measuring steps are part of its time. What CHATGLM3_SPECULATE should default to follows from
this: auto must stay at >= 0.97 of off where drafting does not pay. Not a test: run it on a
quiet machine.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

MODES = ("off", "auto", "on")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="a GGUF file (default: SmolLM2-135M-Instruct)")
    ap.add_argument("--tokens", type=int, default=96, help="tokens per answer")
    ap.add_argument("--reps", type=int, default=3, help="rounds of off/auto/on per workload")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workloads", default=None, help="comma-separated names (default: all)")
    args = ap.parse_args()

    from benchmark import smollm_path

    from chatglm3_cli.bench.compare import SPEC_WORKLOADS
    from chatglm3_cli.bench.measure import decode_tps
    from chatglm3_cli.engine.model import SPECULATE_DRAFT, Model
    from chatglm3_cli.engine.prompt import Message
    from chatglm3_cli.engine.sampling import SamplingParams
    from chatglm3_cli.engine.speculation import SpecPolicy
    from chatglm3_cli.engine.step_costs import StepTimes

    path = args.model or smollm_path()
    if path is None:
        print("SmolLM2 could not be downloaded: pass --model", file=sys.stderr)
        return 1
    names = args.workloads.split(",") if args.workloads else list(SPEC_WORKLOADS)
    params = SamplingParams(temperature=0, max_tokens=args.tokens)
    print(f"{Path(path).name}, {args.threads} threads, {args.tokens} tokens per answer, {args.reps} rounds")
    print("| workload | off tok/s | auto / off | on / off | auto: drafted, accepted |")
    print("| --- | ---: | --- | --- | ---: |")
    with Model(path, n_ctx=1024, n_threads=args.threads, speculate=False) as m:
        for name in names:
            prompt = m.prompt_ids([Message("user", SPEC_WORKLOADS[name])])
            rates: dict[str, list[float]] = {mode: [] for mode in MODES}
            drafted = accepted = 0
            for _ in range(args.reps):
                for mode in MODES:
                    m.speculate = 0 if mode == "off" else SPECULATE_DRAFT
                    m.step_times = StepTimes()
                    m.spec_policy = SpecPolicy(m.step_times) if mode == "auto" else None
                    m.reset()
                    g = m.generate(prompt_ids=prompt, params=params)
                    tps = decode_tps(g.complete())
                    if tps:
                        rates[mode].append(tps)
                    if mode == "auto":
                        drafted += g.spec.drafted
                        accepted += g.spec.accepted

            off = statistics.median(rates["off"]) if rates["off"] else float("nan")
            print(f"| {name} | {off:.1f} | {_ratio(rates, 'auto')} | {_ratio(rates, 'on')} | "
                  f"{drafted}, {accepted} |", flush=True)
    return 0


def _ratio(rates: dict[str, list[float]], mode: str) -> str:
    r = [a / b for a, b in zip(rates[mode], rates["off"])]
    return f"{statistics.median(r):.2f} ({min(r):.2f}-{max(r):.2f})" if r else "-"


if __name__ == "__main__":
    sys.exit(main())
