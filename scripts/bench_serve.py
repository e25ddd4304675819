#!/usr/bin/env python3
"""Benchmark `chatglm3 serve` against llama-cpp-python's own server, side by side, in one run.

Both servers load the same GGUF file with the same threads and per-request context; every
round sends the same prompts with the same max_tokens and temperature 0, streamed, from N
concurrent clients (N = 1, 4, 8 by default). Reported per server and N: aggregate generated
tokens per second (all tokens of the round / its wall time), median time to first token, and
the ratio ours/theirs. llama-cpp-python's server answers one request at a time; ours batches
them in one context.

Neither server is a test dependency: install theirs with `pip install 'llama-cpp-python[server]'`.
It is started as `python -m llama_cpp.server --model FILE --chat_format chatglm3`.

Also shows one greedy answer from each (`--show`), which is where the servers differ in kind:
llama-cpp-python's chatglm3 format does not stop at ChatGLM3's <|user|>, so its turn runs on
into a made-up next turn until max_tokens.

``--conversations K``: instead, K clients hold one conversation each and take turns one after
the other (client 1's turn 1, client 2's turn 1, ..., client 1's turn 2, ...), each turn
resending its whole conversation with a new question. Reported per turn and server: prompt
tokens, tokens taken from a kept prefix (ours reports them in usage), and time to the first
token. A server that keeps only the latest conversation evaluates every turn whole again.
``--ours-root DIR`` runs `chatglm3 serve` from another checkout (an earlier version) instead.

``--gain N``: instead, what N concurrent clients gain over one on our server, against what N
sequences gain over one in the parallel decoder itself (as `batch -p N` runs it, in this
process, while the server idles), on the same prompts and max_tokens: ``--reps`` runs of the
four measurements, alternating (the order flipped every run); the gains are the medians of the
runs, and serve's over batch's is the figure issue #22 asks to be >= 0.95.

Usage:
  python scripts/bench_serve.py --fixture 6b --clients 1,4,8 --max-tokens 32
  python scripts/bench_serve.py --fixture 6b --conversations 2 --turns 3 --max-tokens 16
  python scripts/bench_serve.py --model path/to/chatglm3-6b.Q4_0.gguf --json out.json
  python scripts/bench_serve.py --fixture tiny --clients 1,4 --max-tokens 8 --show scripted
  python scripts/bench_serve.py --fixture 6b --gain 4 --reps 3 --max-tokens 32
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROMPTS = [
    "Explain in two sentences why the sky is blue.",
    "Write a haiku about a mountain lake.",
    "List three uses of a paper clip.",
    "What is the difference between a list and a tuple in Python?",
    "Translate into French: the weather is nice today.",
    "Give me a short tip for learning a new language.",
    "Describe a cat to someone who has never seen one.",
    "Why do leaves change colour in autumn?",
]


def fixture_path(kind: str) -> Path:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_test_model.py"), kind],
                         check=True, capture_output=True, text=True).stdout.strip().splitlines()
    return Path(out[-1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A server process whose output is drained in the background."""

    def __init__(self, cmd: list[str], ready: str, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
        self.match: re.Match[str] | None = None
        self._ready = threading.Event()
        self._pattern = re.compile(ready)
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if self.match is None:
                m = self._pattern.search(line)
                if m:
                    self.match = m
                    self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float) -> re.Match[str]:
        if not self._ready.wait(timeout) or self.match is None:
            self.stop()
            raise RuntimeError("server did not start:\n" + "".join(self.lines[-30:]))
        return self.match

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_ours(model: Path, args: argparse.Namespace, parallel: int) -> tuple[Proc, str]:
    cmd = [sys.executable, "-m", "chatglm3_cli", "serve", "-m", str(model), "--port", "0",
           "--parallel", str(parallel), "--ctx", str(args.ctx), "--queue", "64"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    root = args.ours_root or ROOT
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # `python -m` puts the working directory first on sys.path: run it from that checkout
    p = Proc(cmd, r"listening on (http://\S+)", env, cwd=root)
    return p, p.wait_ready(600).group(1)


def start_theirs(model: Path, args: argparse.Namespace) -> tuple[Proc, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", str(args.ctx), "--chat_format", "chatglm3", "--verbose", "False",
           "--interrupt_requests", "False"]  # else a new request cuts off the one streaming
    if args.threads:
        cmd += ["--n_threads", str(args.threads), "--n_threads_batch", str(args.threads)]
    p = Proc(cmd, r"Uvicorn running on (http://\S+)")
    p.wait_ready(600)
    return p, f"http://127.0.0.1:{port}"


def one_request(client, prompt: str | list[dict], max_tokens: int) -> dict:
    """One streamed greedy answer to a question (or a whole conversation's messages)."""
    t0 = time.perf_counter()
    first = None
    text = []
    usage = None
    finish = None
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    stream = client.chat.completions.create(
        model="m", messages=messages, temperature=0, max_tokens=max_tokens,
        stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            if first is None:
                first = time.perf_counter() - t0
            text.append(chunk.choices[0].delta.content)
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
        if getattr(chunk, "usage", None):
            usage = chunk.usage
    total = time.perf_counter() - t0
    # A server that streams no usage: a cut answer has max_tokens tokens; else count the text's.
    tokens = usage.completion_tokens if usage else (max_tokens if finish == "length" else None)
    details = getattr(usage, "prompt_tokens_details", None)
    return {"ttft_s": first if first is not None else total, "total_s": total, "tokens": tokens,
            "text": "".join(text), "prompt_tokens": usage.prompt_tokens if usage else None,
            "cached_tokens": getattr(details, "cached_tokens", None)}


def measure(url: str, n: int, args: argparse.Namespace, tokenizer_count) -> dict:
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=3600)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n * args.rounds)]
    one_request(client, "warm up", 2)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(lambda p: one_request(client, p, args.max_tokens), prompts))
    wall = time.perf_counter() - t0
    for r in results:  # a server that sends no usage in streams: count the text's tokens
        if r["tokens"] is None:
            r["tokens"] = tokenizer_count(r["text"])
    tokens = sum(r["tokens"] for r in results)
    return {"clients": n, "requests": len(results), "tokens": tokens, "wall_s": round(wall, 3),
            "tok_per_s": round(tokens / wall, 3),
            "ttft_median_s": round(statistics.median(r["ttft_s"] for r in results), 3)}


