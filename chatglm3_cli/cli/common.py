"""Model resolution for the CLI: the one place a model name becomes a file on disk."""
from __future__ import annotations

from typing import Any, Optional


def resolve_model_path(model: Optional[str], *, offline: Optional[bool] = None,
                       endpoint: Optional[str] = None) -> str:
    """-m/CHATGLM3_MODEL, then the config file, then the default; downloads a Hub model on first
    use with a progress display on stderr (see chatglm3_cli.hub.resolve)."""
    from ..hub.resolve import resolve_model
    from . import console as console_mod
    from .progress import make_progress

    report_config_problems(console_mod.current())
    progress = make_progress(console_mod.current())
    return str(resolve_model(model, offline=offline, endpoint=endpoint, progress=progress))


_reported: set[str] = set()


def report_config_problems(con: Any) -> None:
    """Unknown keys in the config file (a typo must not pass silently), each once per process."""
    from .. import config

    for line in config.load().problems:
        if line not in _reported:
            _reported.add(line)
            con.error(f"warning: {line}")
