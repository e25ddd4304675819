"""ChatGLM3's code interpreter: one Jupyter kernel per conversation.

As in the official composite_demo, the model writes an ``interpreter`` message holding a
```python block; the code runs in a persistent IPython kernel (jupyter_client + ipykernel) and
its output comes back as the observation, cut to ``MAX_OBSERVATION_CHARS`` characters and
marked " [TRUNCATED]"; an image comes back as "[Image]" and is saved as a PNG file in the
working directory. Nothing here asks for consent: callers run a cell only after approval.

The kernel starts in its own session (jupyter_client does that), so a Ctrl-C typed in the
terminal reaches only us; we pass it on with ``interrupt_kernel`` and the chat goes on.
"""
from __future__ import annotations

import base64
import os
import queue
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import InterpreterError

# The official demo's system prompt for the interpreter mode (composite_demo/demo_ci.py).
INTERPRETER_SYSTEM_PROMPT = (
    "你是一位智能AI助手，你叫ChatGLM，你连接着一台电脑，但请注意不能联网。在使用Python解决任务时，"
    "你可以运行代码并得到结果，如果运行结果有错误，你需要尽可能对代码进行改进。你可以处理用户上传到电脑上的文件，"
    "文件默认存储路径是/mnt/data/。")
INTERPRETER_METADATA = "interpreter"
MAX_OBSERVATION_CHARS = 1024  # the official demo's truncate_length
DEFAULT_TIMEOUT = 60.0
_MAX_COLLECT = 1 << 20  # never hold more than 1 MiB of a cell's output in memory
_ANSI = re.compile(r"(\x9B|\x1B\[)[0-?]*[ -/]*[@-~]")
_FENCE = re.compile(r"```([^\n]*)\n(.*?)```", re.DOTALL)


def extract_code(text: str) -> str | None:
    """The code of an interpreter message: its last fenced block (as the official demo reads it)."""
    blocks = _FENCE.findall(text)
    if blocks:
        return blocks[-1][1]
    return None


