"""Reading and validating a batch input: JSONL task records or OpenAI Batch API lines.

The whole input is checked before anything runs, and every problem is collected (with its
line number) instead of stopping at the first: invalid JSON, missing or duplicate ids,
unknown tasks, missing or mistyped fields, unusable JSON Schemas, undecodable bytes.

Two shapes, one record per line (blank lines are skipped):

- task records: ``{"id": "r1", "task": "classify", "text": "...", "labels": ["a", "b"]}``
- OpenAI Batch lines: ``{"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions",
  "body": {"messages": [...], "max_tokens": 64}}``, answered in the OpenAI Batch output shape.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..engine.answer import Call
from ..engine.grammar import check_schema, schema_grammar
from ..engine.grammar_limits import labels_problem
from ..engine.messages import ROLE_ALIASES, chat_messages, check_tools
from ..engine.prompt import Message
from ..engine.toolcalls import function_specs
from ..errors import InputError
from ..textio import decode_text
from . import tasks as T

OPENAI_URLS = ("/v1/chat/completions", "/chat/completions")
SAMPLING_FIELDS = ("max_tokens", "temperature", "top_p", "seed")


@dataclass
class Job:
    """One valid record, ready to run."""

    line: int
    key: str  # the id as text: what resume and the output join on
    id: Any  # the id as written (a string or an integer)
    task: str  # "chat" for OpenAI lines
    record: dict[str, Any]  # the task's fields (OpenAI lines: messages and an optional schema)
    openai: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)  # per-record sampling settings
    digest: str = ""  # the record's content hash: a resumed job redoes a record that changed

    def messages(self, default_system: str | None = None) -> list[Message]:
        """The record's prompt; ``default_system`` (the job's -s) applies to a record that has
        no system prompt of its own (neither "system" nor a system message)."""
        record = self.record
        if default_system and not record.get("system") and not self._has_system_message():
            record = {**record, "system": default_system}
        return T.build_messages(self.task, record)

    def _has_system_message(self) -> bool:
        msgs = self.record.get("messages") or []
        return any(isinstance(m, dict) and ROLE_ALIASES.get(str(m.get("role")), m.get("role")) == "system"
                   for m in msgs)

    def default_max_tokens(self, count: "Callable[[str], int]") -> int:
        """The answer cap when neither the record nor the job sets one (see tasks)."""
        if self.openai:
            return T.DEFAULT_ANSWER_CAP
        return T.default_max_tokens(self.task, self.record, count)

    def grammar(self) -> str | None:
        if self.openai:
            schema = self.record.get("schema")
            return schema_grammar(schema) if schema is not None else None
        return T.grammar_for(self.task, self.record)

    def offered_tools(self) -> set[str]:
        """The names of the tools the record offers (its answers may call only those)."""
        return {f["name"] for f in function_specs(self.record.get("tools") or [])}

    def parse(self, text: str, call: Call | None = None, calls: Sequence[Call] = ()) -> Any:
        """The record's output from the answer (OutputFormatError if it does not parse).

        ``call``: the answer ended with a call to an offered tool: the output is then the call,
        {"name", "arguments"}, with "content" when text came before it, and "calls" (each
        {"name", "arguments"}, ``call`` first) when the answer made several (``calls``)."""
        if call is not None:
            out: dict[str, Any] = {"name": call.name, "arguments": call.arguments}
            if text:
                out["content"] = text
            if len(calls) > 1:
                out["calls"] = [{"name": c.name, "arguments": c.arguments} for c in calls]
            return out
        if self.openai:
            schema = self.record.get("schema")
            if schema is not None:
                T.parse_json(text, schema)  # checked, but OpenAI's content stays a string
            return text
        return T.parse_output(self.task, self.record, text)


@dataclass
class Problem:
    """An invalid record: it is reported, and becomes an error line of its own."""

    line: int
    message: str
    key: str | None = None  # None when the record has no usable id of its own
    id: Any = None
    task: str | None = None
    openai: bool = False
    digest: str = ""

    def describe(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class JobFile:
    source: str
    jobs: list[Job]
    problems: list[Problem]
    sha256: str | None = None  # of the whole input, for the manifest

    @property
    def total(self) -> int:
        return len(self.jobs) + len(self.problems)


# reading ------------------------------------------------------------------------------------

def _lines(data: bytes, source: str) -> list[tuple[int, str | None, str | None]]:
    """(line number, text or None, why not) for each non-blank line. A binary file is refused
    as a whole; invalid UTF-8 only makes its own lines invalid."""
    try:
        text: str | None = decode_text(data, source)
    except InputError:
        if b"\x00" in data:
            raise
        text = None
    out: list[tuple[int, str | None, str | None]] = []
    if text is not None:
        for n, line in enumerate(text.split("\n"), 1):
            if line.strip():
                out.append((n, line, None))
        return out
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for n, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            out.append((n, raw.decode("utf-8"), None))
        except UnicodeDecodeError as e:
            out.append((n, None, f"not valid UTF-8 (byte {e.start + 1} of the line)"))
    return out


def record_digest(text: str) -> str:
    """A record's identity for resume: the sha256 of its line (surrounding whitespace and a
    CRLF's CR aside). Hashing the text, not re-serialised JSON, works for any line, even one
    too deep or too big to load."""
    return hashlib.sha256(text.strip().encode("utf-8", errors="surrogatepass")).hexdigest()


def parse_jobs(data: bytes, source: str) -> JobFile:
    """Every record of the input, each either a Job or a Problem (InputError only for a binary
    or empty input)."""
    jobs: list[Job] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    lines = _lines(data, source)
    if not lines:
        raise InputError(f"{source} has no records (it is empty)",
                         hint="write one JSON record per line")
    for n, text, why in lines:
        if text is None:
            problems.append(Problem(n, why or "unreadable"))
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            problems.append(Problem(n, f"invalid JSON ({e.msg} at column {e.colno})"))
            continue
        except RecursionError:  # a line nested thousands deep: that record's error, not the job's
            problems.append(Problem(n, "invalid JSON (nested too deeply)"))
            continue
        except ValueError as e:  # an integer of more than 4,300 digits, ...
            problems.append(Problem(n, f"invalid JSON ({e})"))
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(n, f"expected a JSON object, got {_kind(obj)}"))
            continue
        try:
            item = _check_record(n, obj)
        except (RecursionError, ValueError) as e:  # a schema nested too deeply, ...
            why = "nested too deeply" if isinstance(e, RecursionError) else str(e)
            problems.append(Problem(n, f"unusable record ({why})"))
            continue
        item.digest = record_digest(text)
        key = item.key
        if key is not None:
            if key in seen:
                problems.append(Problem(n, f"duplicate id {key!r} (first on line {seen[key]})",
                                        task=item.task, openai=item.openai))
                continue
            seen[key] = n
        (jobs if isinstance(item, Job) else problems).append(item)  # type: ignore[arg-type]
    return JobFile(source, jobs, problems, hashlib.sha256(data).hexdigest())


def _kind(v: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(v), type(v).__name__)


def _check_id(obj: Mapping[str, Any], name: str, errors: list[str]) -> tuple[str | None, Any]:
    if name not in obj or obj[name] is None:
        errors.append(f'missing "{name}"')
        return None, None
    v = obj[name]
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        errors.append(f'"{name}" must be a string or an integer, got {_kind(v)}')
        return None, None
    if isinstance(v, str) and not v.strip():
        errors.append(f'"{name}" is empty')
        return None, None
    return str(v), v


def _check_sampling(obj: Mapping[str, Any], errors: list[str], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in SAMPLING_FIELDS + ("max_completion_tokens",):
        if name not in obj or obj[name] is None:
            continue
        v = obj[name]
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        integer = isinstance(v, int) and not isinstance(v, bool)
        if name in ("max_tokens", "max_completion_tokens"):
            ok, want = integer and v >= 1, "an integer >= 1"
            name = "max_tokens"
        elif name == "temperature":
            ok, want = number and v >= 0, "a number >= 0"
        elif name == "top_p":
            ok, want = number and 0 < v <= 1, "a number in (0, 1]"
        else:
            ok, want = integer and v >= 0, "an integer >= 0"
        if ok:
            out[name] = v
        else:
            errors.append(f'"{prefix}{name}" must be {want}, got {json.dumps(v)}')
    return out


def _check_messages(msgs: Any, errors: list[str], where: str = "messages") -> None:
    if not isinstance(msgs, list) or not msgs:
        errors.append(f'"{where}" must be a non-empty array of messages' if msgs is not None
                      else f'missing "{where}"')
        return
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            errors.append(f'{where}[{i}] must be an object with "role" and "content"')
            return
        content = m.get("content")
        if not isinstance(content, (str, list)) and not (content is None and m.get("tool_calls")):
            errors.append(f'{where}[{i}] has no text "content"')
            return
        try:
            chat_messages([m])
        except ValueError as e:
            errors.append(f"{where}[{i}]: {e}")
            return
    if msgs[-1].get("role") == "assistant":
        errors.append(f"the last of the {where} is the assistant's: nothing to answer")


def _check_tools(obj: Mapping[str, Any], errors: list[str], prefix: str = "") -> list[Any] | None:
    tools = obj.get("tools")
    if tools is None:
        return None
    why = check_tools(tools)
    if why:
        errors.append(f'"{prefix}tools" {why}')
        return None
    return tools


def _check_record(n: int, obj: dict[str, Any]) -> "Job | Problem":
    if "custom_id" in obj or ("body" in obj and "url" in obj):
        return _check_openai(n, obj)
    errors: list[str] = []
    key, rid = _check_id(obj, "id", errors)
    task = obj.get("task")
    if task is None:
        errors.append('missing "task"' + ("" if "id" in obj else
                      ' (neither a task record {"id", "task", ...} nor an OpenAI batch line '
                      '{"custom_id", "method", "url", "body"})'))
        task = None
    elif task not in T.TASKS:
        errors.append(f"unknown task {task!r} (one of: {', '.join(T.TASKS)})")
        task = None
    if task is not None:
        _check_task_fields(task, obj, errors)
    if "system" in obj and obj["system"] is not None and not isinstance(obj["system"], str):
        errors.append('"system" must be a string')
    overrides = _check_sampling(obj, errors)
    if errors:
        return Problem(n, "; ".join(errors), key=key, id=rid, task=task)
    assert key is not None and task is not None
    record = dict(obj)
    return Job(n, key, rid, task, record, overrides=overrides)


def _check_task_fields(task: str, obj: Mapping[str, Any], errors: list[str]) -> None:
    for name in T.REQUIRED[task]:
        v = obj.get(name)
        if v is None:
            errors.append(f'missing "{name}" (task {task} needs {", ".join(T.REQUIRED[task])})')
        elif not isinstance(v, str):
            errors.append(f'"{name}" must be a string, got {_kind(v)}')
        elif not v.strip():
            errors.append(f'"{name}" is empty')
    for name in T.OPTIONAL_STR.get(task, ()):
        if obj.get(name) is not None and not isinstance(obj[name], str):
            errors.append(f'"{name}" must be a string, got {_kind(obj[name])}')
    if task == "chat":
        _check_messages(obj.get("messages"), errors)
        _check_tools(obj, errors)
        msgs = obj.get("messages")
        if obj.get("system") and isinstance(msgs, list) and msgs and isinstance(msgs[0], dict) \
                and ROLE_ALIASES.get(str(msgs[0].get("role")), msgs[0].get("role")) == "system":
            errors.append('a system prompt both in "system" and in "messages": keep one')
    elif task == "summarize":
        length = obj.get("length")
        if length is not None and not ((isinstance(length, int) and not isinstance(length, bool)
                                        and length > 0) or (isinstance(length, str) and length.strip())):
            errors.append('"length" must be a number of words or a description such as "one sentence"')
    elif task == "classify":
        labels = obj.get("labels")
        if labels is None:
            errors.append('missing "labels" (task classify needs text, labels)')
        elif (not isinstance(labels, list) or len(labels) < 2
              or not all(isinstance(x, str) and x.strip() for x in labels)):
            errors.append('"labels" must be an array of at least two non-empty strings')
        elif len(set(labels)) != len(labels):
            errors.append('"labels" has duplicates')
        elif labels_problem(labels):
            errors.append(f'"labels" {labels_problem(labels)}')
    elif task == "extract":
        if "schema" not in obj:
            errors.append('missing "schema" (task extract needs text, schema: a JSON Schema)')
        else:
            why = check_schema(obj["schema"])
            if why:
                errors.append(f'"schema" {why}')


def _check_openai(n: int, obj: dict[str, Any]) -> "Job | Problem":
    errors: list[str] = []
    key, rid = _check_id(obj, "custom_id", errors)
    method = obj.get("method", "POST")
    if not isinstance(method, str) or method.upper() != "POST":
        errors.append(f'"method" must be "POST", got {json.dumps(method)}')
    url = obj.get("url")
    if url not in OPENAI_URLS:
        errors.append(f'"url" must be "/v1/chat/completions", got {json.dumps(url)}')
    body = obj.get("body")
    record: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    if not isinstance(body, dict):
        errors.append('missing "body"' if body is None else '"body" must be an object')
    else:
        _check_messages(body.get("messages"), errors, "body.messages")
        record["messages"] = body.get("messages")
        tools = _check_tools(body, errors, "body.")
        choice = body.get("tool_choice")
        if choice not in (None, "auto", "none"):
            errors.append(f'"body.tool_choice" {json.dumps(choice)} is not supported (use "auto" or "none")')
        elif tools and choice != "none":
            record["tools"] = tools
        overrides = _check_sampling(body, errors, "body.")
        if isinstance(body.get("n"), int) and body["n"] != 1:
            errors.append('"body.n" other than 1 is not supported')
        fmt = body.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema")
            schema = spec.get("schema") if isinstance(spec, dict) else None
            why = check_schema(schema) if schema is not None else "is missing"
            if why:
                errors.append(f'"body.response_format.json_schema.schema" {why}')
            record["schema"] = schema
        elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
            record["schema"] = {"type": "object"}
        elif fmt is not None and not (isinstance(fmt, dict) and fmt.get("type") == "text"):
            errors.append('"body.response_format" must be {"type": "text" | "json_object" | "json_schema"}')
    if errors:
        return Problem(n, "; ".join(errors), key=key, id=rid, task="chat", openai=True)
    assert key is not None
    return Job(n, key, rid, "chat", record, openai=True, overrides=overrides)
