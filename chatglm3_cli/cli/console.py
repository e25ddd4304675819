"""Where output goes, and what the terminal is. One object that tests can steer.

stdout carries the answer and nothing else; messages, stats and errors go to stderr.

``current()`` is the process's streams as they are now. Tests set the terminal facts without
touching the streams (like httpie's ``MockEnvironment``)::

    with console.terminal(stderr=True):       # stderr "is" a terminal: the rich displays
        CliRunner().invoke(app, [...])
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Any, Iterator, Optional, TextIO

from .. import env


def isatty(stream: Any) -> bool:
    """Whether a stream is a terminal (a closed or fake stream is not); the one copy of this test."""
    try:
        return bool(stream is not None and stream.isatty())
    except (ValueError, AttributeError):
        return False


@dataclass
class Console:
    stdin: TextIO
    stdout: TextIO
    stderr: TextIO
    # None: ask the stream; True/False: what tests (or callers) say it is
    stdin_tty: Optional[bool] = None
    stdout_tty: Optional[bool] = None
    stderr_tty: Optional[bool] = None

    @property
    def stdin_isatty(self) -> bool:
        return isatty(self.stdin) if self.stdin_tty is None else self.stdin_tty

    @property
    def stdout_isatty(self) -> bool:
        return isatty(self.stdout) if self.stdout_tty is None else self.stdout_tty

    @property
    def stderr_isatty(self) -> bool:
        return isatty(self.stderr) if self.stderr_tty is None else self.stderr_tty

    def write(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def error(self, line: str) -> None:
        self.stderr.write(line.rstrip("\n") + "\n")
        self.stderr.flush()

    def read_stdin_bytes(self, limit: int | None = None) -> bytes:
        """All of stdin, refusing more than `limit` bytes (default: files.MAX_TEXT_INPUT)."""
        from ..files import MAX_TEXT_INPUT, read_capped

        limit = MAX_TEXT_INPUT if limit is None else limit
        buf = getattr(self.stdin, "buffer", None)
        if buf is not None:
            return read_capped(buf, limit, "stdin")
        import io

        text = self.stdin.read(limit + 1)  # a text stream without a buffer (tests)
        return read_capped(io.BytesIO(text.encode("utf-8")), limit, "stdin")


class ClosedStdout:
    """sys.stdout when the process was started with stdout closed (``>&-``): every write is a
    broken pipe (exit 141, with one line that says why)."""

    closed_at_start = True

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "stdout is closed")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return 1


def plug_closed_std_streams() -> None:
    """Started with fd 0, 1 or 2 closed (``<&-``, ``>&-``): point the fd at /dev/null, so that
    the next file we or llama.cpp open cannot become "stdout" by taking the free number, and
    give Python a stream for it (stdin reads as empty; stdout raises BrokenPipeError)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        try:
            got = os.open(os.devnull, os.O_RDWR)
        except OSError:  # pragma: no cover - no /dev/null
            return
        if got != fd:
            os.dup2(got, fd)
            os.close(got)
        if fd == 0:
            sys.stdin = open(0, encoding="utf-8", closefd=False)
        elif fd == 1:
            sys.stdout = ClosedStdout()
        else:
            sys.stderr = open(2, "w", encoding="utf-8", closefd=False)


_facts: dict[str, Optional[bool]] = {"stdin_tty": None, "stdout_tty": None, "stderr_tty": None}


def current() -> Console:
    """The process's streams as they are now (CliRunner swaps sys.std* per invocation), with the
    terminal facts ``terminal()`` has set."""
    return Console(sys.stdin, sys.stdout, sys.stderr, **_facts)


@contextlib.contextmanager
def terminal(*, stdin: Optional[bool] = None, stdout: Optional[bool] = None,
             stderr: Optional[bool] = None) -> Iterator[None]:
    """Within the block, the streams given count as terminals (True) or not (False)."""
    saved = dict(_facts)
    for name, value in (("stdin_tty", stdin), ("stdout_tty", stdout), ("stderr_tty", stderr)):
        if value is not None:
            _facts[name] = value
    try:
        yield
    finally:
        _facts.update(saved)


def debug_enabled() -> bool:
    return env.flag("CHATGLM3_DEBUG")