QUESTIONS = ["Tell me more.", "Give an example.", "Why is that?", "Summarize what you said.",
             "And then?", "What else?"]


def conversations(url: str, args: argparse.Namespace) -> list[dict]:
    """K conversations, their turns interleaved; a row per turn."""
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=3600)
    # a system prompt of ~200 tokens (apps send longer ones), different from the first words
    convs = [[{"role": "system", "content": f"You are assistant number {i}. Topics you know: "
               + " ".join(PROMPTS[i:] + PROMPTS[:i])},
              {"role": "user", "content": PROMPTS[(i + 1) % len(PROMPTS)]}] for i in range(args.conversations)]
    one_request(client, "warm up", 2)
    rows = []
    for turn in range(args.turns):
        for i, conv in enumerate(convs):
            r = one_request(client, conv, args.max_tokens)
            rows.append({"conversation": i + 1, "turn": turn + 1, "prompt_tokens": r["prompt_tokens"],
                         "cached_tokens": r["cached_tokens"], "ttft_s": round(r["ttft_s"], 3),
                         "total_s": round(r["total_s"], 3)})
            conv += [{"role": "assistant", "content": r["text"]},
                     {"role": "user", "content": QUESTIONS[turn % len(QUESTIONS)]}]
    return rows


def show(url: str, max_tokens: int) -> str:
    """One greedy answer, whole."""
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=3600)
    resp = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hello"}],
                                          temperature=0, max_tokens=max_tokens)
    return json.dumps({"content": resp.choices[0].message.content, "finish_reason": resp.choices[0].finish_reason,
                       "completion_tokens": resp.usage.completion_tokens if resp.usage else None},
                      ensure_ascii=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--model", type=Path, help="a GGUF file")
    src.add_argument("--fixture", default="6b", help="a generated test model (default: 6b, ~3.5 GB)")
    ap.add_argument("--clients", default="1,4,8", help="concurrent clients, comma-separated")
    ap.add_argument("--rounds", type=int, default=1, help="requests per client in each measurement")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--ctx", type=int, default=1024, help="context per request (both servers)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--show", default=None, metavar="FIXTURE|PATH",
                    help="also print one greedy answer from each server on this model (e.g. scripted)")
    ap.add_argument("--show-tokens", type=int, default=40, help="max_tokens of that answer")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--conversations", type=int, default=0, metavar="K",
                    help="measure K interleaved conversations instead (see above)")
    ap.add_argument("--turns", type=int, default=3, help="turns per conversation (--conversations)")
    ap.add_argument("--ours-root", type=Path, default=None, metavar="DIR",
                    help="run `chatglm3 serve` from this checkout (an earlier version)")
    ap.add_argument("--only-ours", action="store_true", help="do not start llama-cpp-python's server")
    ap.add_argument("--gain", type=int, default=0, metavar="N",
                    help="serve's N-client gain against the parallel decoder's N-sequence gain")
    ap.add_argument("--reps", type=int, default=3, help="alternating runs (--gain)")
    args = ap.parse_args(argv)
    model = (args.model or fixture_path(args.fixture)).resolve()
    servers = ("ours",) if args.only_ours else ("ours", "llama-cpp-python")
    if args.conversations:
        return conversation_table(model, args, servers)
    if args.gain:
        return gain_table(model, args)
    clients = [int(c) for c in args.clients.split(",")]
    sys.path.insert(0, str(ROOT))
    from chatglm3_cli.engine.model import Model

    with Model(model, n_ctx=64) as m:  # to count tokens of a server that reports none
        def count(text: str) -> int:
            return len(m.tokenize(text))

        out: dict = {"model": str(model), "max_tokens": args.max_tokens, "ctx": args.ctx,
                     "threads": args.threads, "rounds": args.rounds, "rows": []}
        # One server at a time, so that they never compete for the cores.
        for name in servers:
            proc, url = start_ours(model, args, max(clients)) if name == "ours" else start_theirs(model, args)
            try:
                for n in clients:
                    row = {"server": name, **measure(url, n, args, count)}
                    out["rows"].append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
            finally:
                proc.stop()
    if args.show:
        path = Path(args.show) if Path(args.show).exists() else fixture_path(args.show)
        out["show"] = {}
        for name in ("ours", "llama-cpp-python"):
            proc, url = start_ours(path, args, 1) if name == "ours" else start_theirs(path, args)
            try:
                out["show"][name] = json.loads(show(url, args.show_tokens))
            finally:
                proc.stop()
    print_table(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    return 0


def conversation_table(model: Path, args: argparse.Namespace, servers: tuple[str, ...]) -> int:
    out: dict = {"model": str(model), "max_tokens": args.max_tokens, "ctx": args.ctx,
                 "conversations": args.conversations, "turns": args.turns, "rows": []}
    for name in servers:
        proc, url = start_ours(model, args, 4) if name == "ours" else start_theirs(model, args)
        try:
            for row in conversations(url, args):
                out["rows"].append({"server": name, **row})
                print(json.dumps(out["rows"][-1]), file=sys.stderr, flush=True)
        finally:
            proc.stop()
    print(f"model {Path(out['model']).name}, {args.conversations} conversations x {args.turns} turns, "
          f"max_tokens {args.max_tokens}")
    print("| server | conversation | turn | prompt tokens | cached | TTFT s | whole answer s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in out["rows"]:
        print(f"| {r['server']} | {r['conversation']} | {r['turn']} | {r['prompt_tokens'] or '-'} | "
              f"{'-' if r['cached_tokens'] is None else r['cached_tokens']} | {r['ttft_s']:.2f} | {r['total_s']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    return 0


def decoder_run(m, n: int, args: argparse.Namespace) -> float:
    """Generated tokens/s of the parallel decoder (what `batch -p n` runs) on measure()'s prompts."""
    from chatglm3_cli.engine.decoder import DecodeRequest, ParallelDecoder
    from chatglm3_cli.engine.prompt import Message
    from chatglm3_cli.engine.sampling import SamplingParams

    greedy = SamplingParams(temperature=0, max_tokens=args.max_tokens)
    reqs = [DecodeRequest(str(i), messages=[Message("user", PROMPTS[i % len(PROMPTS)])], params=greedy)
            for i in range(n * args.rounds)]
    with ParallelDecoder(m, n_parallel=n, n_ctx=args.ctx) as dec:
        t0 = time.perf_counter()
        results = list(dec.run(reqs))
        wall = time.perf_counter() - t0
    return sum(r.completion.completion_tokens for r in results if r.completion) / wall


def gain_table(model: Path, args: argparse.Namespace) -> int:
    sys.path.insert(0, str(ROOT))
    from chatglm3_cli.engine.model import Model

    n = args.gain
    runs: list[dict] = []
    proc, url = start_ours(model, args, n)
    try:
        with Model(model, n_threads=args.threads, chat_context=False) as m:
            for rep in range(args.reps):
                order = [("serve", 1), ("serve", n), ("batch", 1), ("batch", n)]
                if rep % 2:
                    order.reverse()
                tps = {}
                for mode, k in order:
                    tps[mode, k] = (measure(url, k, args, lambda text: len(m.tokenize(text)))["tok_per_s"]
                                    if mode == "serve" else decoder_run(m, k, args))
                row = {"run": rep + 1, **{f"{mode}_{k}_tok_per_s": round(v, 3) for (mode, k), v in tps.items()},
                       "serve_gain": tps["serve", n] / tps["serve", 1], "batch_gain": tps["batch", n] / tps["batch", 1]}
                runs.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    finally:
        proc.stop()
    serve_gain = statistics.median(r["serve_gain"] for r in runs)
    batch_gain = statistics.median(r["batch_gain"] for r in runs)
    print(f"model {model.name}, {n} clients / sequences against 1, {args.rounds} request(s) each, "
          f"max_tokens {args.max_tokens}, {args.reps} alternating runs (medians)")
    print(f"serve gain {serve_gain:.3f}x, batch gain {batch_gain:.3f}x, serve/batch {serve_gain / batch_gain:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"model": str(model), "gain": n, "runs": runs, "serve_gain": serve_gain,
                                         "batch_gain": batch_gain, "serve_over_batch": serve_gain / batch_gain},
                                        indent=2) + "\n")
    return 0


def print_table(out: dict) -> None:
    rows = {(r["server"], r["clients"]): r for r in out["rows"]}
    print(f"model {out['model']}, max_tokens {out['max_tokens']}, ctx {out['ctx']}")
    print("| clients | ours tok/s | llama-cpp-python tok/s | ratio | ours median TTFT s | theirs median TTFT s |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in sorted({r["clients"] for r in out["rows"]}):
        a, b = rows.get(("ours", n)), rows.get(("llama-cpp-python", n))
        if not a or not b:
            continue
        ratio = a["tok_per_s"] / b["tok_per_s"] if b["tok_per_s"] else float("nan")
        print(f"| {n} | {a['tok_per_s']:.2f} | {b['tok_per_s']:.2f} | {ratio:.2f}x | "
              f"{a['ttft_median_s']:.3f} | {b['ttft_median_s']:.3f} |")
    for name, shown in (out.get("show") or {}).items():
        print(f"{name}: {json.dumps(shown, ensure_ascii=False)}")


if __name__ == "__main__":
    sys.exit(main())
