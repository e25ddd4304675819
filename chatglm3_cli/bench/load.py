"""A competing generation for `chatglm3 bench --load`: another process generating beside us.

``Competitor`` starts ``python -m chatglm3_cli.bench.load MODEL`` (the same model, the same
engine and defaults, like a batch job running while you chat), which generates greedily
forever, 8 tokens at a time (the prompt stays in its KV cache), and prints when each 8 ended.
The bench pauses it (SIGSTOP) for the runs alone and resumes it (SIGCONT) for the runs under
load, so both kinds of run alternate in the same minutes, and counts the tokens that ended
inside each loaded window for the competitor's own speed.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from bisect import bisect_left, bisect_right


class Competitor:
    def __init__(self, model_path: str, *, threads: int | None = None, ready_timeout: float = 600.0) -> None:
        if not hasattr(signal, "SIGSTOP"):
            raise RuntimeError("--load needs a POSIX system (it pauses the competing process)")
        cmd = [sys.executable, "-m", "chatglm3_cli.bench.load", str(model_path)]
        if threads:
            cmd += ["--threads", str(threads)]
        self.stamps: list[tuple[float, int]] = []  # (time a generation ended, its tokens)
        self._ready = threading.Event()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     stdin=subprocess.DEVNULL)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(ready_timeout) or self.proc.poll() is not None:
            self.close()
            raise RuntimeError("the competing generation did not start")
        self.pause()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if line == "ready":
                self._ready.set()
            else:
                try:
                    t, n = line.split()
                    self.stamps.append((float(t), int(n)))
                except ValueError:
                    pass
        self._ready.set()  # ended: wake a waiting constructor

    def pause(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def tokens_per_s(self, start: float, end: float) -> float | None:
        """The competitor's decode speed between two time.time() stamps."""
        stamps = list(self.stamps)
        times = [t for t, _ in stamps]
        inside = stamps[bisect_left(times, start):bisect_right(times, end)]
        n = sum(k for _, k in inside)
        return n / (end - start) if end > start and len(inside) > 1 else None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m chatglm3_cli.bench.load")
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

    from ..engine.model import Model
    from ..engine.prompt import Message
    from ..engine.sampling import SamplingParams

    with Model(args.model, n_ctx=512, n_threads=args.threads) as m:
        prompt = m.prompt_ids([Message("user", "Write a long story about a lighthouse keeper.")])
        params = SamplingParams(temperature=0, max_tokens=8)
        print("ready", flush=True)
        while True:
            r = m.generate(prompt_ids=prompt, params=params).complete()
            print(f"{time.time():.6f} {r.completion_tokens}", flush=True)
            if r.completion_tokens == 0:
                time.sleep(0.01)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
