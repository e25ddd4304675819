"""The interactive chat loop: prompt-toolkit input, slash commands, streamed answers.

Ctrl-C stops the answer, not the session; on an empty line it says how to leave. Ctrl-D,
/exit (/bye, /quit) and ChatGLM3's demo words (exit, quit, stop) leave with code 0.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, TextIO

from ..chat.history import Conversation, ConversationStore, message_record, messages_to_json, read_transcript
from ..chat.session import ChatSession
from ..errors import ChatGLM3Error, OutputWriteError
from ..files import atomic_write_text
from ..textio import read_text_file
from .console import isatty
from .errors import format_error
from .render import Renderer
from .visible import visible

if TYPE_CHECKING:  # pragma: no cover
    from ..engine.model import Model

# Opens a model by reference as `chat -m REF` would, given the running model's file: (the model,
# its label as saved), or None when REF resolves to that file. cli/chat.py makes it;
# ChatGLM3Error when the model cannot be opened.
ModelOpener = Callable[[str, str], "tuple[Model, str] | None"]

# The slash commands and their help, in the order /help lists them; each /NAME is handled by
# ChatREPL.cmd_NAME (one list: the dispatch and the help cannot drift apart).
COMMANDS = {
    "/help": "show this help",
    "/exit": "leave (also /bye, /quit, exit, quit, stop, Ctrl-D)",
    "/clear": "forget the conversation, keep the system prompt (also: clear)",
    "/system": "/system [TEXT]: show or set the system prompt",
    "/set": "/set KEY VALUE: temperature, top_p, top_k, max_tokens, seed, repeat_penalty",
    "/show": "model, parameters, and how full the context is",
    "/regen": "answer the last message again",
    "/read": "/read FILE: add a text file to your next message",
    "/save": '/save [FILE]: write {"model", "messages"} JSON (OpenAI-style messages)',
    "/load": "/load FILE: replace the conversation with a saved one, switching to its model",
    "/stats": "/stats [on|off]: show token counts and speed after each answer",
    "/tools": "list the tools the model may call (--tools, --tool-json, --code)",
}
EXIT_WORDS = {"/exit", "/bye", "/quit", "exit", "quit", "stop"}
SET_KEYS = {"temperature": float, "top_p": float, "top_k": int, "max_tokens": int, "seed": int,
            "repeat_penalty": float}
HELP_TEXT = "\n".join(f"  {name:<8} {text}" for name, text in COMMANDS.items()) + (
    '\n  Alt-Enter (Esc Enter) inserts a newline; """ starts and ends a multi-line block;'
    "\n  Ctrl-C stops an answer; Up/Ctrl-R search earlier input; Tab completes commands and paths.")


class _Leave(Exception):
    pass


