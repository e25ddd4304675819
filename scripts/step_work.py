#!/usr/bin/env python3
"""What each decode step evaluates, ours against raw llama.cpp: independent of machine load.

Runs `chatglm3 bench`'s parallel workload (records that share no prompt prefix, greedy, up to
--gen tokens each) through the ParallelDecoder and through bench's raw llama.cpp loop at each
--parallel N, and records from llama.cpp's own graphs (a ggml eval callback on the first
layer's KQ node, whose shape is [n_kv, rows, heads]) what every decode computed: the rows, the
KV cells attention ran over (n_kv) and the number of decode calls. Timings vary with load;
these counts do not, so they show where ours does more work than raw.

Usage: python scripts/step_work.py [MODEL.gguf] [--parallel 1,2,4] [--records 8] [--gen 64]
(default model: the tiny-q4_0 fixture).
"""
from __future__ import annotations

import argparse
import ctypes
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@dataclass
class Work:
    """The graphs one run computed: (rows, n_kv) of each."""

    graphs: list[tuple[int, int]] = field(default_factory=list)
    attended: int = 0  # of rows x n_kv, the cells the mask lets a row see (its own sequence's)

    def summary(self) -> dict[str, float]:
        rows = sum(r for r, _ in self.graphs)
        return {
            "graphs": len(self.graphs),
            "rows": rows,
            "mean_n_kv": sum(r * k for r, k in self.graphs) / max(1, rows),  # per row
            # attention work: each row's scores over n_kv cells (per head and layer)
            "rows_x_cells": sum(r * k for r, k in self.graphs),
            "attended": self.attended,
        }


