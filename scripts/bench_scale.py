#!/usr/bin/env python3
"""records/s of one `chatglm3 batch` job: locally, and through Ray with 1 and 2 workers.

    python scripts/bench_scale.py                          # tiny fixture, 96 records, 2 rounds
    python scripts/bench_scale.py --fixture 6b --records 16 --tokens 16

Each configuration runs the same generated job as its own `chatglm3 batch` process (the
`--ray` ones start a private local cluster). The script watches the results file: "steady"
records/s counts from the first result line to the last (model loaded, cluster up), "wall"
is the whole command. Needs the `ray` extra. Not a test: run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

CONFIGS = {
    "local": [],
    "ray-1x2": ["--ray", "--workers", "1", "--worker-cpus", "2"],
    "ray-2x1": ["--ray", "--workers", "2", "--worker-cpus", "1"],
}


def _lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def run_one(model: Path, jobs: Path, out: Path, extra: list[str], parallel: int, threads: int) -> dict:
    out.unlink(missing_ok=True)
    for side in out.parent.glob(out.name + ".*"):
        side.unlink()
    cmd = [sys.executable, "-m", "chatglm3_cli", "batch", str(jobs), "-m", str(model), "-o", str(out),
           "-p", str(parallel), *extra]
    if not extra:
        cmd += ["--threads", str(threads)]
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = None
    seen = 0
    while p.poll() is None:
        n = _lines(out)
        if n and first is None:
            first, seen = time.perf_counter(), n
        time.sleep(0.05)
    end = time.perf_counter()
    err = p.stderr.read() if p.stderr else ""
    total = _lines(out)
    row = {"rc": p.returncode, "records": total, "wall_s": end - t0}
    if p.returncode != 0:
        row["error"] = err.strip().splitlines()[-1:] or [""]
        return row
    if first is not None and total > seen:
        row["steady_records_per_s"] = (total - seen) / (end - first)
    row["records_per_s_wall"] = total / (end - t0)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixture", default="tiny")
    ap.add_argument("--records", type=int, default=96)
    ap.add_argument("--tokens", type=int, default=16, help="max_tokens of each record")
    ap.add_argument("--parallel", type=int, default=4, help="sequences in flight per worker")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    import make_test_model as mtm

    model = mtm.build(args.fixture, mtm.cache_dir())
    threads = min(2, os.cpu_count() or 1)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        jobs = Path(d) / "jobs.jsonl"
        with open(jobs, "w") as f:
            for i in range(args.records):
                f.write(json.dumps({"id": f"r{i:04d}", "task": "generate", "max_tokens": args.tokens,
                                    "temperature": 0, "prompt": f"Write about item number {i}."}) + "\n")
        for rnd in range(args.rounds):
            for name in args.configs.split(","):
                load = os.getloadavg()[0]
                r = run_one(model, jobs, Path(d) / f"{name}.jsonl", CONFIGS[name], args.parallel, threads)
                r.update(config=name, round=rnd + 1, load_before=round(load, 2))
                rows.append(r)
                print(json.dumps(r), flush=True)
    print(f"\n{args.records} records of at most {args.tokens} tokens, fixture {model.name}, "
          f"--parallel {args.parallel} per worker")
    print("| run | round | steady records/s | wall | records/s (wall) | load avg before |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        steady = f"{r['steady_records_per_s']:.2f}" if "steady_records_per_s" in r else "-"
        wall = f"{r['wall_s']:.1f} s" if r["rc"] == 0 else f"failed: {r.get('error')}"
        rw = f"{r['records_per_s_wall']:.2f}" if "records_per_s_wall" in r else "-"
        print(f"| {r['config']} | {r['round']} | {steady} | {wall} | {rw} | {r['load_before']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
