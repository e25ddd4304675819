"""A/B comparisons of single-stream decode: with a grammar or without, speculation on or off.

Each pair runs alternately (A, B, A, B...) so that a noisy machine hurts both alike.
"""
from __future__ import annotations

from typing import Any, Callable

from .measure import decode_tps
from .report import GRAMMAR_TARGET, SPEC_TARGET_COPY, SPEC_TARGET_OTHER, RatioRow, Spread

# Workloads for speculation: answers that copy their input, and one that does not.
SPEC_WORKLOADS = {
    "rewrite": ("Rewrite this paragraph in a more formal tone, keeping its facts:\n\n"
                "The new library opened on Monday. It has three floors, a cafe and a garden on the roof. "
                "Children can borrow up to ten books at a time, and adults up to twenty. The library is "
                "open from nine in the morning to eight in the evening, every day except Sunday."),
    "extract": ("Extract every person as JSON objects with name, role and city:\n\n"
                "Maria Lopez, the head engineer, moved from Madrid to Berlin. Tom Becker, a designer in "
                "Hamburg, works with her. Anna Schmidt, the project manager, lives in Munich."),
    "translate-markdown": ("Translate this Markdown into French. Keep code blocks unchanged.\n\n"
                           "## Install\n\nRun the installer, then check it:\n\n```bash\npip install "
                           "chatglm3-cli\nchatglm3 --version\nchatglm3 run -m chatglm3-6b \"Hello\"\n```\n\n"
                           "## Use\n\nStart a chat with `chatglm3 chat`."),
    "free (no copying)": "Write a short story about a lighthouse keeper who finds a message in a bottle.",
}

GRAMMARS = {
    "classify": 'root ::= "\\n" " "? ("positive" | "negative" | "neutral" | "mixed")',
    "text": 'root ::= "\\n" [a-zA-Z ,.]+',
    "extract (JSON)": None,  # from a schema, built at run time
}
EXTRACT_SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "city": {"type": "string"},
                                                   "age": {"type": "integer"}}, "required": ["name", "city"]}



def grammar_ab(model: Any, prompt: list[int], gen_tokens: int, reps: int,
                progress: Callable[[str], None]) -> list[RatioRow]:
    """Single-stream decode with each grammar against the same prompt without one, alternating.
    On random weights the model's first choice is nearly always rejected, so this measures the
    resampling path too."""
    from ..engine.decoder import DecodeRequest, ParallelDecoder
    from ..engine.grammar import schema_grammar
    from ..engine.sampling import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=gen_tokens)
    rows = []
    with ParallelDecoder(model, n_parallel=1, n_ctx=len(prompt) + gen_tokens + 8, speculate=0) as dec:
        def one(grammar: str | None) -> float | None:
            r = next(iter(dec.run([DecodeRequest("b", prompt_ids=prompt, params=params, grammar=grammar)])))
            return decode_tps(r.completion) if r.completion else None

        for name, g in GRAMMARS.items():
            g = g if g is not None else schema_grammar(EXTRACT_SCHEMA)
            row = RatioRow(name, Spread([]), Spread([]), Spread([]), GRAMMAR_TARGET)
            for rep in range(reps):
                progress(f"grammar {name}, run {rep + 1}/{reps}")
                a, b = one(None), one(g)
                if a and b:
                    row.a_tps.runs.append(a)
                    row.b_tps.runs.append(b)
                    row.ratios.runs.append(b / a)
            rows.append(row)
    return rows


def speculation_ab(model: Any, gen_tokens: int, reps: int, progress: Callable[[str], None]) -> list[RatioRow]:
    """Single-stream greedy decode with prompt-lookup speculation on and off, alternating, on
    answers that copy their input and on one that does not."""
    from ..engine.model import SPECULATE_DRAFT
    from ..engine.prompt import Message
    from ..engine.sampling import SamplingParams

    params = SamplingParams(temperature=0, max_tokens=gen_tokens)
    saved = model.speculate
    rows = []
    try:
        for name, text in SPEC_WORKLOADS.items():
            prompt = model.prompt_ids([Message("user", text)])
            target = SPEC_TARGET_OTHER if name.startswith("free") else SPEC_TARGET_COPY
            row = RatioRow(name, Spread([]), Spread([]), Spread([]), target)
            drafted = accepted = 0
            for rep in range(reps):
                progress(f"speculation, {name}, run {rep + 1}/{reps}")
                got = []
                for spec in (0, SPECULATE_DRAFT):
                    model.speculate = spec
                    model.reset()
                    g = model.generate(prompt_ids=prompt, params=params)
                    got.append(decode_tps(g.complete()))
                    drafted += g.spec.drafted
                    accepted += g.spec.accepted
                if got[0] and got[1]:
                    row.a_tps.runs.append(got[0])
                    row.b_tps.runs.append(got[1])
                    row.ratios.runs.append(got[1] / got[0])
            row.acceptance = accepted / drafted if drafted else 0.0
            rows.append(row)
    finally:
        model.speculate = saved
    return rows
