"""`chatglm3 chat` and `chatglm3 history`."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Annotated, Any, Callable, Iterator, Optional

import typer

from . import console as console_mod
from .errors import UsageError, handle_errors
from .help import App
from .options import ModelArgs, SamplingArgs, SamplingParams, SystemArgs, with_options
from .tooling import ToolArgs
from .visible import visible

if TYPE_CHECKING:  # pragma: no cover
    from ..chat.history import Conversation, ConversationStore
    from ..engine.model import Model
    from ..engine.prompt import Message


@handle_errors
@with_options
def chat(
    plain: Annotated[bool, typer.Option("--plain", help="Raw text instead of rendered Markdown.")] = False,
    no_save: Annotated[bool, typer.Option("--no-save", help="Do not save this conversation.")] = False,
    cont: Annotated[bool, typer.Option("--continue", help="Resume the last saved conversation.")] = False,
    resume: Annotated[Optional[str], typer.Option(
        "--resume", help="Resume a saved conversation by id (see `chatglm3 history`).", metavar="ID")] = None,
    stats: Annotated[bool, typer.Option("--stats", help="Show token counts and speed after each answer.")] = False,
    model: ModelArgs = ModelArgs.options(),
    sampling: SamplingParams = SamplingArgs.options(),
    system: SystemArgs = SystemArgs.options(),
    tool_args: ToolArgs = ToolArgs.options(),
) -> None:
    """Chat interactively. Ctrl-C stops an answer; Ctrl-D or /exit leaves; /help lists commands.

    Piped text becomes the first message: cat notes.md | chatglm3 chat
    """
    from ..chat.session import ChatSession
    from ..textio import decode_text
    from . import tooling
    from .render import MarkdownRenderer, PlainRenderer
    from .repl import ChatREPL

    con = console_mod.current()
    first: Optional[str] = None
    if not con.stdin_isatty:
        first = decode_text(con.read_stdin_bytes(), "stdin").strip() or None

    with chat_terminal(con) as term:  # the /dev/tty files are closed however the chat ends
        if not term.interactive and not first:
            raise UsageError("nothing to answer: no terminal to chat on and nothing piped in")
        if cont and resume:
            raise UsageError("use either --continue or --resume, not both")
        sys_text = system.text()
        store, conversation, restored = open_conversation(no_save, cont, resume, model.label)
        if restored and conversation is not None and conversation.model and model.model is None:
            model = replace(model, model=conversation.model)  # the conversation's own model
            con.error(f"model: {conversation.model} (the conversation's; -m picks another)")
        history, writable = input_history(con) if term.interactive else (None, True)
        if not writable:
            store = None

        rich_out = con.stdout_isatty and not plain
        if con.stderr_isatty:
            con.error("loading model…")
        toolbox = tool_args.toolbox()
        approvals = tooling.chat_approvals(tool_args.yes) if toolbox is not None else None
        # The interpreter's kernel ends with the chat, and so does the model answering then
        # (/load may have switched to another: closing is idempotent, the first one's too).
        with tooling.closing(toolbox), contextlib.ExitStack() as models:
            m = models.enter_context(model.open())
            if toolbox is not None:
                tooling.check_model(m, toolbox)
                sys_text = toolbox.system_prompt(sys_text)
            session = ChatSession(m, system=sys_text, params=sampling, tools=tooling.specs(toolbox))
            models.callback(lambda: session.model.close())
            from ..engine import promptcache

            pc = promptcache.of(m)
            if pc is not None and store is not None and conversation is not None:
                pc.conversation = conversation.id  # its cached prompts go when it is deleted
            if restored:
                session.load(restored)
                if sys_text:
                    session.system = sys_text
                assert conversation is not None
                con.error(f"resumed conversation {conversation.id} ({len(session.messages)} messages, "
                          f"context: {session.context_used} of {session.n_ctx} tokens)")
            renderer = MarkdownRenderer if rich_out else PlainRenderer
            repl = ChatREPL(
                session, out=con.stdout, err=con.stderr, make_renderer=lambda: renderer(con.stdout),
                pt_input=term.pt_input, pt_output=term.pt_output, history=history, store=store,
                conversation=conversation, stats=stats, model_label=model.label or str(m.path),
                tty_fd=term.tty_fd if term.interactive else None, toolbox=toolbox, approvals=approvals,
                max_tool_calls=tool_args.max_tool_calls, interactive=term.interactive,
                open_model=model_opener(model, con))
            if term.interactive and con.stderr_isatty:
                con.error(f"chatting with {visible(m.name)} · /help for commands · Ctrl-D or /exit to leave")
            if toolbox is not None and con.stderr_isatty:
                con.error("tools the model may call (/tools lists them):\n" + tooling.list_tools(toolbox))
            code = repl.run(first, interactive=term.interactive)
    raise typer.Exit(code)


@dataclass
class ChatTerminal:
    """Where typing comes from and prompts go: the terminal, even when stdin is a pipe."""

    interactive: bool
    pt_input: Any = None  # prompt_toolkit input on /dev/tty (stdin was a pipe)
    pt_output: Any = None  # prompt_toolkit output on /dev/tty (stdout is redirected)
    tty_fd: Optional[int] = None


@contextlib.contextmanager
def chat_terminal(con: console_mod.Console) -> Iterator[ChatTerminal]:
    """Open /dev/tty where stdin or stdout is not the terminal (cat notes | chatglm3 chat, or
    chat > log); the files are closed however the chat ends. Without a terminal the chat is not
    interactive: it answers what was piped and exits."""
    with contextlib.ExitStack() as files:
        term = ChatTerminal(interactive=con.stdin_isatty,
                            tty_fd=_fileno(con.stdin) if con.stdin_isatty else None)
        if not con.stdin_isatty:
            try:
                tty_in = files.enter_context(open("/dev/tty"))
                term.tty_fd = tty_in.fileno()
                from prompt_toolkit.input import create_input

                term.pt_input = create_input(stdin=tty_in)
                term.interactive = True
            except OSError:
                term.interactive = False
        if term.interactive and not con.stdout_isatty:
            # Prompts belong on the terminal, never in redirected output.
            try:
                tty_out = files.enter_context(open("/dev/tty", "w"))
                from prompt_toolkit.output import create_output

                term.pt_output = create_output(stdout=tty_out)
            except OSError:
                term.interactive = False
        yield term


def open_conversation(no_save: bool, cont: bool, resume: Optional[str], label: str
                      ) -> tuple[Optional[ConversationStore], Optional[Conversation], list[Message]]:
    """(the store to save into, or None with --no-save; the conversation, new or resumed; the
    messages restored from it)."""
    from ..chat.history import Conversation, ConversationStore, message_from_record

    store = None if no_save else ConversationStore()
    conversation = None
    restored: list[Message] = []
    if cont or resume:
        src_store = store or ConversationStore()
        conversation = src_store.load(resume) if resume else src_store.latest()
        _report_skipped(src_store)
        if conversation is None:
            raise UsageError("there is no saved conversation to continue")
        restored = [message_from_record(d) for d in conversation.messages]
    if store is not None and conversation is None:
        import time

        now = time.time()
        conversation = Conversation(id=store.new_id(), created=now, updated=now, model=label)
    return store, conversation, restored


def model_opener(args: ModelArgs, con: console_mod.Console) -> Callable[[str, str], Optional[tuple[Model, str]]]:
    """How /load opens the model a saved conversation names: as `-m REF` would (a local file, an
    alias, a name from `models add` with its chat template, a hub or ms:// ref, the offline
    rules), with this chat's other model options. None when REF is the running model's file."""

    def open_model(ref: str, running: str) -> Optional[tuple[Model, str]]:
        named = replace(args, model=ref, chat_template=_chat_template(args, ref))
        path = named.path()  # a missing file, a bad ref or offline: refused before anything loads
        if _same_file(path, running):
            return None
        if con.stderr_isatty:
            con.error(f"loading model {visible(ref)}…")
        return named.open(), named.label

    return open_model


def _chat_template(args: ModelArgs, ref: str) -> Optional[str]:
    """The chat template for another model: its own from the config ([models.NAME]), else the one
    typed with --chat-template; never the running model's configured one (made for that model)."""
    from .. import config
    from ..hub.resolve import model_name

    cfg = config.load()
    own = cfg.settings(ref)
    if own is not None and own.chat_template:
        return own.chat_template
    running = cfg.settings(model_name(args.model))
    if running is not None and running.chat_template == args.chat_template:
        return None
    return args.chat_template


