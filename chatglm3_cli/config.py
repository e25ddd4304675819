"""The user's config file (`paths.config_file()`, TOML). Only simple `key = "value"` settings:

    model = "chatglm3-6b:q8_0"     # the model used when neither -m nor CHATGLM3_MODEL is given
"""
from __future__ import annotations

import re
from typing import Any

from .errors import ConfigError
from .paths import config_file

__all__ = ["ConfigError", "configured_model", "load"]


_LINE = re.compile(r'^\s*([A-Za-z_][\w-]*)\s*=\s*(?:"([^"]*)"|\'([^\']*)\'|(true|false|-?\d+))\s*(?:#.*)?$')


def _parse_minimal(text: str) -> dict[str, Any]:
    """Python 3.10 has no tomllib: the flat `key = value` subset this file needs."""
    out: dict[str, Any] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            raise ValueError(f"line {n}: expected key = \"value\"")
        key, dq, sq, bare = m.groups()
        if bare is None:
            out[key] = dq if dq is not None else sq
        else:
            out[key] = bare == "true" if bare in ("true", "false") else int(bare)
    return out


def load() -> dict[str, Any]:
    path = config_file()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ConfigError(f"cannot read the config file {path}: {e.strerror}") from e
    try:
        try:
            import tomllib
        except ImportError:  # Python 3.10
            return _parse_minimal(text)
        return tomllib.loads(text)
    except ValueError as e:  # tomllib.TOMLDecodeError is a ValueError
        raise ConfigError(f"the config file {path} is not valid TOML: {e}") from e


def configured_model() -> str | None:
    value = load().get("model")
    return str(value).strip() or None if value is not None else None
