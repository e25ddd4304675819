"""A chat template is code from a stranger's GGUF: its rendering is bounded in time, loop
iterations, value sizes and output; over a limit it is the model's error (exit 3)."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from chatglm3_cli.cli.exit_codes import ExitCode
from chatglm3_cli.engine import jinja_render as P
from chatglm3_cli.engine.jinja_render import render_template
from chatglm3_cli.engine.prompt import Message
from chatglm3_cli.errors import UnsupportedModelError

from ..gguf_edit import copy_with

MSGS = [Message("system", "Be brief."), Message("user", "hi")]
CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

HOSTILE = {
    "nested range loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "nested loops under the range limit": "{% for i in range(10000) %}{% for j in range(10000) %}"
                                          "{% endfor %}{% endfor %}",
    "string times a huge number": "{{ 'x' * 4000000000 }}",
    "list times a huge number": "{{ ([1] * 4000000000) | length }}",
    "doubling by +": "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}"
                     "{% endfor %}{{ ns.s | length }}",
    "huge power": "{{ 9 ** 999999999 }}",
    "center filter": "{{ 'x' | center(4000000000) }}",
    "format width": "{{ '%0999999999d' % 1 }}",
    "format filter width": "{{ '%0999999999d' | format(1) }}",
    "output flood": "{% for i in range(10000) %}{% for m in messages %}{{ 'y' * 1000 }}{% endfor %}{% endfor %}",
    "recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "str.format width": "{{ '{:>9999999999}'.format(1) }}",
    "doubling by ~": "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
                     "{% endfor %}{{ ns.s | length }}",
    "replace method": "{% set s = 'x' * 100000 %}{{ s.replace('x', 'y' * 100000) | length }}",
    "replace filter": "{% set s = 'x' * 100000 %}{{ s | replace('x', 'y' * 100000) | length }}",
    "join of a list of big strings": "{% set s = 'x' * 1000000 %}{{ ([s] * 3000) | join }}",
    "tojson of a list of big strings": "{% set s = 'x' * 1000000 %}{{ ([s] * 3000) | tojson }}",
    "string of a list of big strings": "{% set s = 'x' * 1000000 %}{{ ([s] * 3000) ~ '' }}",
    "dict of big strings": "{% set s = 'x' * 1000000 %}{{ dict(a=s, b=s, c=s) | tojson }}",
}


@pytest.mark.parametrize("name", ["join of a list of big strings", "tojson of a list of big strings"])
def test_a_big_value_is_refused_as_it_is_built_not_after(name):
    """Peak memory stays far below the gigabytes the value would take (measured in a child, as
    its VmHWM: ru_maxrss would carry over the parent's peak through fork and exec)."""
    code = ("import sys\n"
            "from chatglm3_cli.engine.jinja_render import render_template\n"
            "from chatglm3_cli.engine.prompt import Message\n"
            "try:\n"
            f"    render_template({HOSTILE[name]!r}, [Message('user', 'hi')], bos_token='', eos_token='')\n"
            "except Exception as e:\n"
            "    print(type(e).__name__)\n"
            "print(next(int(line.split()[1]) // 1024 for line in open('/proc/self/status')\n"
            "           if line.startswith('VmHWM:')))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    kind, peak_mb = run.stdout.split()
    assert kind == "UnsupportedModelError" and int(peak_mb) < 400, (run.stdout, run.stderr)


def test_an_ordinary_template_renders():
    assert render_template(CHATML, MSGS, bos_token="", eos_token="") == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    busy = ("{{ messages | map(attribute='content') | join(' ~ ') ~ ('%d' % 3) ~ 'a'.replace('a', 'b') "
            "~ '{}'.format(1) ~ ('x' | center(5)) }}{% for i in range(3) %}{{ i }}{% endfor %}")
    assert render_template(busy, MSGS, bos_token="", eos_token="") == "Be brief. ~ hi3b1  x  012"


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_templates_are_model_errors_quickly(name):
    t0 = time.monotonic()
    with pytest.raises(UnsupportedModelError, match="chat template"):
        render_template(HOSTILE[name], MSGS, bos_token="", eos_token="")
    assert time.monotonic() - t0 < P.TEMPLATE_SECONDS + 20  # never "for ever"


def test_a_loop_that_calls_nothing_is_stopped_by_the_time_limit(monkeypatch):
    # Loops over strings: no range() to count, no call to intercept; only the clock.
    monkeypatch.setattr(P, "TEMPLATE_SECONDS", 1.0)
    t = "{% for a in messages %}{% for b in 'x' * 100000 %}{% for c in 'y' * 100000 %}{% endfor %}{% endfor %}{% endfor %}"
    t0 = time.monotonic()
    with pytest.raises(UnsupportedModelError, match="took more than 1 seconds"):
        render_template(t, MSGS, bos_token="", eos_token="")
    assert time.monotonic() - t0 < 30
    assert sys.gettrace() is None or sys.gettrace().__name__ != "_global"  # tracer removed


def _with_template(src, out, template):
    import gguf

    return copy_with(src, out, {"tokenizer.chat_template": (template, gguf.GGUFValueType.STRING)})


def test_run_with_a_hostile_template_exits_3(fixtures, tmp_path):
    model = _with_template(fixtures.path("template"), tmp_path / "hostile.gguf",
                           HOSTILE["nested loops under the range limit"])
    p = subprocess.run([sys.executable, "-m", "chatglm3_cli", "run", "-m", str(model), "hi"],
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert p.returncode == ExitCode.MODEL_ERROR, p.stderr
    assert "chat template went over a limit" in p.stderr and len(p.stderr.strip().splitlines()) == 1
