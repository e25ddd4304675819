"""Rendering a GGUF's chat template: untrusted code, run in Jinja's sandbox within limits.

A chat template comes from a GGUF file, that is from a stranger. The Jinja sandbox stops
escapes (no attribute access to internals); these limits bound what a render may cost, so
that a template with nested loops cannot hang the process and ``'x' * 4000000000`` cannot
exhaust memory. Legitimate templates stay far below them (a loop over the messages, a few
string joins). Over a limit, the template is the model's fault: UnsupportedModelError.

- time: a line tracer on the compiled template's frames checks a deadline (a loop with an
  empty body calls nothing else we could hook);
- loops: range() is bounded per call and counted across the render;
- values: *, +, **, %, ~, filters and method calls refuse results over a million items, and
  field widths of millions (``'%09999999d'``);
- output: rendered with generate() and stopped past a size that depends on the messages.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Protocol, Sequence

from ..errors import UnsupportedModelError


class Turn(Protocol):
    """What a template sees of a message (prompt.Message is one): this module needs nothing
    else from prompt.py, which imports it."""

    @property
    def role(self) -> str: ...

    @property
    def content(self) -> str: ...

TEMPLATE_SECONDS = 10.0  # wall time of one render
TEMPLATE_MAX_RANGE = 10_000  # items of one range() (Jinja's own limit is 100,000)
TEMPLATE_MAX_ITERATIONS = 100_000  # range() items of one render, all loops together
TEMPLATE_MAX_ITEMS = 1 << 20  # length of a string or list that * or + may build
TEMPLATE_MIN_OUTPUT = 256 * 1024  # output chars allowed besides 4x the messages' own text


class _TemplateLimit(Exception):
    """A render that went over one of the limits above."""


class _Budget:
    def __init__(self, seconds: float, max_items: int = TEMPLATE_MAX_ITEMS) -> None:
        import time

        self.deadline = time.monotonic() + seconds
        self.seconds = seconds
        self.iterations = 0
        # The most a value may hold, strings inside lists counted: at least the messages' own
        # text (a template may pass them around), never what serializes to gigabytes.
        self.max_items = max_items

    def tick(self, n: int = 1) -> None:
        self.iterations += n
        if self.iterations > TEMPLATE_MAX_ITERATIONS:
            raise _TemplateLimit(f"more than {TEMPLATE_MAX_ITERATIONS:,} loop iterations")

    def check_time(self) -> None:
        import time

        if time.monotonic() > self.deadline:
            raise _TemplateLimit(f"rendering took more than {self.seconds:g} seconds")


class _CountedRange:
    """range() for templates: bounded in size, and each item counted against the budget."""

    def __init__(self, budget: _Budget, *args: int) -> None:
        self._r = range(*args)
        if len(self._r) > TEMPLATE_MAX_RANGE:
            raise _TemplateLimit(f"a range of {len(self._r):,} items (at most {TEMPLATE_MAX_RANGE:,})")
        self._budget = budget

    def __len__(self) -> int:
        return len(self._r)

    def __getitem__(self, i: Any) -> Any:
        return self._r[i]

    def __iter__(self) -> Any:
        for x in self._r:
            self._budget.tick()
            yield x


def _sized(v: Any) -> int | None:
    return len(v) if isinstance(v, (str, bytes, list, tuple)) else None


def _check_binop(op: str, left: Any, right: Any) -> None:
    """Refuse a * or + that would build a huge string or list, and a huge power."""
    if op == "*":
        for seq, n in ((left, right), (right, left)):
            size = _sized(seq)
            if size is not None and isinstance(n, int) and size * max(n, 0) > TEMPLATE_MAX_ITEMS:
                raise _TemplateLimit(f"a value of {size * n:,} items")
    elif op == "+":
        a, b = _sized(left), _sized(right)
        if a is not None and b is not None and a + b > TEMPLATE_MAX_ITEMS:
            raise _TemplateLimit(f"a value of {a + b:,} items")
    elif op == "**":
        if isinstance(left, (int, float)) and isinstance(right, (int, float)) and abs(left) > 1 \
                and right > 4096:
            raise _TemplateLimit("a power too large")


_WIDE_FORMAT = re.compile(r"\d{7,}")  # a field width of millions: "%0999999999d", "{:>9999999}"


def _check_args(what: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    """Refuse a call that would build a huge string (``"x"|center(10**9)``, a replace that
    multiplies a string) before it runs."""
    for v in [*args, *kwargs.values()]:
        if isinstance(v, int) and not isinstance(v, bool) and v > TEMPLATE_MAX_ITEMS:
            raise _TemplateLimit(f"an argument of {v:,}")
    name = getattr(what, "__name__", "")
    target = getattr(what, "__self__", None)
    if name in ("replace", "do_replace"):
        if name == "do_replace" and len(args) >= 3:  # the filter: (eval_ctx, s, old, new)
            target, args = args[-3], args[-2:]
        if isinstance(target, str) and len(args) >= 2 and isinstance(args[0], str) \
                and isinstance(args[1], str):
            n = target.count(args[0])
            if len(target) + n * (len(args[1]) - len(args[0])) > TEMPLATE_MAX_ITEMS:
                raise _TemplateLimit("a replace() that builds a huge string")


def _deep_size(value: Any, limit: int) -> int:
    """Items in a value, the characters of every string inside lists, tuples and dicts counted
    (``[s] * 3000`` holds 3000 references, but joins or serializes to 3000 copies of s); stops
    counting past ``limit``."""
    total, seen, stack = 0, 0, [value]
    while stack and total <= limit and seen <= limit:
        v = stack.pop()
        seen += 1
        if isinstance(v, (str, bytes)):
            total += len(v)
        elif isinstance(v, (list, tuple)):
            total += len(v)
            stack.extend(v)
        elif isinstance(v, dict):
            total += len(v)
            stack.extend(v.keys())
            stack.extend(v.values())
    return max(total, seen)


def _check_result(value: Any, limit: int = TEMPLATE_MAX_ITEMS) -> Any:
    size = _deep_size(value, limit) if isinstance(value, (str, bytes, list, tuple, dict)) else 0
    if size > limit:
        raise _TemplateLimit(f"a value of more than {limit:,} items")
    return value


def _environment(budget: _Budget) -> Any:
    from jinja2.compiler import CodeGenerator
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class BoundedCodeGenerator(CodeGenerator):
        def visit_Concat(self, node: Any, frame: Any) -> None:
            # `a ~ b` joins without any hook; ours counts the length first (we never autoescape).
            self.write("environment.bounded_concat((")
            for arg in node.nodes:
                self.visit(arg, frame)
                self.write(", ")
            self.write("))")

    class BoundedEnvironment(ImmutableSandboxedEnvironment):
        code_generator_class = BoundedCodeGenerator
        intercepted_binops = frozenset(["*", "+", "**", "%"])

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "%" and isinstance(left, str) and _WIDE_FORMAT.search(left):
                raise _TemplateLimit("a format width of millions")
            _check_binop(operator, left, right)
            budget.check_time()
            return _check_result(super().call_binop(context, operator, left, right), budget.max_items)

        def call(*args: Any, **kwargs: Any) -> Any:  # (self, context, obj, *args): names free for kwargs
            budget.check_time()
            _check_args(args[2], args[3:], kwargs)
            return _check_result(ImmutableSandboxedEnvironment.call(*args, **kwargs), budget.max_items)

        def wrap_str_format(self, value: Any) -> Any:
            fmt = getattr(value, "__self__", None)
            if isinstance(fmt, str) and getattr(value, "__name__", "") in ("format", "format_map") \
                    and _WIDE_FORMAT.search(fmt):
                raise _TemplateLimit("a format width of millions")
            return super().wrap_str_format(value)

        @staticmethod
        def bounded_concat(parts: Sequence[Any]) -> str:
            for p in parts:  # before str(): a list's text is as long as what it holds
                _check_result(p, budget.max_items)
            texts = [str(p) for p in parts]
            if sum(len(t) for t in texts) > TEMPLATE_MAX_ITEMS:
                raise _TemplateLimit(f"a value of {sum(len(t) for t in texts):,} items")
            budget.check_time()
            return "".join(texts)

    env = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["range"] = lambda *args: _CountedRange(budget, *args)

    def bounded(f: Any) -> Any:
        def filter_(*args: Any, **kwargs: Any) -> Any:
            budget.check_time()
            _check_args(f, args, kwargs)
            if getattr(f, "__name__", "") == "do_format" and args and isinstance(args[0], str) \
                    and _WIDE_FORMAT.search(args[0]):
                raise _TemplateLimit("a format width of millions")
            for a in args:  # before the filter: join and tojson build what their input holds
                _check_result(a, budget.max_items)
            return _check_result(f(*args, **kwargs), budget.max_items)

        for attr in ("jinja_pass_arg",):  # keep how Jinja passes the context/environment
            if hasattr(f, attr):
                setattr(filter_, attr, getattr(f, attr))
        filter_.__name__ = getattr(f, "__name__", "filter")
        return filter_

    # tojson as transformers defines it for chat templates (plain json.dumps, non-ASCII kept):
    # Jinja's own escapes <, >, & and ' for HTML, which no model was trained on.
    env.filters["tojson"] = _tojson
    env.filters = {name: bounded(f) for name, f in env.filters.items()}
    return env


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: Any = None, sort_keys: bool = False) -> str:
    import json

    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def supports_tools(template: str) -> bool:
    """Whether a Jinja chat template reads the ``tools`` variable (as Qwen2.5's, Llama 3.1's,
    Hermes' and Mistral's do): read from the template's syntax tree, never run. A template that
    does not parse has no tools support (rendering it reports why)."""
    try:
        from jinja2 import Environment, TemplateSyntaxError, meta
    except ImportError:  # pragma: no cover - jinja2 comes with llama-cpp-python
        return False
    try:
        tree = Environment().parse(template)
    except (TemplateSyntaxError, RecursionError, MemoryError):
        return False
    return "tools" in meta.find_undeclared_variables(tree)


def template_messages(messages: Sequence[Turn], contents: Sequence[str]) -> list[dict[str, Any]]:
    """Messages in the shape transformers passes to chat templates: a tool call made from
    structured data (a message with ``arguments``; its ``metadata`` names the tool) is an
    assistant message with ``tool_calls`` (OpenAI's shape, arguments as a dict as templates
    expect; its ``content``, ChatGLM3's spelling of the call, is not this format's), and a
    tool's result (role ``observation``) a ``tool`` message with the ``tool_call_id`` and
    ``name`` of the call it answers."""
    out: list[dict[str, Any]] = []
    pending: list[tuple[str, str]] = []  # (id, name) of calls not answered yet
    n_calls = 0
    for m, content in zip(messages, contents, strict=True):
        arguments = getattr(m, "arguments", None)
        name = str(getattr(m, "metadata", "") or "")
        if m.role == "assistant" and arguments is not None and name:
            n_calls += 1
            cid = f"call{n_calls:05d}"  # nine letters and digits: Mistral's templates refuse other ids
            pending.append((cid, name))
            # "" rather than None: templates test it, and some run `in` or `+` on it (Qwen3's)
            out.append({"role": "assistant", "content": "", "tool_calls": [
                {"id": cid, "type": "function", "function": {"name": name, "arguments": dict(arguments)}}]})
        elif m.role == "observation":
            msg: dict[str, Any] = {"role": "tool", "content": content}
            if pending:
                msg["tool_call_id"], msg["name"] = pending.pop(0)
            out.append(msg)
        else:
            out.append({"role": m.role, "content": content})
    return out


class _Deadline:
    """Checks the budget's time on every line the compiled template runs (a loop with an
    empty body calls nothing we could intercept). Only template frames are traced."""

    def __init__(self, budget: _Budget) -> None:
        self.budget = budget
        self.saved: Any = None

    def _local(self, frame: Any, event: str, arg: Any) -> Any:
        if event == "line":
            self.budget.check_time()
        return self._local

    def _global(self, frame: Any, event: str, arg: Any) -> Any:
        return self._local if frame.f_code.co_filename == "<template>" else None

    def __enter__(self) -> "_Deadline":
        import sys

        self.saved = sys.gettrace()
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc: object) -> None:
        import sys

        sys.settrace(self.saved)


def render_template(template: str, messages: Sequence[Turn], *, bos_token: str, eos_token: str,
                    sentinel: Callable[[int], str] | None = None,
                    tools: Sequence[Mapping[str, Any]] | None = None) -> str:
    """Render a file's Jinja chat template (as llama-cpp-python and transformers do), within
    limits of time, loop iterations, value sizes and output size (UnsupportedModelError past
    them: the template is the model's fault). ``tools``: the function specs offered, passed
    as transformers does (``{"type": "function", "function": spec}`` each)."""
    try:
        import jinja2
    except ImportError as e:  # pragma: no cover - jinja2 comes with llama-cpp-python
        raise UnsupportedModelError("rendering this model's chat template needs jinja2") from e

    def raise_exception(message: str) -> None:
        raise UnsupportedModelError(f"the model's chat template refused the messages: {message}")

    def strftime_now(fmt: str) -> str:
        import datetime

        return datetime.datetime.now().strftime(fmt)

    msgs = template_messages(messages, [sentinel(i) if sentinel else m.content for i, m in enumerate(messages)])
    extra: dict[str, Any] = {}
    if tools:
        extra["tools"] = [{"type": "function", "function": dict(t)} for t in tools]
    max_out = TEMPLATE_MIN_OUTPUT + 4 * (sum(len(m["content"]) for m in msgs)
                                         + sum(_deep_size(t, TEMPLATE_MAX_ITEMS) for t in tools or ())
                                         + sum(_deep_size(m.get("tool_calls"), TEMPLATE_MAX_ITEMS) for m in msgs))
    budget = _Budget(TEMPLATE_SECONDS, max(TEMPLATE_MAX_ITEMS, max_out))
    env = _environment(budget)
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
    out: list[str] = []
    size = 0
    try:
        with _Deadline(budget):
            compiled = env.from_string(template)
            # generate(), not render(): the output is checked as it grows.
            for piece in compiled.generate(messages=msgs, add_generation_prompt=True,
                                           bos_token=bos_token, eos_token=eos_token, **extra):
                size += len(piece)
                if size > max_out:
                    raise _TemplateLimit(f"more than {max_out:,} characters of output")
                out.append(piece)
                budget.check_time()
    except UnsupportedModelError:
        raise
    except _TemplateLimit as e:
        raise UnsupportedModelError(f"the model's chat template went over a limit: {e}",
                                    hint="the GGUF's chat template is unusable: use another model file") from None
    except jinja2.TemplateError as e:
        raise UnsupportedModelError(f"the model's chat template cannot be rendered: {e}") from e
    except (RecursionError, MemoryError, OverflowError, ArithmeticError) as e:
        raise UnsupportedModelError(
            f"the model's chat template cannot be rendered: {type(e).__name__}") from None
    except (TypeError, ValueError, LookupError, AttributeError) as e:  # the template's own Python-level error
        raise UnsupportedModelError(f"the model's chat template cannot be rendered: {type(e).__name__}: {e}") from None
    return "".join(out)
