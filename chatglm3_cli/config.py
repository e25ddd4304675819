"""The user's config file (`paths.config_file()`, TOML):

    model = "chatglm3-6b:q8_0"     # the model used when neither -m nor CHATGLM3_MODEL is given
    source = "modelscope"          # where aliases are read from: hub (the default) or modelscope

    [models.gemma]                 # `chatglm3 models add gemma ~/gemma-2b.gguf --chat-template gemma`
    path = "/home/me/gemma-2b.gguf"
    chat_template = "gemma"
    system = "Answer briefly."
    temperature = 0.2              # also top_p, top_k, repeat_penalty, max_tokens, seed

    [models."chatglm3-6b"]         # settings for a Hub or ModelScope model: no path
    temperature = 0.5

A `[models.NAME]` table with a path makes NAME a model of its own (`-m NAME`); its settings
apply whenever that model is named, unless the command line gives the same option.

The file is the user's, yet it is read with care: only a regular file (a FIFO or a device such
as /dev/zero is refused instead of hanging or reading forever), at most MAX_BYTES, valid UTF-8
and TOML, each key known and of its type (an unknown key is reported with the nearest known
one, not silently ignored).
"""
from __future__ import annotations

import difflib
import errno
import json
import os
import re
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import ConfigError
from .paths import config_file

__all__ = ["Config", "ConfigError", "ModelSettings", "add_model", "configured_model", "load",
           "remove_model"]

MAX_BYTES = 1 << 20  # a config file is a few lines; anything this big is a mistake
MAX_VALUE_CHARS = 4096  # a model name, a path, a system prompt (longer ones belong in a file)
NAME_RE = re.compile(r"[A-Za-z0-9][\w.-]{0,63}")  # no '/' or ':': never read as a repo or a quant

# The settings a [models.NAME] table may hold: key -> (the types it takes, a description).
MODEL_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "path": ((str,), "a .gguf file"),
    "chat_template": ((str,), "a Jinja file or a llama.cpp template name"),
    "system": ((str,), "a system prompt"),
    "temperature": ((int, float), "a number >= 0"),
    "top_p": ((int, float), "a number from 0 to 1"),
    "top_k": ((int,), "an integer >= 0"),
    "repeat_penalty": ((int, float), "a number >= 0"),
    "max_tokens": ((int,), "an integer >= 1"),
    "seed": ((int,), "an integer"),
}
TOP_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "model": ((str,), "a model name"),
    "source": ((str,), '"hub" or "modelscope"'),
    "models": ((dict,), "tables of per-model settings"),
}
_RANGES = {"temperature": (0, float("inf")), "top_p": (0, 1), "top_k": (0, float("inf")),
           "repeat_penalty": (0, float("inf")), "max_tokens": (1, float("inf"))}
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "repeat_penalty", "max_tokens", "seed")


@dataclass(frozen=True)
class ModelSettings:
    """One [models.NAME] table: a local model when `path` is set, else settings for a name."""

    name: str
    path: Optional[str] = None
    chat_template: Optional[str] = None
    system: Optional[str] = None
    sampling: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    model: Optional[str] = None
    source: Optional[str] = None
    models: dict[str, ModelSettings] = field(default_factory=dict)
    problems: tuple[str, ...] = ()  # unknown keys, each a line to show as a warning
    path: Optional[Path] = None

    def settings(self, name: Optional[str]) -> Optional[ModelSettings]:
        """The table for a model as the user named it (`chatglm3-6b:Q8_0` also finds
        [models."chatglm3-6b:Q8_0"], then [models."chatglm3-6b"])."""
        if not name:
            return None
        return self.models.get(name) or self.models.get(name.partition(":")[0])


