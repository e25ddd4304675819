#!/usr/bin/env python3
"""Parallel decoding throughput: our ParallelDecoder against a raw llama.cpp multi-sequence loop.

    python scripts/bench_parallel.py                      # 6B-shaped Q4_0 fixture, 16 x 32 tokens
    python scripts/bench_parallel.py --parallel 1,2,4 --records 16 --gen-tokens 32

For each N, both sides run the same work: R `generate` prompts (distinct, short), greedy, up to
G tokens each, N sequences in flight in one context, each step one llama_decode over every
live sequence. Reported: total tokens/s (prompt + generated tokens over wall time), generated
tokens/s, the speed-up over N=1, and ours/raw. A benchmark, not a test.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def raw_parallel(model, prompts: list[list[int]], n_par: int, n_gen: int, stops: set[int], n_ctx: int) -> tuple[float, int]:
    """Continuous batching written directly against llama.cpp's low-level API."""
    from chatglm3_cli.engine import backend

    L = backend.llama()
    cp = L.llama_context_default_params()
    cp.n_ctx, cp.n_batch, cp.n_ubatch = n_ctx * n_par, 512, 512
    cp.n_seq_max = n_par
    cp.kv_unified = True
    cp.n_threads = cp.n_threads_batch = model.n_threads
    cp.no_perf = True
    ctx = L.llama_init_from_model(model._llama.ptr, cp)
    batch = L.llama_batch_init(512, 0, n_par)
    mem = L.llama_get_memory(ctx)
    todo = list(range(len(prompts)))
    live: dict[int, dict] = {}
    free = list(range(n_par))
    generated = 0
    t0 = time.perf_counter()
    while todo or live:
        while free and todo:
            seq = free.pop()
            i = todo.pop(0)
            smpl = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
            L.llama_sampler_chain_add(smpl, L.llama_sampler_init_greedy())
            live[seq] = {"pending": list(prompts[i]), "pos": 0, "next": None, "n": 0, "smpl": smpl}
        n = 0
        rows = {}
        for seq, s in live.items():
            if s["next"] is not None:
                batch.token[n], batch.pos[n], batch.n_seq_id[n], batch.logits[n] = s["next"], s["pos"], 1, 1
                batch.seq_id[n][0] = seq
                rows[seq] = n
                n += 1
        for seq, s in live.items():
            if s["next"] is None and s["pending"]:
                take = s["pending"][: 512 - n]
                for j, t in enumerate(take):
                    batch.token[n], batch.pos[n], batch.n_seq_id[n] = t, s["pos"] + j, 1
                    batch.seq_id[n][0] = seq
                    batch.logits[n] = 0
                    n += 1
                if len(take) == len(s["pending"]):
                    batch.logits[n - 1] = 1
                    rows[seq] = n - 1
                s["taken"] = len(take)
        batch.n_tokens = n
        assert L.llama_decode(ctx, batch) == 0
        done = []
        for seq, s in live.items():
            if s["next"] is not None:
                s["pos"] += 1
                s["next"] = None
            elif s.get("taken"):
                s["pos"] += s["taken"]
                s["pending"] = s["pending"][s["taken"]:]
                s["taken"] = 0
            if seq in rows:
                tok = L.llama_sampler_sample(s["smpl"], ctx, rows[seq])
                if tok in stops:
                    done.append(seq)
                    continue
                s["n"] += 1
                generated += 1
                if s["n"] >= n_gen:
                    done.append(seq)
                else:
                    s["next"] = tok
        for seq in done:
            L.llama_sampler_free(live[seq]["smpl"])
            L.llama_memory_seq_rm(mem, seq, -1, -1)
            del live[seq]
            free.append(seq)
    elapsed = time.perf_counter() - t0
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    return elapsed, generated


def ours_parallel(model, prompts, n_par, n_gen, n_ctx) -> tuple[float, int]:
    from chatglm3_cli.engine.decoder import DecodeRequest, ParallelDecoder
    from chatglm3_cli.engine.sampling import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=n_gen)
    with ParallelDecoder(model, n_parallel=n_par, n_ctx=n_ctx) as d:
        t0 = time.perf_counter()
        results = list(d.run(DecodeRequest(str(i), prompt_ids=p, params=params) for i, p in enumerate(prompts)))
        elapsed = time.perf_counter() - t0
    assert all(r.error is None for r in results), [r.error for r in results if r.error]
    return elapsed, sum(r.completion.completion_tokens for r in results)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model")
    ap.add_argument("--parallel", default="1,4")
    ap.add_argument("--records", type=int, default=16)
    ap.add_argument("--gen-tokens", type=int, default=32)
    args = ap.parse_args()

    from chatglm3_cli.engine.model import Model
    from chatglm3_cli.engine.prompt import Message

    if args.model:
        path = Path(args.model)
    else:
        import make_test_model as mtm

        path = mtm.build("6b", mtm.cache_dir())
    model = Model(path, n_ctx=512)
    topics = ["the sea", "a city at night", "mountains", "a library", "rain", "trains", "an old map",
              "the moon", "a garden", "winter", "a market", "bridges", "a lighthouse", "the desert",
              "music", "a kitchen", "clocks", "rivers", "a museum", "birds"]
    prompts = [model.prompt_ids([Message("user", f"Write a short poem about {topics[i % len(topics)]} ({i}).")])
               for i in range(args.records)]
    n_prompt = sum(len(p) for p in prompts)
    stops = set(model.stop_tokens)
    print(f"model {path.name} | {args.records} records, {n_prompt} prompt tokens, up to {args.gen_tokens} "
          f"generated each | threads {model.n_threads}", file=sys.stderr)
    rows = []
    for n in [int(x) for x in args.parallel.split(",")]:
        raw_t, raw_gen = raw_parallel(model, prompts, n, args.gen_tokens, stops, 512)
        our_t, our_gen = ours_parallel(model, prompts, n, args.gen_tokens, 512)
        rows.append((n, raw_t, raw_gen, our_t, our_gen))
        print(f"  N={n}: raw {raw_t:.1f}s ({raw_gen} tok) | ours {our_t:.1f}s ({our_gen} tok)", file=sys.stderr)
    base_raw = (n_prompt + rows[0][2]) / rows[0][1]
    base_ours = (n_prompt + rows[0][4]) / rows[0][3]
    print(f"\n{'N':>3} {'raw tok/s':>10} {'ours tok/s':>11} {'ours gen tok/s':>15} {'raw xN=1':>9} {'ours xN=1':>10} {'ours/raw':>9}")
    for n, raw_t, raw_gen, our_t, our_gen in rows:
        raw_tps = (n_prompt + raw_gen) / raw_t
        our_tps = (n_prompt + our_gen) / our_t
        print(f"{n:>3} {raw_tps:>10.2f} {our_tps:>11.2f} {our_gen / our_t:>15.2f} {raw_tps / base_raw:>9.2f} "
              f"{our_tps / base_ours:>10.2f} {our_tps / raw_tps:>9.3f}")
    model.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
