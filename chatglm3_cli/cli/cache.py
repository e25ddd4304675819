"""`chatglm3 cache`: the prompt cache on disk (evaluated prompts kept between runs)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from . import console as console_mod
from .errors import handle_errors
from .help import App

cache_app = App(help="The prompt cache: evaluated prompts kept on disk so that a later run, a resumed chat "
                     "or a restarted server does not evaluate them again. `chatglm3 cache` lists the "
                     "entries with their sizes; `chatglm3 cache clear` removes them.",
                no_args_is_help=False, invoke_without_command=True)


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


@cache_app.callback()
@handle_errors
def cache_list(ctx: typer.Context) -> None:
    """List the prompt cache's entries (most recently used first) and their total size."""
    if ctx.invoked_subcommand is not None:
        return
    import time

    from ..engine import promptcache

    con = console_mod.current()
    root = promptcache.cache_root()
    entries = promptcache.list_entries(root)
    state = "on" if promptcache.enabled() else "off (CHATGLM3_PROMPT_CACHE=0)"
    total = sum(e.bytes for e in entries)
    con.error(f"prompt cache: {root} ({state}), {len(entries)} entries, {_size(total)} of "
              f"{_size(promptcache.max_bytes())}")
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
        what = f"damaged: {e.error}" if e.error else (
            f"{e.tokens:>6} tokens  {e.model}" + (f"  conversation {e.conversation}" if e.conversation else ""))
        con.write(f"{e.path.name[:40]}  {when}  {_size(e.bytes):>10}  {what}\n")


@cache_app.command("clear")
@handle_errors
def cache_clear(
    conversation: Annotated[Optional[str], typer.Option(
        "--conversation", metavar="ID", help="Only the entries saved from this conversation.")] = None,
) -> None:
    """Remove the prompt cache's entries (all, or one conversation's)."""
    from ..engine import promptcache

    files, size = promptcache.clear(conversation=conversation)
    console_mod.current().error(f"removed {files} entries ({_size(size)})")