class Observer:
    """A ggml eval callback on every context made while it is installed."""

    def __init__(self) -> None:
        from chatglm3_cli.engine.llama import runtime

        L = self.L = runtime.llama()
        lib = ctypes.CDLL(os.path.join(os.path.dirname(L.__file__), "lib", "libggml-base.so"))
        lib.ggml_get_name.restype = ctypes.c_char_p
        lib.ggml_get_name.argtypes = [ctypes.c_void_p]
        self.work = Work()
        self.t0 = time.thread_time()

        ptrs = ctypes.c_void_p * 10
        int64s = ctypes.c_int64 * 4
        self.flash: set[bool] = set()

        def ne(t: int) -> tuple[int, ...]:  # ggml_tensor: type, buffer, then ne[4]
            return tuple(int(x) for x in int64s.from_address(t + 16))

        def src(t: int, i: int) -> int:  # ... nb[4], op, op_params[16], flags, then src[10]
            return ptrs.from_address(t + 152)[i] or 0

        def attended(mask: int, rows: int) -> int:
            """Cells not masked out (-inf) in the first ``rows`` rows of a KQ mask (f32 or f16)."""
            import numpy as np

            n_kv = ne(mask)[0]
            nb1 = ctypes.c_size_t.from_address(mask + 56).value
            data = ctypes.c_void_p.from_address(mask + 248).value
            f16 = ctypes.c_int32.from_address(mask).value == 1
            buf = (ctypes.c_char * (nb1 * rows)).from_address(data)
            arr = np.frombuffer(buf, dtype=np.float16 if f16 else np.float32).reshape(rows, -1)[:, :n_kv]
            return int(np.isfinite(arr).sum())

        @L.ggml_backend_sched_eval_callback
        def cb(t: int, ask: bool, _data: object) -> bool:
            if ask and lib.ggml_get_name(t) == b"kqv_out-0":
                # [n_embd, rows]; its source is flash attention (q, k, v, mask: k's ne[1] is
                # n_kv) or the KQV product (the scores' source kq is [n_kv, rows, heads]).
                rows, a = ne(t)[1], src(t, 0)
                fa = a and src(a, 3) and lib.ggml_get_name(src(a, 3)) == b"attn_inp_kq_mask"
                if fa:
                    n_kv = ne(src(a, 1))[1]
                    self.work.attended += attended(src(a, 3), rows)
                else:
                    kq = self._last_kq
                    n_kv = kq[0] if kq else 0
                    self.work.attended += attended(self._last_mask, rows) if self._last_mask else 0
                self.flash.add(bool(fa))
                self.work.graphs.append((rows, n_kv))
            elif ask and lib.ggml_get_name(t) == b"kq-0":
                self._last_kq = ne(t)
            elif ask and lib.ggml_get_name(t) == b"kq_soft_max-0":
                self._last_mask = src(t, 1)
            return False  # observe only: nothing is copied, the graph runs in one piece

        self._last_kq: tuple[int, ...] | None = None
        self._last_mask = 0
        self._cb = cb
        self._orig = L.llama_context_default_params
        self.flash_attn_type: int | None = None  # for raw's contexts (ours read CHATGLM3_FLASH_ATTN)

        def params():  # type: ignore[no-untyped-def]
            p = self._orig()
            p.cb_eval = self._cb
            if self.flash_attn_type is not None:
                p.flash_attn_type = self.flash_attn_type
            return p

        L.llama_context_default_params = params
        # CPU seconds of this thread inside llama_decode and in all (with --threads 1 llama.cpp
        # computes on this thread: CPU time, unlike wall time, does not grow with others' load)
        self.decode_cpu = 0.0
        decode = L.llama_decode

        def timed_decode(ctx, batch):  # type: ignore[no-untyped-def]
            t = time.thread_time()
            try:
                return decode(ctx, batch)
            finally:
                self.decode_cpu += time.thread_time() - t

        L.llama_decode = timed_decode

    def take(self) -> Work:
        out, self.work = self.work, Work()
        self.decode_cpu = 0.0
        self.t0 = time.thread_time()
        return out

    def cpu(self) -> tuple[float, float]:
        """(CPU s in llama_decode, CPU s outside it) since the last take()."""
        total = time.thread_time() - self.t0
        return self.decode_cpu, total - self.decode_cpu


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?")
    ap.add_argument("--parallel", default="1,2,4")
    ap.add_argument("--records", type=int, default=8)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--flash-attn", default="default,off",
                    help="comma-separated: default (each side its own: raw llama.cpp's auto, ours "
                         "CHATGLM3_FLASH_ATTN's rule), off, on")
    args = ap.parse_args(argv)
    obs = Observer()
    from chatglm3_cli.bench.raw import RawContext
    from chatglm3_cli.engine.decoder import DecodeRequest, ParallelDecoder
    from chatglm3_cli.engine.model import Model
    from chatglm3_cli.engine.prompt import Message
    from chatglm3_cli.engine.sampling import SamplingParams

    path = args.model
    if path is None:
        sys.path.insert(0, str(ROOT / "scripts"))
        import make_test_model

        path = str(make_test_model.build("tiny-q4_0", make_test_model.cache_dir()))
    greedy = SamplingParams(temperature=0, max_tokens=args.gen)
    user_fa = os.environ.get("CHATGLM3_FLASH_ATTN")
    with Model(path, n_threads=args.threads, chat_context=False) as model:
        topics = ["the sea", "a city at night", "mountains", "a library", "rain", "trains", "an old map"]
        prompts = [model.prompt_ids([Message("user", f"{i}. {topics[i % len(topics)].capitalize()}: "
                                                     "write a short poem about it.")])
                   for i in range(args.records)]
        stops = set(model.stop_tokens)
        per_seq = max(len(p) for p in prompts) + args.gen + 8
        print(f"{path}: {args.records} records, prompts {sum(len(p) for p in prompts)} tokens, "
              f"up to {args.gen} generated each; per decode call, from llama.cpp's graphs:")
        print(f"{'fa':11} {'N':>3} {'side':5} {'calls':>6} {'rows':>6} {'n_kv/row':>9} {'rows*n_kv':>10} "
              f"{'unmasked':>9} {'generated':>10} {'padded steps':>13} {'decode cpu':>9} {'py ms/call':>12}")
        for mode in args.flash_attn.split(","):
            if mode == "default":
                obs.flash_attn_type = None
                if user_fa is None:
                    os.environ.pop("CHATGLM3_FLASH_ATTN", None)
                else:
                    os.environ["CHATGLM3_FLASH_ATTN"] = user_fa
            else:
                obs.flash_attn_type = 1 if mode == "on" else 0  # LLAMA_FLASH_ATTN_TYPE_ENABLED / _DISABLED
                os.environ["CHATGLM3_FLASH_ATTN"] = mode
            for n in [int(x) for x in args.parallel.split(",")]:
                raw = RawContext(model.llama.ptr, n_ctx=per_seq * n, n_threads=model.n_threads, n_seq=n)
                obs.take()
                obs.flash.clear()
                try:
                    _, raw_gen = raw.parallel(prompts, n, args.gen, stops)
                finally:
                    raw.close()
                raw_cpu = obs.cpu()
                rw, raw_fa = obs.take().summary(), sorted(obs.flash)
                obs.flash.clear()
                sides = [("raw", rw, raw_gen, raw_fa, "", raw_cpu)]
                # ours as batch runs it, and as serve does (retain: each finished conversation is
                # kept as a shared prefix for its next turn, in cells every step attends over)
                for name, retain in (("ours", False), ("serve", True)):
                    with ParallelDecoder(model, n_parallel=n, n_ctx=per_seq) as dec:
                        obs.take()
                        obs.flash.clear()
                        results = list(dec.run((DecodeRequest(str(i), prompt_ids=p, params=greedy)
                                                for i, p in enumerate(prompts)), retain=retain))
                        our_cpu = obs.cpu()
                        ow, our_fa = obs.take().summary(), sorted(obs.flash)
                        padded = dec.stats.padded_steps
                    our_gen = sum(r.completion.completion_tokens for r in results if r.completion)
                    sides.append((name, ow, our_gen, our_fa, str(padded), our_cpu))
                for side, w, g, fa, padded, cpu in sides:
                    label = f"{mode}:{'on' if fa == [True] else 'off' if fa == [False] else fa}"
                    print(f"{label:11} {n:>3} {side:5} {w['graphs']:>6} {w['rows']:>6} {w['mean_n_kv']:>9.0f} "
                          f"{w['rows_x_cells']:>10} {w['attended']:>9} {g:>10} {padded:>13}"
                          f" {cpu[0]:>9.2f} {cpu[1] * 1000 / max(1, w['graphs']):>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
