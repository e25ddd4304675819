#!/usr/bin/env python3
"""What one decode step costs with each KV layout llama.cpp offers, side by side in one run.

For N sequences of --cells tokens each, times llama_decode of one token per sequence (an
N-row step, as batch and serve make them) in three contexts over the same model file:

- unified:      one KV pool for all sequences, no flash attention (our decoder before #22)
- unified+fa:   one KV pool with flash attention: what raw llama.cpp takes by default on a CPU
- streams:      a KV stream per sequence (kv_unified off), no flash attention (our decoder now)

Each configuration gets a fresh context, --steps timed steps, and the rounds alternate the
configurations so that a busy moment hits all of them alike; the report gives each one's
median step per round and its ratio to unified+fa. Nothing else should run meanwhile.

Usage: python scripts/kv_layout.py MODEL.gguf [--parallel 2,4] [--cells 80] [--rounds 3]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chatglm3_cli.engine.llama import runtime  # noqa: E402

LAYOUTS = {"unified": (True, 0), "unified+fa": (True, 1), "streams": (False, 0)}


def step_ms(L, model, n_vocab: int, *, unified: bool, fa: int, n_seq: int, cells: int, steps: int,
            threads: int) -> float:
    cp = L.llama_context_default_params()
    cp.n_ctx = 1024 * n_seq
    cp.n_batch = cp.n_ubatch = 512
    cp.n_seq_max = n_seq
    cp.kv_unified = unified
    cp.n_threads = cp.n_threads_batch = threads
    cp.flash_attn_type = fa
    cp.no_perf = True
    ctx = L.llama_init_from_model(model, cp)
    batch = L.llama_batch_init(512, 0, n_seq)
    rnd = random.Random(1)
    try:
        for s in range(n_seq):  # each sequence's cells, evaluated alone
            for i in range(cells):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = rnd.randrange(100, n_vocab), i, 1, 0
                batch.seq_id[i][0] = s
            batch.logits[cells - 1] = 1
            batch.n_tokens = cells
            assert L.llama_decode(ctx, batch) == 0
        times = []
        for step in range(steps):
            for s in range(n_seq):
                batch.token[s], batch.pos[s], batch.n_seq_id[s], batch.logits[s] = (
                    rnd.randrange(100, n_vocab), cells + step, 1, 1)
                batch.seq_id[s][0] = s
            batch.n_tokens = n_seq
            t = time.perf_counter()
            assert L.llama_decode(ctx, batch) == 0
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1000
    finally:
        L.llama_batch_free(batch)
        L.llama_free(ctx)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--parallel", default="2,4")
    ap.add_argument("--cells", type=int, default=80, help="tokens each sequence holds (default 80)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    L = runtime.llama()
    L.llama_backend_init()
    model = L.llama_model_load_from_file(a.model.encode(), L.llama_model_default_params())
    n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    levels = [int(x) for x in a.parallel.split(",")]
    got: dict[tuple[int, str], list[float]] = {}
    for r in range(a.rounds):
        for n in levels:
            names = list(LAYOUTS) if r % 2 == 0 else list(reversed(LAYOUTS))
            for name in names:
                unified, fa = LAYOUTS[name]
                ms = step_ms(L, model, n_vocab, unified=unified, fa=fa, n_seq=n, cells=a.cells,
                             steps=a.steps, threads=a.threads)
                got.setdefault((n, name), []).append(ms)
                print(f"round {r + 1} N={n} {name:<11} {ms:7.1f} ms/step", file=sys.stderr, flush=True)
    print(f"{'N':>2} {'layout':<11} {'ms/step (rounds)':<28} {'median':>7} {'/ unified+fa':>12}")
    for n in levels:
        ref = statistics.median(got[(n, "unified+fa")])
        for name in LAYOUTS:
            runs = got[(n, name)]
            med = statistics.median(runs)
            shown = ", ".join(f"{x:.0f}" for x in runs)
            print(f"{n:>2} {name:<11} {shown:<28} {med:7.1f} {med / ref:12.2f}")


if __name__ == "__main__":
    main()