class ChatREPL:
    def __init__(self, session: ChatSession, *, out: TextIO, err: TextIO,
                 make_renderer: Callable[[], Renderer], pt_input: Any = None, pt_output: Any = None,
                 history: Any = None, store: ConversationStore | None = None,
                 conversation: Conversation | None = None, stats: bool = False,
                 model_label: str = "", tty_fd: int | None = None, toolbox: Any = None,
                 approvals: Any = None, max_tool_calls: int = 5, interactive: bool = True,
                 open_model: ModelOpener | None = None) -> None:
        self.session = session
        self.out = out
        self.err = err
        self.make_renderer = make_renderer
        self.pt_input = pt_input
        self.pt_output = pt_output
        self.history = history
        self.store = store
        self.conversation = conversation
        self.stats = stats
        self.model_label = model_label
        self.open_model = open_model  # /load of another model's conversation switches with it
        self.tty_fd = tty_fd  # the terminal typed on: no echo while an answer streams
        self.pending_files: list[tuple[str, str]] = []
        self._prompt: Any = None
        self._approve_prompt: Any = None
        # Tools: what the model may call, who approves, and a call the user must answer
        # (a --tool-json tool): their next message is its observation.
        self.toolbox = toolbox
        self.max_tool_calls = max_tool_calls
        self.awaiting: Any = None
        if toolbox is not None and approvals is None:
            from ..tools.chain import Approvals

            approvals = Approvals(self._ask_approval if interactive else None)
        self.approvals = approvals

    # output ------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        """Messages of the tool itself (not the model's answer)."""
        self.err.write(text.rstrip("\n") + "\n")
        self.err.flush()

    # input -------------------------------------------------------------------------------

    def _prompt_session(self) -> Any:
        if self._prompt is None:
            from prompt_toolkit import PromptSession
            from prompt_toolkit.history import InMemoryHistory
            from prompt_toolkit.key_binding import KeyBindings

            kb = KeyBindings()

            @kb.add("escape", "enter")
            def _newline(event: Any) -> None:
                event.current_buffer.insert_text("\n")

            @kb.add("c-c")
            def _ctrl_c(event: Any) -> None:
                buf = event.current_buffer
                if buf.text:
                    buf.reset()
                else:
                    event.app.exit(exception=KeyboardInterrupt())

            self._prompt = PromptSession(
                history=self.history or InMemoryHistory(), completer=_make_completer(),
                key_bindings=kb, input=self.pt_input, output=self.pt_output,
                complete_while_typing=False)
        return self._prompt

    def read_message(self) -> str | None:
        """One message from the user; None when they leave with Ctrl-D."""
        ps = self._prompt_session()
        while True:
            try:
                line = ps.prompt(">>> ")
            except KeyboardInterrupt:
                self.say("(use /exit or Ctrl-D to leave)")
                continue
            except EOFError:
                return None
            stripped = line.strip()
            if stripped.startswith('"""'):
                return self._read_block(ps, stripped[3:])
            return line

    def _read_block(self, ps: Any, first: str) -> str:
        lines = []
        rest = first
        while True:
            if rest.rstrip().endswith('"""'):
                lines.append(rest.rstrip()[:-3])
                return "\n".join(lines).strip("\n")
            lines.append(rest)
            try:
                rest = ps.prompt("... ")
            except KeyboardInterrupt:
                self.say("(block cancelled)")
                return ""
            except EOFError:
                return "\n".join(lines).strip("\n")

    # the loop ----------------------------------------------------------------------------

    def run(self, first_message: str | None = None, *, interactive: bool = True) -> int:
        if first_message:
            if interactive:  # piped text: shown as if typed, so the answer has its question above it
                self.say(_as_typed(first_message))
            self.answer(first_message)
        if not interactive:
            return 0
        while True:
            text = self.read_message()
            if text is None:
                return 0
            try:
                if not self.handle(text):
                    return 0
            except _Leave:
                return 0

    def handle(self, text: str) -> bool:
        """Act on one line of input; False means leave."""
        word = text.strip()
        if not word:
            return True
        if word in EXIT_WORDS:
            if not word.startswith("/"):  # a plain word may have been meant as a message: say why we leave
                self.say(f"leaving ({word!r} ends the chat, as /exit and Ctrl-D do)")
            return False
        if word == "clear":
            word = "/clear"
        if word.startswith("/") and not word.startswith("//"):
            name, _, arg = word.partition(" ")
            self.command(name, arg.strip())
            return True
        self.answer(text)
        return True

    def answer(self, text: str) -> None:
        if self.pending_files:
            parts = [f"File {name}:\n```\n{content}\n```" for name, content in self.pending_files]
            text = "\n\n".join(parts + [text])
            self.pending_files = []
        role = "user"
        if self.awaiting is not None:
            role, self.awaiting = "observation", None
        try:
            turn = self.session.ask(text, role=role)
        except ChatGLM3Error as e:
            self.say(format_error(e))
            return
        self._answer(turn)

    def _answer(self, turn: Any) -> None:
        """Stream the answer; with tools, follow the model's calls (with approval)."""
        if self.toolbox is None:
            self._stream(turn)
            return
        from .tooling import chain_end_note, follow_calls

        try:
            chain = follow_calls(self.session, turn, self.toolbox, self.approvals, err=self.err,
                                 stream=self._stream, max_calls=self.max_tool_calls)
        except ChatGLM3Error as e:  # the kernel did not start, a prompt too long for the context...
            self.say(format_error(e))
            self.autosave()
            return
        except KeyboardInterrupt:  # at the approval prompt or between a call and its result
            self.say("(tool calls stopped; the chat goes on)")
            self.autosave()
            return
        self.awaiting = chain.pending
        note = chain_end_note(chain, self.max_tool_calls, in_chat=True)
        if note:
            self.say(note)
        self.autosave()

    def _ask_approval(self, call: Any) -> str:
        from .console import isatty
        from .tooling import APPROVE_PROMPT, parse_answer, show_call

        workdir = self.toolbox.interpreter.workdir if self.toolbox.interpreter is not None else None
        show_call(self.err, call, color=isatty(self.err), workdir=workdir)
        if self._approve_prompt is None:
            from prompt_toolkit import PromptSession

            self._approve_prompt = PromptSession(input=self.pt_input, output=self.pt_output)
        try:
            return parse_answer(self._approve_prompt.prompt(APPROVE_PROMPT))
        except EOFError:
            return "no"  # Ctrl-D refuses this call; Ctrl-C (KeyboardInterrupt) stops the chain

    def _stream(self, turn: Any) -> None:
        notice = self.session.take_dropped_notice(turn.dropped)
        if notice:
            self.say(f"note: {notice}")
        interrupted = False
        with _no_echo(self.tty_fd), _Spinner(self.err if isatty(self.err) else None) as spinner:
            renderer = self.make_renderer()
            try:
                for piece in turn:
                    spinner.stop()
                    # Ctrl-C lands between two pieces, never inside the renderer: a write cut
                    # short there leaves its buffer to be written again (the answer's first
                    # line shown twice above [interrupted]).
                    with _sigint_deferred():
                        renderer.feed(piece)
            except KeyboardInterrupt:
                spinner.stop()
                interrupted = True
                turn.close()
            except ChatGLM3Error as e:
                spinner.stop()
                turn.close()
                with _sigint_deferred(swallow=True):
                    renderer.finish()
                self.say(format_error(e))
                return
            spinner.stop()
            with _sigint_deferred(swallow=True):  # a second Ctrl-C: the answer is stopped already
                renderer.finish(interrupted=interrupted)
        if turn.result is not None and turn.result.finish_reason == "length":
            from .run import cut_off_note

            self.say(cut_off_note(turn.result, self.session.params, self.session.n_ctx))
        if self.stats and turn.result is not None:
            self.say(stats_line(turn.result, self.session))
        self.autosave()

    def autosave(self) -> None:
        if self.store is None or self.conversation is None:
            return
        self.conversation.messages = [message_record(m) for m in self.session.all_messages()]
        try:
            self.store.save(self.conversation)
        except OSError as e:
            # Once, not after every answer: the chat goes on without saving.
            self.say(f"warning: could not save the conversation ({e.strerror or e}): "
                     f"it is not saved from now on (/save FILE still works)")
            self.store = None

    # commands ----------------------------------------------------------------------------

    def command(self, name: str, arg: str) -> None:
        if name in EXIT_WORDS:
            raise _Leave
        handler = getattr(self, "cmd_" + name[1:], None) if name in COMMANDS else None
        if handler is None:
            self.say(f"unknown command {name} (type /help for the list)")
            return
        try:
            handler(arg)
        except ChatGLM3Error as e:
            self.say(format_error(e))

    def cmd_help(self, arg: str) -> None:
        self.say(HELP_TEXT)

    def cmd_tools(self, arg: str) -> None:
        from .tooling import list_tools

        if self.toolbox is None:
            self.say("no tools (start chat with --tools FILE.py, --tool-json FILE or --code)")
            return
        self.say("tools the model may call:\n" + list_tools(self.toolbox))
        if self.approvals is not None and self.approvals.approve_all:
            self.say("every call runs without asking (--yes)")
        elif self.approvals is not None and self.approvals.always:
            self.say("approved for this session: " + ", ".join(sorted(self.approvals.always)))

    def cmd_clear(self, arg: str) -> None:
        self.session.clear()
        self.awaiting = None
        self.pending_files = []
        self.say("conversation cleared" + (" (system prompt kept)" if self.session.system else ""))
        self.autosave()

    def cmd_system(self, arg: str) -> None:
        if not arg:
            self.say(f"system prompt: {self.session.system!r}" if self.session.system else "no system prompt")
            return
        self.session.system = arg
        self.say("system prompt set")
        self.autosave()

    def cmd_set(self, arg: str) -> None:
        key, _, value = arg.partition(" ")
        key, value = key.strip().replace("-", "_"), value.strip()
        if key not in SET_KEYS:
            self.say(f"unknown setting {key!r}; one of: {', '.join(SET_KEYS)}")
            return
        if not value:
            self.say(f"usage: /set {key} VALUE")
            return
        try:
            parsed: Any = None if value.lower() in ("none", "off") and key in ("max_tokens", "seed") \
                else SET_KEYS[key](value)
            self.session.params = _replace(self.session.params, key, parsed)
        except ValueError as e:
            self.say(f"bad value for {key}: {value!r} ({e})")
            return
        self.say(f"{key} = {parsed}")

    def cmd_show(self, arg: str) -> None:
        s = self.session
        p = s.params
        used = s.context_used
        self.say(f"model: {visible(str(self.model_label or s.model.path))} ({s.model.family})")
        self.say(f"parameters: temperature={p.temperature} top_p={p.top_p} top_k={p.top_k} "
                 f"max_tokens={p.max_tokens} seed={p.seed} repeat_penalty={p.repeat_penalty}")
        self.say(f"context: {used} of {s.n_ctx} tokens used ({100 * used // max(1, s.n_ctx)}%)"
                 + (f", {s.window_start} old messages outside the window" if s.window_start else ""))
        self.say(f"system prompt: {s.system!r}" if s.system else "system prompt: none")
        self.say(f"messages: {len(s.messages)}" + (f", saved as {self.conversation.id}"
                                                    if self.conversation and self.store else ", not saved"))

    def cmd_regen(self, arg: str) -> None:
        try:
            turn = self.session.regen()
        except ValueError as e:
            self.say(str(e))
            return
        self._answer(turn)

    def cmd_read(self, arg: str) -> None:
        if not arg:
            self.say("usage: /read FILE")
            return
        path = os.path.expanduser(arg)
        content = read_text_file(path)
        self.pending_files.append((Path(path).name, content))
        self.say(f"read {Path(path).name} ({len(content)} characters): it goes with your next message")

    def cmd_save(self, arg: str) -> None:
        target = Path(os.path.expanduser(arg)) if arg else Path(
            f"chat-{self.conversation.id if self.conversation else 'transcript'}.json")
        text = messages_to_json(self.session.all_messages(), model=self.model_ref) + "\n"
        try:  # a symlink is written through; a directory, device or FIFO is refused
            atomic_write_text(target, text)
        except OutputWriteError as e:
            self.say(f"error: {e.message}")
            return
        except OSError as e:
            self.say(f"error: cannot write {target}: {e.strerror}")
            return
        self.say(f"saved {len(self.session.all_messages())} messages to {target}")

    @property
    def model_ref(self) -> str:
        """The running model as `chat -m` takes it (what /save records and /load compares)."""
        return self.model_label or str(self.session.model.path)

    def cmd_load(self, arg: str) -> None:
        if not arg:
            self.say("usage: /load FILE")
            return
        transcript = read_transcript(os.path.expanduser(arg))
        if transcript.model and not self._runs(transcript.model) and not self._switch_model(transcript.model, arg):
            return  # the model could not be opened: the conversation is left as it was
        self.session.load(transcript.messages)
        self.say(f"loaded {len(transcript.messages)} messages from {arg}")
        self.autosave()

    def _runs(self, ref: str) -> bool:
        """Whether ``ref`` names the model this chat runs (its label, or its file)."""
        if ref == self.model_ref:
            return True
        path = os.path.expanduser(ref)
        try:
            return ref.lower().endswith(".gguf") and os.path.samefile(path, self.session.model.path)
        except (OSError, ValueError):
            return False

    def _switch_model(self, ref: str, source: str) -> bool:
        """Open ``ref`` and answer with it from now on; False (one line said, nothing changed)
        when it cannot be opened or cannot run this chat's tools."""
        if self.open_model is None:  # no way to open models here: the running one answers
            self.say(f"note: {source} was saved with {visible(ref)}; {visible(self.model_ref)} goes on answering")
            return True
        try:
            opened = self.open_model(ref, str(self.session.model.path))
        except ChatGLM3Error as e:
            self.say(f"{format_error(e)}; kept {visible(self.model_ref)} and the conversation")
            return False
        except KeyboardInterrupt:  # Ctrl-C during a download: the chat goes on as it was
            self.say(f"(stopped; kept {visible(self.model_ref)} and the conversation)")
            return False
        if opened is None:  # another name for the running model's file: nothing to load
            return True
        model, label = opened
        if self.toolbox is not None:
            from .tooling import check_model

            style = self.toolbox.style
            try:
                check_model(model, self.toolbox)
            except ChatGLM3Error as e:
                self.toolbox.style = style
                model.close()
                self.say(f"error: not switching to {visible(label)}: {e.message} (the chat has tools); "
                         f"kept {visible(self.model_ref)} and the conversation")
                return False
        self.session.switch_model(model).close()  # the old model's llama.cpp memory goes now
        from ..engine import promptcache

        pc = promptcache.of(model)
        if pc is not None and self.store is not None and self.conversation is not None:
            pc.conversation = self.conversation.id  # its cached prompts go when it is deleted
        self.model_label = label
        if self.conversation is not None:
            self.conversation.model = label  # `chat --continue` comes back to this model
        self.say(f"model: {visible(label)} (from {source})")
        return True

    def cmd_stats(self, arg: str) -> None:
        if arg.lower() in ("on", "off"):
            self.stats = arg.lower() == "on"
        elif not arg:
            self.stats = not self.stats
        else:
            self.say("usage: /stats [on|off]")
            return
        self.say(f"stats {'on' if self.stats else 'off'}")


