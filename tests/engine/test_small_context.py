"""A context below llama.cpp's batch size (-c under 512) with prompts of every length around
the limits: an answer or PromptTooLongError, never a GGML_ASSERT that aborts the process."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from chatglm3_cli.cli.exit_codes import ExitCode

CTXS = [16, 17, 32, 100, 255, 256, 257, 300]

SCRIPT = textwrap.dedent("""
    import sys
    from chatglm3_cli.engine.decoder import DecodeRequest, ParallelDecoder
    from chatglm3_cli.engine.model import Model
    from chatglm3_cli.engine.sampling import SamplingParams
    from chatglm3_cli.errors import PromptTooLongError

    path, ctxs = sys.argv[1], [int(c) for c in sys.argv[2].split(",")]
    params = SamplingParams(temperature=0, max_tokens=2)
    for c in ctxs:
        with Model(path, n_ctx=c) as m, ParallelDecoder(m, n_parallel=2, n_ctx=c) as d:
            word = m.tokenize("hello")
            lengths = sorted({n for k in (c, m.n_ctx, 256, 512)
                              for n in range(k - 2, k + 3) if n >= 2})
            for n in lengths:
                ids = (word * n)[:n]
                try:
                    m.reset()
                    comp = m.generate(prompt_ids=ids, params=params).complete()
                    single = "ok" if comp.completion_tokens >= 1 else "empty"
                except PromptTooLongError:
                    single = "too-long"
                r = next(iter(d.run([DecodeRequest("x", prompt_ids=ids, params=params)])))
                parallel = "too-long" if isinstance(r.error, PromptTooLongError) else (
                    "ok" if r.error is None else repr(r.error))
                print(c, m.n_ctx, n, single, parallel, flush=True)
""")


def test_every_prompt_length_around_small_contexts(fixtures, tmp_path):
    p = subprocess.run([sys.executable, "-c", SCRIPT, str(fixtures.path("tiny")), ",".join(map(str, CTXS))],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]  # -6 was SIGABRT (GGML_ASSERT n_tokens <= n_batch)
    rows = [line.split() for line in p.stdout.splitlines()]
    assert {int(r[0]) for r in rows} == set(CTXS)
    for c, n_ctx, n, single, parallel in rows:
        # Fits (with a token left for the answer) exactly when n + 1 <= the context.
        fits_single = int(n) + 1 <= int(n_ctx)
        assert single == ("ok" if fits_single else "too-long"), (c, n_ctx, n, single)
        assert parallel == ("ok" if int(n) + 1 <= int(c) else "too-long"), (c, n, parallel)


def test_run_with_a_tiny_context_answers_or_says_too_long(fixtures):
    # -c 16: llama.cpp makes 256 cells but a batch of 16 tokens. A prompt of 17 to 255 tokens
    # fits the cells (it aborted the process before); 400 words do not.
    def run(words):
        return subprocess.run([sys.executable, "-m", "chatglm3_cli", "run", "-m", str(fixtures.path("tiny")),
                               "-c", "16", "-t", "0", "--max-tokens", "2", "word " * words],
                              capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)

    p = run(40)
    assert p.returncode == 0, p.stderr[-2000:]  # -6 (SIGABRT) before
    p = run(400)
    assert p.returncode == ExitCode.PROMPT_TOO_LONG, p.stderr[-2000:]
    assert p.stderr.startswith("error: the prompt is") and "GGML" not in p.stderr