def _read_bounded(path: Path) -> Optional[bytes]:
    """The file's bytes, or None when there is no file. Never blocks on a FIFO, never reads
    past MAX_BYTES, and a folder that is a file (HOME set to a file) means "no config"."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno in (errno.ENOTDIR, errno.ENOENT):
            return None
        raise ConfigError(f"cannot read the config file {path}: {e.strerror}") from e
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"the config file {path} is not a regular file (a FIFO, a device or a folder)")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read the config file {path}: {e.strerror}") from e
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise ConfigError(f"the config file {path} is larger than {MAX_BYTES:,} bytes")
    return data


def _parse(data: bytes, path: Path) -> dict[str, Any]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"the config file {path} is not UTF-8 text (byte {e.start})") from None
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10: the same parser, as a package
        import tomli as tomllib
    try:
        return tomllib.loads(text)
    except ValueError as e:  # tomllib.TOMLDecodeError is a ValueError
        raise ConfigError(f"the config file {path} is not valid TOML: {str(e)[:200]}") from e
    except RecursionError:
        raise ConfigError(f"the config file {path} is nested too deeply") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check(where: str, key: str, value: Any, known: dict[str, tuple[tuple[type, ...], str]],
           path: Path, problems: list[str]) -> bool:
    """Whether `key = value` is usable; an unknown key is a problem to report (a typo must not
    pass silently), a known key of the wrong type or size a ConfigError."""
    if key not in known:
        near = difflib.get_close_matches(key, known, n=1)
        problems.append(f"{path}: unknown key {_short(key)}{where}"
                        + (f" (did you mean {near[0]}?)" if near else f" (known: {', '.join(known)})"))
        return False
    types, what = known[key]
    if isinstance(value, bool) or not isinstance(value, types):
        raise ConfigError(f"the config file {path}: {key}{where} must be {what}, not {_short(value)}")
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        raise ConfigError(f"the config file {path}: {key}{where} is {len(value):,} characters long "
                          f"(at most {MAX_VALUE_CHARS:,})")
    return True


def _model_table(name: str, table: Any, path: Path, problems: list[str]) -> ModelSettings:
    where = f" in [models.{_short(name)}]"
    if not isinstance(table, dict):
        raise ConfigError(f"the config file {path}: models.{_short(name)} must be a table")
    if len(name) > 200:
        raise ConfigError(f"the config file {path}: a model name is {len(name):,} characters long")
    good = {k: v for k, v in table.items() if _check(where, k, v, MODEL_KEYS, path, problems)}
    for key, (lo, hi) in _RANGES.items():
        if key in good and not (lo <= good[key] <= hi):
            raise ConfigError(f"the config file {path}: {key}{where} must be {MODEL_KEYS[key][1]}, "
                              f"not {good[key]!r}")
    return ModelSettings(name, path=good.get("path"), chat_template=good.get("chat_template"),
                         system=good.get("system"), sampling={k: good[k] for k in SAMPLING_KEYS if k in good})


def load() -> Config:
    """The config file, checked (ConfigError when it cannot be used); an empty Config without one."""
    path = config_file()
    data = _read_bounded(path)
    if data is None:
        return Config()
    raw = _parse(data, path)
    problems: list[str] = []
    good = {k: v for k, v in raw.items() if _check("", k, v, TOP_KEYS, path, problems)}
    source = good.get("source")
    if source is not None and source not in ("hub", "modelscope"):
        raise ConfigError(f"the config file {path}: source must be \"hub\" or \"modelscope\", not {_short(source)}")
    models = {str(n): _model_table(str(n), t, path, problems) for n, t in good.get("models", {}).items()}
    model = good.get("model")
    return Config(model=model.strip() or None if model is not None else None, source=source,
                  models=models, problems=tuple(problems), path=path)


def configured_model() -> Optional[str]:
    return load().model


# Writing: `models add` appends a table, `models rm` removes one; the rest of the file (comments,
# order) is left as the user wrote it.

def _toml_string(value: str) -> str:
    # JSON's escapes are TOML's; DEL is the one control character JSON leaves raw
    return json.dumps(value).replace("\x7f", "\\u007f")


def _header(name: str) -> str:
    return f"[models.{_toml_string(name)}]"


def add_model(settings: ModelSettings) -> Path:
    """Append `settings` as a [models.NAME] table; refuses a name already there."""
    if not NAME_RE.fullmatch(settings.name):
        raise ConfigError(f"{_short(settings.name)} cannot name a model: use letters, digits, '.', '_' "
                          "or '-' (at most 64, no '/' or ':')", hint="pick another name")
    cfg = load()
    if settings.name in cfg.models:
        raise ConfigError(f"{settings.name} is already in {config_file()}",
                          hint=f"remove it first: chatglm3 models rm {settings.name}")
    lines = ["", _header(settings.name)]
    values: dict[str, Any] = {"path": settings.path, "chat_template": settings.chat_template,
                              "system": settings.system, **settings.sampling}
    for key, value in values.items():
        if value is None:
            continue
        text = _toml_string(value) if isinstance(value, str) else repr(value)
        lines.append(f"{key} = {text}")
    path = config_file()
    old = (_read_bounded(path) or b"").decode("utf-8")
    new = old + ("\n" if old and not old.endswith("\n") else "") + "\n".join(lines).lstrip("\n") + "\n"
    _parse(new.encode(), path)  # what we write must read back
    _write(path, new)
    return path


def remove_model(name: str) -> bool:
    """Delete the [models.NAME] table (header to the next table). False when it is not there as
    a table this tool can find (a hand-written dotted or inline form is left alone)."""
    path = config_file()
    data = _read_bounded(path)
    if data is None:
        return False
    lines = data.decode("utf-8").splitlines(keepends=True)
    headers = {_header(name), f"[models.{name}]", f"[models.'{name}']"}
    start = next((i for i, line in enumerate(lines) if line.strip() in headers), None)
    if start is None:
        return False
    end = next((j for j in range(start + 1, len(lines)) if lines[j].lstrip().startswith("[")), len(lines))
    _write(path, "".join(lines[:start] + lines[end:]))
    return True


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        raise ConfigError(f"cannot write the config file {path}: {e.strerror}") from e