@contextlib.contextmanager
def _sigint_deferred(*, swallow: bool = False) -> Iterator[None]:
    """Hold Ctrl-C until the block is done, then raise KeyboardInterrupt (or drop it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda sig, _frame: got.append(sig))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if got and not swallow:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _no_echo(fd: int | None) -> Iterator[None]:
    """Turn the terminal's echo off while an answer streams. Keys typed meanwhile still wait in
    the terminal for the next prompt, but are not echoed into the middle of the answer, where
    the extra line would throw off the live display's cursor arithmetic (an answer shown twice)."""
    try:
        import termios
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    if fd is None:
        yield
        return
    try:
        old = termios.tcgetattr(fd)
    except (termios.error, OSError):
        yield
        return
    new = list(old)
    new[3] &= ~termios.ECHO
    try:
        termios.tcsetattr(fd, termios.TCSANOW, new)  # TCSANOW: typed-ahead keys are kept
        yield
    finally:
        try:
            termios.tcsetattr(fd, termios.TCSANOW, old)
        except (termios.error, OSError):
            pass


def _as_typed(text: str, max_lines: int = 5) -> str:
    """A piped first message as the prompt would have shown it (long ones cut to a few lines)."""
    lines = text.splitlines() or [""]
    shown = "\n... ".join(lines[:max_lines])
    more = f"\n... ({len(lines) - max_lines} more lines)" if len(lines) > max_lines else ""
    return f">>> {shown}{more}"