def _same_file(a: str, b: str) -> bool:
    import os

    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def input_history(con: console_mod.Console) -> tuple[Any, bool]:
    """What was typed in earlier chats (Up, Ctrl-R), unless CHATGLM3_NOHISTORY is set; and
    whether the data dir can be written (a read-only one: said once, and nothing is saved)."""
    from .. import env
    from ..paths import data_dir

    if env.flag("CHATGLM3_NOHISTORY"):
        return None, True
    from prompt_toolkit.history import FileHistory

    path = data_dir() / "input_history"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab"):
            pass
        return FileHistory(str(path)), True
    except OSError as e:
        con.error(f"warning: cannot write to {path.parent} ({e.strerror or e}): "
                  f"input history and this conversation are not saved")
        return None, False


def _fileno(f: object) -> Optional[int]:
    try:
        return f.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None


history_app = App(help="Saved conversations: `chatglm3 history` lists them, newest first; show, export or delete "
                       "one by its ID.", no_args_is_help=False, invoke_without_command=True)


@history_app.callback()
@handle_errors
def history_list(ctx: typer.Context) -> None:
    """List saved conversations (newest first)."""
    if ctx.invoked_subcommand is not None:
        return
    import time

    from ..chat.history import ConversationStore

    con = console_mod.current()
    store = ConversationStore()
    convs = store.list()
    _report_skipped(store)
    if not convs:
        con.error("no saved conversations yet")
        return
    for c in convs:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(c.updated))
        con.write(f"{c.id}  {when}  {c.turns:>3} turns  {c.title}\n")


