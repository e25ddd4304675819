#!/usr/bin/env python3
"""What one decode step of k rows costs on this CPU: k sequences, one token each, one
llama_decode call (a raw llama.cpp loop; our engine adds nothing here). Median of 5 steps
after 2 warm-up steps, for k = 1..8.

    python scripts/bench_steps.py                 # the 6B-shaped Q4_0 fixture, 2 threads
    python scripts/bench_steps.py --model FILE.gguf --threads 4
    python scripts/bench_steps.py --padding 3     # the decoder with 3 sequences, padding off/auto/on

It shows where batching pays on a CPU: a 1-row step reads every weight once (memory-bound),
a k-row step multiplies k rows with what it read (compute-bound once k rows of FLOPs take
longer than the read); llama.cpp's repacked kernels also multiply rows in groups of 4, so a
step of 4 rows can cost less than one of 3. Not a test: run it on a quiet machine.

``--padding K``: the parallel decoder itself with K sequences of --tokens tokens each, with
CHATGLM3_PAD_ROWS off, auto (which times its own steps first) and on, alternated --repeat times
in one run; tokens/s of each and the ratios to "off".
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="a GGUF file (default: the 6b fixture)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", default="1,2,3,4,5,6,8")
    ap.add_argument("--padding", type=int, default=0, metavar="K",
                    help="time the decoder with K sequences, padding off/auto/on, instead")
    ap.add_argument("--tokens", type=int, default=32, help="tokens per sequence (--padding)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of off/auto/on (--padding)")
    args = ap.parse_args()

    from chatglm3_cli.bench.raw import RawContext
    from chatglm3_cli.engine.model import Model

    if args.model is None:
        import make_test_model as mtm

        args.model = mtm.build("6b", mtm.cache_dir())
    if args.padding:
        return padding(args)
    rows = [int(x) for x in args.rows.split(",")]
    with Model(args.model, n_ctx=256, n_threads=args.threads) as m:
        matmul = sum(math.prod(t.shape) for t in m.info.tensors if t.name != "token_embd.weight")
        raw = RawContext(m.llama.ptr, n_ctx=2048, n_threads=args.threads, n_seq=max(rows))
        L, b = raw.L, raw.batch
        print(f"{Path(args.model).name}, {args.threads} threads, {matmul / 1e9:.2f} B matmul weights "
              f"({2 * matmul / 1e9:.1f} GFLOP per row)")
        print("| rows | ms per step (min-max) | ms per row | tok/s | GFLOP/s |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        try:
            for k in rows:
                L.llama_memory_clear(raw.mem, True)
                times = []
                for p in range(7):
                    for i in range(k):
                        b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = 100 + i, p, 1, 1
                        b.seq_id[i][0] = i
                    b.n_tokens = k
                    t = time.perf_counter()
                    if L.llama_decode(raw.ctx, b) != 0:
                        raise RuntimeError("llama_decode failed")
                    times.append(time.perf_counter() - t)
                kept = times[2:]
                med = statistics.median(kept)
                print(f"| {k} | {med * 1000:.0f} ({min(kept) * 1000:.0f}-{max(kept) * 1000:.0f}) | "
                      f"{med * 1000 / k:.0f} | {k / med:.2f} | {2 * matmul * k / med / 1e9:.0f} |", flush=True)
        finally:
            raw.close()
    return 0


def padding(args: argparse.Namespace) -> int:
    """The decoder with K sequences: tokens/s with row padding off, auto and on, alternated."""
    from chatglm3_cli.engine.decoder import DecodeRequest, ParallelDecoder
    from chatglm3_cli.engine.model import Model
    from chatglm3_cli.engine.sampling import SamplingParams
    from chatglm3_cli.engine.step_costs import StepTimes

    params = SamplingParams(temperature=0, max_tokens=args.tokens)
    got: dict[str, list[float]] = {"off": [], "auto": [], "on": []}
    with Model(args.model, n_ctx=256, n_threads=args.threads) as m:
        m.stop_tokens = set()  # a random file may end early: every sequence runs --tokens
        reqs = [DecodeRequest(str(i), prompt_ids=[64790, 64792, 100 + i] * 3, params=params)
                for i in range(args.padding)]
        print(f"{Path(args.model).name}, {args.threads} threads, {args.padding} sequences x {args.tokens} tokens")
        print("| round | mode | tok/s | padded steps | steps |")
        print("| ---: | --- | ---: | ---: | ---: |")
        for r in range(args.repeat):
            for mode in got:
                m.pad_rows, m.step_times = mode, StepTimes()  # auto measures from scratch each round
                with ParallelDecoder(m, n_parallel=args.padding, n_ctx=128) as d:
                    t = time.perf_counter()
                    n = sum(res.completion.completion_tokens for res in d.run(reqs) if res.completion)
                    rate = n / (time.perf_counter() - t)
                    got[mode].append(rate)
                    print(f"| {r + 1} | {mode} | {rate:.2f} | {d.stats.padded_steps} | {d.stats.decode_calls} |",
                          flush=True)
    for mode in ("auto", "on"):
        ratios = [a / b for a, b in zip(got[mode], got["off"])]
        print(f"{mode} / off: {min(ratios):.2f}-{max(ratios):.2f} (median {statistics.median(ratios):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
