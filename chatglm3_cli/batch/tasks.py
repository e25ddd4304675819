"""What each batch task asks the model, how its output is constrained, and how it is read back.

Every task prompt puts the task's fixed instructions first (the system message), then the
task's parameters (labels, schema, target language...), and the record's own text last (the
user message). Records of one task therefore begin with the same tokens, which the parallel
decoder evaluates once and shares.

``classify`` and ``extract`` are right by construction: a llama.cpp GBNF grammar
(``engine/grammar.py``) allows only a label / JSON valid against the schema, and the result is
parsed and checked again afterwards.
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable, Mapping

from ..engine.grammar import labels_grammar, schema_grammar
from ..engine.messages import chat_messages
from ..engine.prompt import Message
from ..engine.sampling import DEFAULT_ANSWER_CAP  # free-form answers: chat, generate, OpenAI lines
from ..errors import OutputFormatError

TASKS = ("chat", "generate", "translate", "summarize", "classify", "extract", "qa", "rewrite")

# Required string fields of each task (chat's messages are checked on their own).
REQUIRED: dict[str, tuple[str, ...]] = {
    "chat": (),
    "generate": ("prompt",),
    "translate": ("text", "to"),
    "summarize": ("text",),
    "classify": ("text",),
    "extract": ("text",),
    "qa": ("question", "context"),
    "rewrite": ("text", "instruction"),
}
OPTIONAL_STR: dict[str, tuple[str, ...]] = {
    "translate": ("from",),
    "summarize": ("style",),
}

# The fixed, shared part of each prompt: keep these first and identical for every record.
INSTRUCTIONS = {
    "translate": (
        "You are a professional translator. Translate the text in the user's message into the "
        "target language given below. Keep its meaning, tone and formatting (line breaks, "
        "Markdown, code, numbers and names). Output only the translation: no notes, no "
        "explanations, no quotation marks around it."),
    "summarize": (
        "You summarize texts. Summarize the text in the user's message. Keep the key facts, "
        "names and numbers, and add nothing that the text does not say. Write the summary in "
        "the language of the text. Output only the summary."),
    "classify": (
        "You are a text classifier. Classify the text in the user's message. Answer with exactly "
        "one of the labels listed below, written exactly as it is listed, and nothing else."),
    "extract": (
        "You extract structured data from text. Read the text in the user's message and answer "
        "with one JSON value that is valid against the JSON Schema below, and nothing else: no "
        "Markdown fences, no explanations. Use only what the text says."),
    "qa": (
        "You answer questions about a document. Answer the user's question using only the "
        "context below. If the context does not contain the answer, say that it does not. "
        "Answer briefly, in the language of the question."),
    "rewrite": (
        "You rewrite texts. Rewrite the text in the user's message as the instruction below "
        "says, keeping its meaning unless the instruction asks otherwise. Output only the "
        "rewritten text."),
}

# prompts ------------------------------------------------------------------------------------

def _system(task: str, params: list[str], record: Mapping[str, Any]) -> Message:
    parts = [INSTRUCTIONS[task]]
    if params:
        parts.append("\n".join(params))
    if record.get("system"):
        parts.append(str(record["system"]))
    return Message("system", "\n\n".join(parts))


def build_messages(task: str, record: Mapping[str, Any]) -> list[Message]:
    """The prompt of one (validated) task record: fixed instructions, parameters, then the text."""
    if task == "chat":
        return chat_messages(record["messages"], record.get("system"), record.get("tools"))
    if task == "generate":
        sys_msg = [Message("system", str(record["system"]))] if record.get("system") else []
        return sys_msg + [Message("user", record["prompt"])]
    if task == "translate":
        params = [f"Target language: {record['to']}"]
        if record.get("from"):
            params.insert(0, f"Source language: {record['from']}")
        return [_system(task, params, record), Message("user", record["text"])]
    if task == "summarize":
        params = []
        length = record.get("length")
        if isinstance(length, int):
            params.append(f"Length: at most about {length} words.")
        elif length:
            params.append(f"Length: {length}.")
        if record.get("style"):
            params.append(f"Style: {record['style']}.")
        return [_system(task, params, record), Message("user", record["text"])]
    if task == "classify":
        labels = "\n".join(f"- {label}" for label in record["labels"])
        return [_system(task, [f"Labels:\n{labels}"], record), Message("user", record["text"])]
    if task == "extract":
        schema = json.dumps(record["schema"], ensure_ascii=False, sort_keys=True)
        return [_system(task, [f"JSON Schema:\n{schema}"], record), Message("user", record["text"])]
    if task == "qa":
        return [_system(task, [f"Context:\n{record['context']}"], record),
                Message("user", record["question"])]
    if task == "rewrite":
        return [_system(task, [f"Instruction: {record['instruction']}"], record),
                Message("user", record["text"])]
    raise ValueError(f"unknown task {task!r}")


# answer caps ----------------------------------------------------------------------------------

# An answer with no cap of its own runs until the context is full when a model never ends its
# turn (weak models repeat themselves): seen as 4,011 tokens for a one-line translation. Each task
# gets a cap that a complete answer stays well under; "max_tokens" (the record's, or the job's
# --max-tokens) replaces it.


def default_max_tokens(task: str, record: Mapping[str, Any], count: Callable[[str], int]) -> int:
    """The cap of a record that sets none; ``count`` gives the tokens of a text."""
    if task == "translate":  # the same rule as `chatglm3 translate`
        return 3 * count(record["text"]) + 32
    if task == "rewrite":  # the instruction may ask for a longer text, within reason
        return 3 * count(record["text"]) + 128
    if task == "summarize":
        length = record.get("length")
        if isinstance(length, int):  # words: a word is rarely more than three tokens
            return 3 * length + 64
        return min(DEFAULT_ANSWER_CAP, count(record["text"]) + 64)
    if task == "classify":  # a label: the grammar allows nothing else
        return max(count(label) for label in record["labels"]) + 16
    if task == "extract":  # values taken from the text, plus the JSON around them
        return min(DEFAULT_ANSWER_CAP, 2 * count(record["text"]) + 256)
    if task == "qa":  # "briefly", says the prompt
        return 512
    return DEFAULT_ANSWER_CAP


# grammars -----------------------------------------------------------------------------------

def grammar_for(task: str, record: Mapping[str, Any]) -> str | None:
    if task == "classify":
        return labels_grammar(list(record["labels"]))
    if task == "extract":
        return schema_grammar(record["schema"])
    return None


# reading the answer -------------------------------------------------------------------------

def _shorten(text: str, n: int = 200) -> str:
    return text if len(text) <= n else text[:n] + "…"


def parse_label(text: str, labels: list[str]) -> str:
    answer = text.strip()
    if answer in labels:
        return answer
    folded = answer.strip("\"'「」“”.。").casefold()
    matches = [label for label in labels if label.casefold() == folded]
    if len(matches) == 1:
        return matches[0]
    raise OutputFormatError(f"the answer is not one of the labels: {_shorten(answer)!r}")


_FENCE = re.compile(r"^```(?:json)?\s*\n(.*?)\n?```$", re.S)


def parse_json(text: str, schema: Mapping[str, Any]) -> Any:
    answer = text.strip()
    m = _FENCE.match(answer)
    if m:
        answer = m.group(1).strip()
    try:
        value = json.loads(answer)
    except json.JSONDecodeError as e:
        raise OutputFormatError(f"the answer is not valid JSON ({e.msg}): {_shorten(answer)!r}") from None
    from jsonschema import validators

    validator = validators.validator_for(schema)(schema)
    error = next(iter(sorted(validator.iter_errors(value), key=lambda e: list(e.path))), None)
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        raise OutputFormatError(
            f"the answer does not match the schema: {error.message}" + (f" (at {where})" if where else ""))
    return value


def parse_output(task: str, record: Mapping[str, Any], text: str) -> Any:
    """The task's output from the answer text; OutputFormatError when it does not parse."""
    if task == "classify":
        return parse_label(text, list(record["labels"]))
    if task == "extract":
        return parse_json(text, record["schema"])
    return text