def _report_skipped(store: "ConversationStore") -> None:
    """One line per conversation file that could not be read (the others still work)."""
    con = console_mod.current()
    for path, why in store.skipped[:10]:
        con.error(f"warning: skipped {path.name}: {why.replace(str(path), path.name)}")
    if len(store.skipped) > 10:
        con.error(f"warning: skipped {len(store.skipped) - 10} more unreadable conversation files")


@history_app.command("show")
@handle_errors
def history_show(conv_id: Annotated[str, typer.Argument(
        metavar="ID", help="A conversation's id as `chatglm3 history` lists it (a unique prefix is enough).")],
) -> None:
    """Print a saved conversation."""
    from ..chat.history import ConversationStore, to_markdown

    console_mod.current().write(to_markdown(ConversationStore().load(conv_id)))


@history_app.command("export")
@handle_errors
def history_export(
    conv_id: Annotated[str, typer.Argument(
        metavar="ID", help="A conversation's id as `chatglm3 history` lists it (a unique prefix is enough).")],
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT", help="md or json.")] = "md",
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o", metavar="FILE", show_default="stdout",
        help="Write to a file ('-': stdout).")] = None,
) -> None:
    """Export a saved conversation as Markdown or JSON (OpenAI messages shape)."""
    import json
    from pathlib import Path

    from ..chat.history import ConversationStore, to_markdown
    from ..errors import OutputWriteError
    from ..files import atomic_write_text, is_stdout_name

    if fmt not in ("md", "json"):
        raise UsageError("--format must be md or json")
    conv = ConversationStore().load(conv_id)
    messages = [{k: v for k, v in m.items() if k != "token_ids"} for m in conv.messages]  # OpenAI's shape
    text = to_markdown(conv) if fmt == "md" else json.dumps(
        {"id": conv.id, "model": conv.model, "messages": messages}, ensure_ascii=False, indent=2) + "\n"
    if output and not is_stdout_name(output):
        try:
            atomic_write_text(Path(output), text)  # a symlink is written through; a device refused
        except OSError as e:
            raise OutputWriteError(f"cannot write {output}: {e.strerror or e}") from None
        console_mod.current().error(f"wrote {output}")
    else:
        console_mod.current().write(text)


@history_app.command("delete")
@handle_errors
def history_delete(conv_id: Annotated[str, typer.Argument(
        metavar="ID", help="A conversation's id as `chatglm3 history` lists it (a unique prefix is enough).")],
) -> None:
    """Delete a saved conversation (and what the prompt cache keeps of it)."""
    from ..chat.history import ConversationStore

    conv = ConversationStore().delete(conv_id)
    console_mod.current().error(f"deleted {conv.id}")
