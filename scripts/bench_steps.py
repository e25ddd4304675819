#!/usr/bin/env python3
"""What one decode step of k rows costs on this CPU: k sequences, one token each, one
llama_decode call (a raw llama.cpp loop; our engine adds nothing here). Median of 5 steps
after 2 warm-up steps, for k = 1..8.

    python scripts/bench_steps.py                 # the 6B-shaped Q4_0 fixture, 2 threads
    python scripts/bench_steps.py --model FILE.gguf --threads 4

It shows where batching pays on a CPU: a 1-row step reads every weight once (memory-bound),
a k-row step multiplies k rows with what it read (compute-bound once k rows of FLOPs take
longer than the read); llama.cpp's repacked kernels also multiply rows in groups of 4, so a
step of 4 rows can cost less than one of 3. Not a test: run it on a quiet machine.
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
    args = ap.parse_args()

    from chatglm3_cli.bench.raw import RawContext
    from chatglm3_cli.engine.model import Model

    if args.model is None:
        import make_test_model as mtm

        args.model = mtm.build("6b", mtm.cache_dir())
    rows = [int(x) for x in args.rows.split(",")]
    with Model(args.model, n_ctx=256, n_threads=args.threads) as m:
        matmul = sum(math.prod(t.shape) for t in m.info.tensors if t.name != "token_embd.weight")
        raw = RawContext(m._llama.ptr, n_ctx=2048, n_threads=args.threads, n_seq=max(rows))
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


if __name__ == "__main__":
    sys.exit(main())
