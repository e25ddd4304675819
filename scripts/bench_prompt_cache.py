#!/usr/bin/env python3
"""The prompt cache on disk, measured in real processes: what a later process gains.

    python scripts/bench_prompt_cache.py --model FILE.gguf                 # defaults: 400 / 2,000 tokens
    python scripts/bench_prompt_cache.py --model FILE.gguf --doc-tokens 400 --conv-tokens 2000 --reps 3

1. `run -f doc.txt QUESTION` (the real command, one process per run): the first run with an
   empty cache, then another question on the same document with the cache (warm) and without it
   (CHATGLM3_PROMPT_CACHE=0, off), the two alternated; time to the first token as `--json`
   reports it (from the start of the prompt, a restore included) and the process's wall time.
2. `chat --continue` of a long conversation: a process resumes a saved conversation and asks a
   new question, with the conversation saved by an earlier process (warm) or not (recompute),
   alternated; time to the first token.
3. The restore cost per 1,000 tokens (read, checksum, llama_state_seq_set_data) and the bytes
   per token on disk, against the KV cache's own size per token (from the file's shapes).

Not a test: figures from a busy machine are noise. Each process loads the model (page cache
warm after the first), so the first-token times, not the wall times, are the comparison.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def kv_bytes_per_token(model: Path, cache_type: str = "f16") -> float:
    """2 (K and V) x layers x KV heads x head size x bytes per element, from the GGUF shapes."""
    from chatglm3_cli.engine.gguf_file import read_gguf
    from chatglm3_cli.engine.llama.placement import CACHE_TYPES

    info = read_gguf(model)
    arch = info.architecture
    layers = int(info.get(f"{arch}.block_count"))
    heads = int(info.get(f"{arch}.attention.head_count"))
    kv_heads = int(info.get(f"{arch}.attention.head_count_kv") or heads)
    head = int(info.get(f"{arch}.embedding_length")) // heads
    return 2 * layers * kv_heads * head * CACHE_TYPES[cache_type][1]


def make_counter(model: Path):
    """A function giving the token count of a text (ChatGLM3's own tokenizer; else ~4 chars each)."""
    from chatglm3_cli.engine.gguf_file import read_gguf
    from chatglm3_cli.engine.model import CHATGLM3, detect_family
    from chatglm3_cli.engine.tokenizer import SentencePieceTokenizer

    info = read_gguf(model)
    if detect_family(info)[0] == CHATGLM3:
        tok = SentencePieceTokenizer.from_gguf(info)
        return lambda text: len(tok.encode(text))
    return lambda text: len(text) // 4


def text_of(tokens: int, count=lambda text: len(text) // 4, offset: int = 0) -> str:
    """About ``tokens`` tokens of the corpus (English and Chinese), from line ``offset`` on."""
    lines = (ROOT / "scripts" / "corpus.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    out, i = "", offset
    while count(out) < tokens:
        out += lines[i % len(lines)]
        i += 1
    return out


def child_env(cache_dir: Path, data_dir: Path, cache: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.update(CHATGLM3_CACHE_DIR=str(cache_dir), CHATGLM3_DATA_DIR=str(data_dir),
               CHATGLM3_PROMPT_CACHE="1" if cache else "0", PYTHONPATH=str(ROOT))
    return env


def run_cli(model: Path, doc: Path, question: str, env: dict[str, str], threads: int, ctx: int) -> dict:
    cmd = [sys.executable, "-m", "chatglm3_cli", "run", "-m", str(model), "-f", str(doc), question,
           "--json", "-t", "0", "--max-tokens", "1", "--threads", str(threads), "--ctx", str(ctx)]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=3600)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"run failed ({p.returncode}): {p.stderr.strip()}")
    out = json.loads(p.stdout)
    return {"ttft_ms": out["timings"]["first_token_ms"], "wall_s": wall,
            "cached": out["usage"]["cached_tokens"], "prompt": out["usage"]["prompt_tokens"]}


CHILD = r"""
import json, sys
from chatglm3_cli.chat.session import ChatSession
from chatglm3_cli.engine import promptcache
from chatglm3_cli.engine.model import Model
from chatglm3_cli.engine.prompt import Message
from chatglm3_cli.engine.sampling import SamplingParams
model, conv, question, threads, ctx = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
with Model(model, n_ctx=ctx, n_threads=threads) as m:
    pc = promptcache.attach(m)
    s = ChatSession(m, params=SamplingParams(temperature=0, max_tokens=1))
    s.load([Message.from_dict(d) for d in json.load(open(conv))])
    turn = s.ask(question)
    for _ in turn:
        pass
    r = turn.result
    print(json.dumps({"ttft_ms": r.timings.first_token_ms, "cached": r.cached_tokens, "prompt": r.prompt_tokens,
                      "restored": pc.restored if pc else 0, "restore_ms": pc.restore_ms if pc else 0.0}))
"""


def run_chat(model: Path, conv: Path, question: str, env: dict[str, str], threads: int, ctx: int) -> dict:
    """What `chat --continue` does, in a process of its own: load the saved conversation, ask."""
    p = subprocess.run([sys.executable, "-c", CHILD, str(model), str(conv), question, str(threads), str(ctx)],
                       capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=3600)
    if p.returncode != 0:
        raise SystemExit(f"chat child failed ({p.returncode}): {p.stderr.strip()}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="a GGUF file (the 6B-shaped one for the figures)")
    ap.add_argument("--doc-tokens", type=int, default=400, help="about how long the document of `run -f` is")
    ap.add_argument("--conv-tokens", type=int, default=2000, help="about how long the resumed conversation is")
    ap.add_argument("--reps", type=int, default=3, help="alternated rounds of each comparison")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args()

    from chatglm3_cli.engine import promptcache

    work = Path(tempfile.mkdtemp(prefix="bench-pcache-"))
    doc = work / "doc.txt"
    count = make_counter(args.model)
    doc.write_text(text_of(args.doc_tokens, count), encoding="utf-8")
    data = work / "data"

    # 1. run -f: first run (empty cache), then warm and off alternated, a fresh cache each round
    first, warm, off = [], [], []
    for rep in range(args.reps):
        cache = work / f"cache-run-{rep}"
        env_on, env_off = child_env(cache, data, True), child_env(cache, data, False)
        first.append(run_cli(args.model, doc, "What is this text about?", env_on, args.threads, args.ctx))
        pair = [("warm", env_on), ("off", env_off)]
        for mode, env in (pair if rep % 2 == 0 else pair[::-1]):
            row = run_cli(args.model, doc, f"Who is it for? ({rep})", env, args.threads, args.ctx)
            (warm if mode == "warm" else off).append(row)
    run_entries = promptcache.list_entries(work / "cache-run-0" / "prompts")

    # 2. a resumed conversation: saved by an earlier process (warm) or not (recompute), alternated
    conv = work / "conv.json"
    turns, per_turn = [], max(40, args.conv_tokens // 10)
    for i in range(10):  # ten exchanges; each message about half a turn's tokens
        turns.append({"role": "user", "content": f"Part {i}: " + text_of(per_turn // 2 - 4, count, 3 * i)})
        turns.append({"role": "assistant", "content": text_of(per_turn // 2 - 4, count, 3 * i + 1)})
    conv.write_text(json.dumps(turns, ensure_ascii=False), encoding="utf-8")
    resumed, recomputed = [], []
    for rep in range(args.reps):
        cache = work / f"cache-chat-{rep}"
        env_on, env_off = child_env(cache, data, True), child_env(cache, data, False)
        run_chat(args.model, conv, "Sum it up.", env_on, args.threads, args.ctx)  # the earlier process
        pair = [("warm", env_on), ("off", env_off)]
        for mode, env in (pair if rep % 2 == 0 else pair[::-1]):
            row = run_chat(args.model, conv, f"And what comes next? ({rep})", env, args.threads, args.ctx)
            (resumed if mode == "warm" else recomputed).append(row)
    chat_entries = promptcache.list_entries(work / "cache-chat-0" / "prompts")

    entries = [e for e in run_entries + chat_entries if e.tokens]
    disk_per_token = sum(e.bytes for e in entries) / max(1, sum(e.tokens for e in entries))
    restores = [r for r in resumed if r["restored"]]
    restore_per_1k = statistics.median(r["restore_ms"] / r["restored"] * 1000 for r in restores) if restores else None
    figures = {
        "model": args.model.name, "threads": args.threads, "reps": args.reps,
        "run": {"prompt_tokens": first[0]["prompt"], "cached_tokens_warm": warm[0]["cached"],
                "ttft_ms_first": median(first, "ttft_ms"), "ttft_ms_warm": median(warm, "ttft_ms"),
                "ttft_ms_off": median(off, "ttft_ms"), "wall_s_warm": median(warm, "wall_s"),
                "wall_s_off": median(off, "wall_s"),
                "warm_over_off": median(warm, "ttft_ms") / median(off, "ttft_ms")},
        "chat_continue": {"prompt_tokens": resumed[0]["prompt"], "restored_tokens": resumed[0]["restored"],
                          "ttft_ms_resumed": median(resumed, "ttft_ms"),
                          "ttft_ms_recomputed": median(recomputed, "ttft_ms"),
                          "resumed_over_recomputed": median(resumed, "ttft_ms") / median(recomputed, "ttft_ms")},
        "restore_ms_per_1000_tokens": restore_per_1k,
        "disk_bytes_per_token": disk_per_token,
        "kv_bytes_per_token_f16": kv_bytes_per_token(args.model),
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return 0
    r, c = figures["run"], figures["chat_continue"]
    print(f"model {figures['model']}, {args.threads} threads, median of {args.reps} alternated rounds\n")
    print("| measure | with the cache | without | ratio |\n| --- | --- | --- | --- |")
    print(f"| `run -f` ({r['prompt_tokens']} prompt tokens, {r['cached_tokens_warm']} restored): first token | "
          f"{r['ttft_ms_warm']:.0f} ms | {r['ttft_ms_off']:.0f} ms (first run: {r['ttft_ms_first']:.0f} ms) | "
          f"{r['warm_over_off']:.2f} |")
    print(f"| `chat --continue` ({c['prompt_tokens']} prompt tokens, {c['restored_tokens']} restored): first token | "
          f"{c['ttft_ms_resumed']:.0f} ms | {c['ttft_ms_recomputed']:.0f} ms | {c['resumed_over_recomputed']:.2f} |")
    rp = figures["restore_ms_per_1000_tokens"]
    print(f"\nrestore: {rp:.1f} ms per 1,000 tokens" if rp is not None else "\nrestore: none happened")
    print(f"disk: {disk_per_token / 1024:.1f} KiB per token (the f16 KV cache: "
          f"{figures['kv_bytes_per_token_f16'] / 1024:.1f} KiB per token)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
