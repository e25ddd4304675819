"""--help that reads the way a user expects: placeholders, not type names.

Typer labels values by their Python type (``<bool>`` on flags, ``<int range> [x>=1]``,
``<list[str]>``) and writes required arguments as ``{PATH}``. Every command and group of the
app is built with the classes below (``app.command(cls=HelpCommand)``, ``typer.Typer(cls=
HelpGroup)``), which show flags bare, options by their metavar (declare one: ``N``, ``PATH``,
``LANG``...), and arguments as ``PATH...`` / ``[PROMPT]...`` in the usage line. A test renders
every --help at 80 and 120 columns and fails on a type-like placeholder.
"""
from __future__ import annotations

import inspect
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

_FALLBACK = {"int": "N", "float": "X", "str": "TEXT"}


def _plain(param: Any) -> None:
    if getattr(param, "_plain_help", False):
        return
    param._plain_help = True
    if isinstance(param, TyperOption):
        if param.is_flag:
            param.metavar = ""  # a flag takes no value: nothing to show
        elif param.metavar is None:
            param.metavar = _FALLBACK.get(param.bare_type(), "VALUE")
        # "[x>=1]" after every number reads like a formula; out-of-range values are refused
        # with the range in the message
        setattr(param, "_get_number_range_help_str", lambda: None)  # noqa: B010
    elif isinstance(param, TyperArgument):
        setattr(param, "display_type_rich", lambda ctx: None)  # noqa: B010  # the name says it

        def usage_name(p: TyperArgument = param) -> str:
            name = (p.metavar or p.display_name_raw.upper()).removesuffix("...")  # a metavar as written
            name = name if p.required else f"[{name}]"
            return name + "..." if p.nargs != 1 else name

        setattr(param, "_usage_display_name", usage_name)  # noqa: B010


def unwrap(text: Any) -> Any:
    """Docstrings are wrapped for the source; on screen a paragraph is one line that the
    terminal's width wraps (Typer's rich mode would keep every source line break)."""
    if not isinstance(text, str):
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


class _PlainHelp:
    """For commands and groups alike: unwrapped help text, placeholders instead of types."""

    help: Any
    short_help: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help, self.short_help = unwrap(self.help), unwrap(self.short_help)

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for p in params:
            _plain(p)
        return params


class HelpCommand(_PlainHelp, TyperCommand):
    pass


class HelpGroup(_PlainHelp, TyperGroup):
    pass


class App(typer.Typer):
    """The app and its sub-apps: every group and command renders its help as above."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cls=HelpGroup, **kwargs)

    def command(self, *args: Any, cls: Any = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or HelpCommand, **kwargs)
