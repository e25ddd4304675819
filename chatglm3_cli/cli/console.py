"""Where output goes, and what the terminal is. One object that tests can replace.

stdout carries the answer and nothing else; messages, stats and errors go to stderr.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TextIO

from .. import env


def _isatty(stream: TextIO | None) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (ValueError, AttributeError):
        return False


@dataclass
class Console:
    stdin: TextIO
    stdout: TextIO
    stderr: TextIO

    @property
    def stdin_isatty(self) -> bool:
        return _isatty(self.stdin)

    @property
    def stdout_isatty(self) -> bool:
        return _isatty(self.stdout)

    @property
    def stderr_isatty(self) -> bool:
        return _isatty(self.stderr)

    def write(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def error(self, line: str) -> None:
        self.stderr.write(line.rstrip("\n") + "\n")
        self.stderr.flush()

    def read_stdin_bytes(self) -> bytes:
        buf = getattr(self.stdin, "buffer", None)
        if buf is not None:
            return buf.read()
        data = self.stdin.read()
        return data.encode("utf-8") if isinstance(data, str) else data


def current() -> Console:
    """The process's streams as they are now (CliRunner swaps sys.std* per invocation)."""
    return Console(sys.stdin, sys.stdout, sys.stderr)


def debug_enabled() -> bool:
    value = (env.get("CHATGLM3_DEBUG") or "").lower()
    return value not in ("", "0", "false", "no", "off")