def truncate(text: str, limit: int = MAX_OBSERVATION_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + " [TRUNCATED]"


@dataclass
class CellResult:
    text: str = ""              # stdout, stderr, results and tracebacks, in order (ANSI removed)
    images: list[Path] = field(default_factory=list)
    error: bool = False         # the cell raised
    timed_out: bool = False
    interrupted: bool = False   # Ctrl-C while it ran

    def observation(self, limit: int = MAX_OBSERVATION_CHARS) -> str:
        """What goes back to the model."""
        if self.timed_out:
            text = (self.text.rstrip() + "\n" if self.text.strip() else "") + "Timed out"
            return truncate(text, limit)
        if self.images and not self.text.strip():
            return "[Image]"
        text = truncate(self.text.strip("\n"), limit)
        if self.images:
            text = (text + "\n" if text else "") + "[Image]"
        return text


# Names that look like they hold a secret: the model's code has no business reading them.
_SECRET = re.compile(r"TOKEN|SECRET|PASSW|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL|AUTH|SESSION|COOKIE",
                     re.IGNORECASE)


def kernel_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the kernel starts with: ours, less every secret-looking variable
    (HF_TOKEN, OPENAI_API_KEY, AWS_SECRET_ACCESS_KEY, ...) unless CHATGLM3_CODE_ENV names it."""
    from .. import env

    source = os.environ if environ is None else environ
    keep = {n.strip() for n in (env.get("CHATGLM3_CODE_ENV") or "").split(",") if n.strip()}
    return {k: v for k, v in source.items() if k in keep or not _SECRET.search(k)}


class Interpreter:
    """A persistent Python kernel working in ``workdir`` (a new temporary directory when None).
    The kernel starts on the first cell; ``close`` shuts it down."""

    def __init__(self, workdir: str | Path | None = None, *, timeout: float = DEFAULT_TIMEOUT,
                 startup_timeout: float = 120.0) -> None:
        if workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="chatglm3-code-"))
        else:
            self.workdir = Path(workdir).expanduser()
            if self.workdir.exists() and not self.workdir.is_dir():
                raise InterpreterError(f"--workdir {self.workdir} is not a directory", hint="name a directory")
            try:
                self.workdir.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise InterpreterError(f"cannot create {self.workdir}: {e.strerror}",
                                       hint="name another directory") from e
        self.workdir = self.workdir.resolve()
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self._km: Any = None
        self._kc: Any = None
        self._images = 0

    @property
    def started(self) -> bool:
        return self._km is not None

    def start(self) -> None:
        if self._km is not None:
            return
        try:
            from jupyter_client import KernelManager
        except ImportError as e:
            raise InterpreterError("the code interpreter needs jupyter_client and ipykernel") from e
        try:
            import ipykernel  # noqa: F401  (the kernel runs in this same Python)
        except ImportError as e:
            raise InterpreterError("the code interpreter needs ipykernel") from e
        km = KernelManager(kernel_name="python3")
        try:
            km.start_kernel(cwd=str(self.workdir), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=kernel_env())
            kc = km.client()
            kc.start_channels()
            kc.wait_for_ready(timeout=self.startup_timeout)
        except Exception as e:
            try:
                km.shutdown_kernel(now=True)
            except Exception:
                pass
            raise InterpreterError(f"the Python kernel did not start: {e}") from e
        self._km, self._kc = km, kc

    def run(self, code: str) -> CellResult:
        """Run one cell; a timeout or Ctrl-C interrupts the kernel and returns what came out."""
        self.start()
        kc = self._kc
        msg_id = kc.execute(code, store_history=True, allow_stdin=False)
        result = CellResult()
        parts: list[str] = []
        size = 0
        deadline = time.monotonic() + self.timeout
        stop_at: float | None = None  # after an interrupt: how long we still wait for "idle"
        while True:
            now = time.monotonic()
            if stop_at is None and now >= deadline:
                result.timed_out = True
                self.interrupt()
                stop_at = now + 10
            if stop_at is not None and now >= stop_at:
                break
            try:
                msg = kc.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                if not self._km.is_alive():
                    parts.append("\nThe kernel died.")
                    result.error = True
                    self._forget()
                    break
                continue
            except KeyboardInterrupt:
                result.interrupted = True
                self.interrupt()
                stop_at = time.monotonic() + 10
                continue
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            text = ""
            if kind == "status" and content.get("execution_state") == "idle":
                break
            if kind == "stream":
                text = content.get("text", "")
            elif kind in ("execute_result", "display_data"):
                data = content.get("data", {})
                if "image/png" in data:
                    saved = self._save_png(data["image/png"])
                    if isinstance(saved, Path):
                        result.images.append(saved)
                    else:
                        text = saved + "\n"
                elif "text/plain" in data:
                    text = data["text/plain"] + "\n"
            elif kind == "error":
                result.error = True
                lines = content.get("traceback") or [f"{content.get('ename')}: {content.get('evalue')}"]
                text = "\n".join(lines) + "\n"
            if text and size < _MAX_COLLECT:
                text = text[: _MAX_COLLECT - size]
                size += len(text)
                parts.append(text)
        result.text = _ANSI.sub("", "".join(parts))
        return result

    def interrupt(self) -> None:
        if self._km is not None:
            try:
                self._km.interrupt_kernel()
            except Exception:
                pass

    def _save_png(self, b64: str) -> Path | str:
        """The saved image's path, or why it could not be saved (then the cell's text says
        so: no "[Image]" and no path for an image that does not exist). Names are taken
        exclusively: an existing file or link named image-N.png is never written through."""
        try:
            data = base64.b64decode(b64, validate=True)
        except ValueError:
            return "[image not saved: the kernel sent no valid PNG data]"
        while True:
            self._images += 1
            path = self.workdir / f"image-{self._images}.png"
            try:
                with open(path, "xb") as f:
                    try:
                        f.write(data)
                    except OSError:
                        path.unlink(missing_ok=True)  # ours, and only part of an image
                        raise
            except FileExistsError:
                continue
            except OSError as e:
                return f"[image not saved: cannot write {path}: {e.strerror or e}]"
            return path

    def _forget(self) -> None:
        try:
            self._kc.stop_channels()
        except Exception:
            pass
        self._km = self._kc = None

    def close(self) -> None:
        """Shut the kernel down (idempotent)."""
        km, kc = self._km, self._kc
        self._km = self._kc = None
        if kc is not None:
            try:
                kc.stop_channels()
            except Exception:
                pass
        if km is not None:
            try:
                km.shutdown_kernel(now=True)
            except Exception:
                pass

    def __enter__(self) -> "Interpreter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
