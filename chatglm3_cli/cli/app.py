"""Assembles the Typer app. Commands live in their own modules and import the engine lazily,
so that `chatglm3 --help` never loads llama.cpp."""
from __future__ import annotations

import os
from typing import Annotated

import typer

from .. import __version__, env
from .batch import batch
from .bench import bench
from .cache import cache_app
from .chat import chat, history_app
from .help import App
from .models import models_app, pull
from .run import run
from .serve import serve
from .translate import translate

app = App(
    name="chatglm3",
    help="Run the ChatGLM3 language model locally (llama.cpp on CPU, CUDA or Metal).",
    epilog=env.help_epilog(),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"chatglm3 {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option(
        "--debug", help="Show tracebacks on errors (also CHATGLM3_DEBUG=1).")] = False,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    if debug:
        os.environ["CHATGLM3_DEBUG"] = "1"


app.command(name="chat")(chat)
app.command(name="run")(run)
app.command(name="translate")(translate)
app.command(name="batch")(batch)
app.add_typer(history_app, name="history")
app.command(name="pull")(pull)
app.add_typer(models_app, name="models")
app.command(name="bench")(bench)
app.command(name="serve")(serve)
app.add_typer(cache_app, name="cache")


def optional_values(argv: list[str]) -> list[str]:
    """`--ray` may stand alone (`--ray [ADDRESS]`: a local cluster for the job). Typer has no
    options with an optional value, so a bare `--ray` (last, or before another option or `-`)
    becomes `--ray=local` before parsing. Nothing after `--` is touched."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--":
            break
        if arg == "--ray" and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out[i] = "--ray=local"
    return out


def main() -> None:
    import sys

    from .console import plug_closed_std_streams

    plug_closed_std_streams()
    app(args=optional_values(sys.argv[1:]))