class _Spinner:
    """A spinner on the terminal while the prompt is evaluated (before the answer's first piece):
    a long conversation takes minutes on a CPU, and a blank screen looks hung. Shown only after
    a moment, so that quick prompts (most turns, a restored conversation) never flash it."""

    DELAY_S = 0.5
    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, err: TextIO | None) -> None:
        self.err = err
        self._stopped = threading.Event()
        self._shown = False
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "_Spinner":
        if self.err is not None:
            self._thread = threading.Thread(target=self._spin, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spin(self) -> None:
        assert self.err is not None
        if self._stopped.wait(self.DELAY_S):
            return
        i = 0
        while not self._stopped.is_set():
            self._shown = True
            self.err.write(f"\r{self.FRAMES[i % len(self.FRAMES)]} reading the prompt…")
            self.err.flush()
            i += 1
            self._stopped.wait(0.1)

    def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._thread is not None:
            self._thread.join()
        if self._shown and self.err is not None:
            self.err.write("\r\x1b[K")  # the line is erased before the answer starts
            self.err.flush()


def _replace(params: Any, key: str, value: Any) -> Any:
    from dataclasses import replace

    return replace(params, **{key: value})


def stats_line(result: Any, session: ChatSession) -> str:
    t = result.timings
    pt = f"{t.prompt_tps:.1f} tok/s" if t.prompt_tps else "-"
    gt = f"{t.generation_tps:.1f} tok/s" if t.generation_tps else "-"
    from ..engine import promptcache

    pc = promptcache.of(session.model)
    disk = f", {pc.restored} from the disk cache" if pc is not None and pc.restored else ""
    return (f"[{t.prompt_tokens} new prompt tokens ({result.cached_tokens} cached{disk}) {pt} | "
            f"{result.completion_tokens} tokens {gt} | context {session.context_used}/{session.n_ctx}]")


def _make_completer() -> Any:
    """Commands at the start of a line; file paths after /read, /load and /save."""
    from prompt_toolkit.completion import Completer, PathCompleter, WordCompleter
    from prompt_toolkit.document import Document

    class _Completer(Completer):
        def __init__(self) -> None:
            self.words = WordCompleter(list(COMMANDS) + ["/bye", "/quit"], sentence=True)
            self.paths = PathCompleter(expanduser=True)

        def get_completions(self, document: Any, complete_event: Any) -> Iterable[Any]:
            text = document.text_before_cursor
            for cmd in ("/read ", "/load ", "/save "):
                if text.startswith(cmd):
                    sub = Document(text[len(cmd):], len(text) - len(cmd))
                    yield from self.paths.get_completions(sub, complete_event)
                    return
            if text.startswith("/") and " " not in text:
                yield from self.words.get_completions(document, complete_event)

    return _Completer()
