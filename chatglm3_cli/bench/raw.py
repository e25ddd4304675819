"""The reference: minimal llama.cpp loops written straight against the low-level API.

They share nothing with our engine but the loaded model and llama.cpp itself, so the ratio
ours/raw shows what the tool costs on top of llama.cpp.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

from ..engine.llama import runtime


class RawContext:
    def __init__(self, model_ptr: Any, *, n_ctx: int, n_threads: int, n_seq: int = 1) -> None:
        L = self.L = runtime.llama()
        cp = L.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch = n_ctx, 512, 512
        cp.n_seq_max = n_seq
        cp.kv_unified = n_seq > 1
        cp.n_threads = cp.n_threads_batch = n_threads
        cp.no_perf = True
        self.ctx = L.llama_init_from_model(model_ptr, cp)
        if not self.ctx:
            raise RuntimeError("raw llama.cpp could not create a context")
        self.batch = L.llama_batch_init(512, 0, n_seq)
        self.mem = L.llama_get_memory(self.ctx)

    def close(self) -> None:
        self.L.llama_batch_free(self.batch)
        self.L.llama_free(self.ctx)

    def _greedy(self) -> Any:
        L = self.L
        s = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        L.llama_sampler_chain_add(s, L.llama_sampler_init_greedy())
        return s

    def single(self, prompt: Sequence[int], n_gen: int, stops: set[int]) -> tuple[float, float, float, int]:
        """One sequence: (prefill s, time to first token s, decode s, tokens generated)."""
        L, b = self.L, self.batch
        L.llama_memory_clear(self.mem, True)
        t0 = time.perf_counter()
        for off in range(0, len(prompt), 512):
            chunk = prompt[off:off + 512]
            for i, t in enumerate(chunk):
                b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = t, off + i, 1, 0
                b.seq_id[i][0] = 0
            b.logits[len(chunk) - 1] = 1
            b.n_tokens = len(chunk)
            assert L.llama_decode(self.ctx, b) == 0
        t1 = time.perf_counter()
        smpl = self._greedy()
        pos, n, ttft = len(prompt), 0, 0.0
        while n < n_gen:
            tok = L.llama_sampler_sample(smpl, self.ctx, -1)
            if n == 0:
                ttft = time.perf_counter() - t0
            if tok in stops:
                break
            n += 1
            if n == n_gen:
                break
            b.token[0], b.pos[0], b.n_seq_id[0], b.logits[0] = tok, pos, 1, 1
            b.seq_id[0][0] = 0
            b.n_tokens = 1
            assert L.llama_decode(self.ctx, b) == 0
            pos += 1
        t2 = time.perf_counter()
        L.llama_sampler_free(smpl)
        return t1 - t0, ttft, t2 - t1, n

    def parallel(self, prompts: Sequence[Sequence[int]], n_par: int, n_gen: int, stops: set[int]) -> tuple[float, int]:
        """Continuous batching over n_par sequences: (wall s, tokens generated)."""
        L, b = self.L, self.batch
        L.llama_memory_clear(self.mem, True)
        todo = list(range(len(prompts)))
        live: dict[int, dict[str, Any]] = {}
        free = list(range(n_par))
        generated = 0
        t0 = time.perf_counter()
        while todo or live:
            while free and todo:
                seq = free.pop()
                live[seq] = {"pending": list(prompts[todo.pop(0)]), "pos": 0, "next": None, "n": 0,
                             "smpl": self._greedy(), "taken": 0}
            n = 0
            rows: dict[int, int] = {}
            for seq, s in live.items():
                if s["next"] is not None:
                    b.token[n], b.pos[n], b.n_seq_id[n], b.logits[n] = s["next"], s["pos"], 1, 1
                    b.seq_id[n][0] = seq
                    rows[seq] = n
                    n += 1
            for seq, s in live.items():
                if s["next"] is None and s["pending"] and n < 512:
                    take = s["pending"][: 512 - n]
                    for j, t in enumerate(take):
                        b.token[n], b.pos[n], b.n_seq_id[n], b.logits[n] = t, s["pos"] + j, 1, 0
                        b.seq_id[n][0] = seq
                        n += 1
                    if len(take) == len(s["pending"]):
                        b.logits[n - 1] = 1
                        rows[seq] = n - 1
                    s["taken"] = len(take)
            b.n_tokens = n
            assert L.llama_decode(self.ctx, b) == 0
            done = []
            for seq, s in live.items():
                if s["next"] is not None:
                    s["pos"] += 1
                    s["next"] = None
                elif s["taken"]:
                    s["pos"] += s["taken"]
                    s["pending"] = s["pending"][s["taken"]:]
                    s["taken"] = 0
                if seq in rows:
                    tok = L.llama_sampler_sample(s["smpl"], self.ctx, rows[seq])
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
                L.llama_memory_seq_rm(self.mem, seq, -1, -1)
                del live[seq]
                free.append(seq)
        return time.perf_counter() - t0, generated
