"""A fake model and decoder for pipeline tests that need a well-behaved (or badly behaved)
translator: the real fixtures cannot produce numbered answers."""
from __future__ import annotations

import re
from typing import Callable

from chatglm3_cli.engine.completion import Completion, Timings
from chatglm3_cli.engine.decoder import DecodeResult, DecoderStats
from chatglm3_cli.engine.sampling import SamplingParams
from chatglm3_cli.translate.languages import parse_language
from chatglm3_cli.translate.pipeline import FileTask, Settings, translate

GREEDY = SamplingParams(temperature=0)

MARK = re.compile(r"^\[(\d+)\] ", re.MULTILINE)


def units_of(request: str) -> list[str]:
    marks = list(MARK.finditer(request))
    return [request[m.end():(marks[k + 1].start() if k + 1 < len(marks) else len(request))].rstrip("\n")
            for k, m in enumerate(marks)]


def shout(text: str) -> str:
    """A 'translation' that keeps placeholders: upper-case everything outside {{n}}."""
    return re.sub(r"\{\{\d+\}\}|[^{}]+", lambda m: m.group(0) if m.group(0).startswith("{{") else m.group(0).upper(), text)


def numbered(units: list[str], fn: Callable[[str], str] = shout) -> str:
    return "\n".join(f"[{k}] {fn(u)}" for k, u in enumerate(units, 1))


class FakeModel:
    """tokenize: one token per 4 characters; prompt ids remember the messages they came from."""

    family = "fake"
    n_ctx = 4096

    def __init__(self) -> None:
        self.prompts: list[list] = []

    def tokenize(self, text: str) -> list[int]:
        return [0] * (len(text) // 4 + 1)

    def prompt_ids(self, messages) -> list[int]:
        self.prompts.append(list(messages))
        n = sum(len(self.tokenize(m.content)) for m in messages) + 4
        return [1] * (n - 1) + [10**6 + len(self.prompts) - 1]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class FakeDecoder:
    """Answers each request with ``answer(units, system, user)``; counts requests."""

    def __init__(self, model: FakeModel, answer: Callable[[list[str], str, str], str]) -> None:
        self.model = model
        self.answer = answer
        self.stats = DecoderStats()
        self.requests: list[str] = []

    def run(self, requests):
        for req in requests:
            msgs = self.model.prompts[req.prompt_ids[-1] - 10**6]
            system, user = msgs[0].content, msgs[-1].content
            self.requests.append(user)
            self.stats.requests += 1
            text = self.answer(units_of(user), system, user)
            yield DecodeResult(req.key, completion=Completion(
                text=text, metadata="", finish_reason="stop", prompt_tokens=len(req.prompt_ids),
                cached_tokens=0, completion_tokens=len(text) // 4, timings=Timings()))

    def close(self) -> None:
        pass


def settings(**kw):
    kw.setdefault("target", parse_language("zh"))
    kw.setdefault("params", GREEDY)
    return Settings(**kw)


def fake_run(tmp_path, files, answer, progress=None, **kw):
    """Translate {name: text} files with a fake decoder; return (summary, decoder, outputs)."""
    model = FakeModel()
    decoders = []

    def make_decoder(m, *, n_parallel, n_ctx):
        decoders.append(FakeDecoder(m, answer))
        return decoders[-1]

    tasks = []
    for name, text in files.items():
        p = tmp_path / name
        if isinstance(text, bytes):  # an EPUB
            p.write_bytes(text)
        else:
            p.write_text(text, encoding="utf-8", newline="")
        tasks.append(FileTask(str(p), path=p, output=p.with_name(p.stem + ".zh" + p.suffix)))
    s = translate(tasks, open_model=lambda: model, settings=settings(**kw), model_id="fake",
                  make_decoder=make_decoder, progress=progress)
    outs = {t.label: (t.output.read_bytes() if isinstance(files[t.path.name], bytes)
                      else t.output.read_bytes().decode("utf-8")) if t.output.exists() else None for t in tasks}
    return s, (decoders[0] if decoders else None), outs
