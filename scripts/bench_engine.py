#!/usr/bin/env python3
"""Our engine against a raw llama.cpp decode loop, on the same GGUF, side by side in one run.

    python scripts/bench_engine.py                 # the 6B-shaped Q4_0 fixture (built if needed)
    python scripts/bench_engine.py -m model.gguf --prompt-tokens 128 --gen-tokens 64 --reps 5

Both sides evaluate the same prompt token ids from an empty KV cache, then decode greedily
with the same stop tokens. Runs alternate (raw, ours, raw, ours, ...) so that a noisy machine
hurts both alike; medians are reported with min-max, and ours/raw ratios (target >= 0.95).
A benchmark, not a test: these machines are shared and noisy.
"""
from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class RawLoop:
    """The minimal llama.cpp loop: load, batch-decode the prompt, sample greedily, decode."""

    def __init__(self, path: Path, n_ctx: int, n_threads: int, tensors) -> None:
        from chatglm3_cli.engine import backend

        L = self.L = backend.llama()  # the same library and log silencing as ours
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = 999 if L.llama_supports_gpu_offload() else 0
        # Same weight placement as ours: llama.cpp's AMX kernels crash on these shapes.
        self._keep = backend.cpu_weight_placement(mp, tensors) if mp.n_gpu_layers == 0 else None
        self.model = L.llama_model_load_from_file(str(path).encode(), mp)
        assert self.model, "raw llama.cpp could not load the model"
        cp = L.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch = n_ctx, 512, 512
        cp.n_threads = cp.n_threads_batch = n_threads
        cp.no_perf = True
        self.ctx = L.llama_init_from_model(self.model, cp)
        self.batch = L.llama_batch_init(512, 0, 1)

    def _decode(self, toks, pos0) -> None:
        b = self.batch
        for i, t in enumerate(toks):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = t, pos0 + i, 1, 0
            b.seq_id[i][0] = 0
        b.logits[len(toks) - 1] = 1
        b.n_tokens = len(toks)
        assert self.L.llama_decode(self.ctx, b) == 0

    def run(self, prompt: list[int], n_gen: int, stops: set[int]) -> tuple[float, float, int]:
        L = self.L
        L.llama_memory_clear(L.llama_get_memory(self.ctx), True)
        t0 = time.perf_counter()
        for off in range(0, len(prompt), 512):
            self._decode(prompt[off:off + 512], off)
        t1 = time.perf_counter()
        smpl = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        L.llama_sampler_chain_add(smpl, L.llama_sampler_init_greedy())
        pos, n = len(prompt), 0
        while n < n_gen:
            tok = L.llama_sampler_sample(smpl, self.ctx, -1)
            if tok in stops:
                break
            n += 1
            if n == n_gen:
                break
            self._decode([tok], pos)
            pos += 1
        t2 = time.perf_counter()
        L.llama_sampler_free(smpl)
        return t1 - t0, t2 - t1, n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", help="GGUF file (default: the 6B-shaped Q4_0 fixture)")
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--gen-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    from chatglm3_cli.engine import backend
    from chatglm3_cli.engine.model import Model
    from chatglm3_cli.engine.sampling import SamplingParams

    if args.model:
        path = Path(args.model)
    else:
        sys.path.insert(0, str(ROOT / "scripts"))
        import make_test_model as mtm

        print("building/finding the 6B-shaped Q4_0 fixture...", file=sys.stderr)
        path = mtm.build("6b", mtm.cache_dir())
    threads = args.threads or backend.default_threads()
    n_ctx = max(512, args.prompt_tokens + args.gen_tokens + 8)

    t = time.perf_counter()
    ours = Model(path, n_ctx=n_ctx, n_threads=threads)
    load_ours = time.perf_counter() - t
    t = time.perf_counter()
    raw = RawLoop(path, n_ctx, threads, ours.info.tensors)
    load_raw = time.perf_counter() - t

    filler = ours.tokenize("The philosophy of people is a sophisticated subject. 你好，世界！" * 200)
    body = filler[: max(1, args.prompt_tokens - 4)]
    specials = ours._specials
    if specials is not None:
        prompt = [specials.gmask, specials.sop, specials.roles["user"]] + body + [specials.roles["assistant"]]
    else:
        prompt = body
    stops = set(ours.stop_tokens)
    params = SamplingParams(temperature=0, max_tokens=args.gen_tokens)

    rows: dict[str, dict[str, list[float]]] = {"raw": {"prefill": [], "decode": [], "n": []},
                                                "ours": {"prefill": [], "decode": [], "n": []}}
    print(f"model {path.name} | prompt {len(prompt)} tokens | generate {args.gen_tokens} | "
          f"threads {threads} | reps {args.reps} | load: ours {load_ours:.1f}s raw {load_raw:.1f}s",
          file=sys.stderr)
    for rep in range(args.reps):
        p_s, d_s, n = raw.run(prompt, args.gen_tokens, stops)
        rows["raw"]["prefill"].append(len(prompt) / p_s)
        rows["raw"]["decode"].append(n / d_s if d_s > 0 else 0.0)
        rows["raw"]["n"].append(n)
        ours.reset()
        res = ours.generate(prompt_ids=prompt, params=params).complete()
        tm = res.timings
        rows["ours"]["prefill"].append(tm.prompt_tps or 0.0)
        rows["ours"]["decode"].append(tm.generation_tps or 0.0)
        rows["ours"]["n"].append(res.completion_tokens)
        print(f"  rep {rep + 1}: raw prefill {rows['raw']['prefill'][-1]:.2f} decode {rows['raw']['decode'][-1]:.2f} tok/s"
              f" ({n} tok) | ours prefill {rows['ours']['prefill'][-1]:.2f} decode {rows['ours']['decode'][-1]:.2f} tok/s"
              f" ({res.completion_tokens} tok)", file=sys.stderr)

    def fmt(xs: list[float]) -> str:
        return f"{statistics.median(xs):8.2f}  ({min(xs):.2f}-{max(xs):.2f})"

    print(f"\n{'':8}{'prefill tok/s (min-max)':>28}{'decode tok/s (min-max)':>28}")
    for name in ("raw", "ours"):
        print(f"{name:8}{fmt(rows[name]['prefill']):>28}{fmt(rows[name]['decode']):>28}")
    rp = statistics.median(rows["ours"]["prefill"]) / statistics.median(rows["raw"]["prefill"])
    rd = statistics.median(rows["ours"]["decode"]) / statistics.median(rows["raw"]["decode"])
    print(f"{'ratio':8}{rp:>28.3f}{rd:>28.3f}   (ours / raw; target >= 0.95)")
    ours.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
