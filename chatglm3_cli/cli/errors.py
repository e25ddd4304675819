"""The one error policy at the edge: typed library errors become one line and an exit code.

Tracebacks only with --debug or CHATGLM3_DEBUG=1. Ctrl-C exits 130; a closed stdout (`| head`)
is not a crash.
"""
from __future__ import annotations

import functools
import os
import sys
import traceback
from typing import Any, Callable, TypeVar

import typer

from ..errors import (
    BatchFailedError,
    ChatGLM3Error,
    ConfigError,
    DiskFullError,
    DownloadError,
    DownloadInProgressError,
    EndpointError,
    GenerationError,
    InputError,
    InsecureBindError,
    InterpreterError,
    InvalidJobsError,
    ManifestMismatchError,
    ModelError,
    NetworkError,
    OutputFormatError,
    OutputWriteError,
    PromptTooLongError,
    ResultsInUseError,
    ServeError,
    TranslationFailedError,
)
from . import console as console_mod
from .exit_codes import ExitCode

F = TypeVar("F", bound=Callable[..., Any])

class UsageError(ChatGLM3Error):
    """Bad command-line use that Typer itself cannot see (e.g. no prompt at all)."""


# Each typed error, or its nearest listed base, has a named code; tests check that every
# ChatGLM3Error subclass finds one here other than FAILURE (which means a bug). Subclasses
# come before their bases: the first match wins.
_CODES: list[tuple[type[BaseException], ExitCode]] = [
    (UsageError, ExitCode.USAGE),
    (InterpreterError, ExitCode.USAGE),  # --code without its packages, a bad --workdir
    (InvalidJobsError, ExitCode.STRICT_INVALID_INPUT),  # before InputError, its base
    (ManifestMismatchError, ExitCode.MANIFEST_MISMATCH),
    (BatchFailedError, ExitCode.PARTIAL_FAILURE),
    (ResultsInUseError, ExitCode.USAGE),  # the same job started twice at once
    (DownloadInProgressError, ExitCode.USAGE),  # `models rm` while that model is being pulled
    (EndpointError, ExitCode.USAGE),  # --endpoint / HF_ENDPOINT that is not a URL
    (TranslationFailedError, ExitCode.TRANSLATE_FAILED),
    (OutputWriteError, ExitCode.OUTPUT_ERROR),
    (ModelError, ExitCode.MODEL_ERROR),
    (InputError, ExitCode.INPUT_ERROR),
    (PromptTooLongError, ExitCode.PROMPT_TOO_LONG),
    (GenerationError, ExitCode.GENERATION_ERROR),
    (NetworkError, ExitCode.NETWORK_ERROR),
    (DiskFullError, ExitCode.DISK_FULL),
    (DownloadError, ExitCode.DOWNLOAD_ERROR),
    (ConfigError, ExitCode.CONFIG_ERROR),
    (OutputFormatError, ExitCode.GENERATION_ERROR),  # an answer that does not parse as asked
    (InsecureBindError, ExitCode.USAGE),  # before ServeError, its base
    (ServeError, ExitCode.SERVE_ERROR),
]


def exit_code_for(exc: BaseException) -> ExitCode:
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return ExitCode.FAILURE


def format_error(exc: ChatGLM3Error) -> str:
    return f"error: {exc.describe()}"


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def handle_errors(func: F) -> F:
    """Wrap a command: the single place where exceptions turn into messages and exit codes."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        con = console_mod.current()
        debug = console_mod.debug_enabled()
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            con.error("interrupted")
            raise typer.Exit(ExitCode.INTERRUPTED) from None
        except BrokenPipeError:
            if getattr(sys.stdout, "closed_at_start", False):  # `>&-`: say why nothing came out
                con.error("error: stdout is closed: there is nowhere to write the answer")
            else:  # `| head` closed it on purpose: nothing to report
                _silence_stdout()
            raise typer.Exit(ExitCode.BROKEN_PIPE) from None
        except ChatGLM3Error as e:
            if debug:
                traceback.print_exc(file=con.stderr)
            con.error(format_error(e))
            raise typer.Exit(exit_code_for(e)) from None
        except Exception as e:  # a bug: one line, unless asked for the traceback
            if debug:
                traceback.print_exc(file=con.stderr)
            else:
                con.error(f"error: unexpected {type(e).__name__}: {e} (rerun with --debug for details)")
            raise typer.Exit(ExitCode.FAILURE) from None

    wrapper.handles_errors = True  # type: ignore[attr-defined]  # checked by tests/cli/test_errors.py
    return wrapper  # type: ignore[return-value]
