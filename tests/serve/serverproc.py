"""A real `chatglm3 serve` process on a free 127.0.0.1 port, for the tests."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

KEY = "test-key-123"
START_TIMEOUT = 180  # loading and binding on a busy 2-core machine
STOP_TIMEOUT = 120


def child_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("CHATGLM3_MODEL", "CHATGLM3_DEBUG", "CHATGLM3_API_KEY", "HF_TOKEN"):
        env.pop(var, None)
    env.update(CHATGLM3_CONFIG_DIR=str(tmp / "config"), CHATGLM3_STATE_DIR=str(tmp / "state"),
               HF_HOME=str(tmp / "hf-home"), HF_HUB_CACHE=str(tmp / "hf-cache"),
               HF_ENDPOINT="http://127.0.0.1:9", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost",
               PYTHONUNBUFFERED="1")
    return env


class Server:
    def __init__(self, model: Path, tmp: Path, *args: str, api_key: str | None = KEY,
                 env: dict[str, str] | None = None, max_files: int | None = None) -> None:
        cmd = [sys.executable, "-m", "chatglm3_cli", "serve", "-m", str(model), "--port", "0", *args]
        if api_key:
            cmd += ["--api-key", api_key]
        self.api_key = api_key
        self.stderr: list[str] = []

        def limit_files() -> None:  # in the child: RLIMIT_NOFILE lowered, as `ulimit -n` would
            import resource
            resource.setrlimit(resource.RLIMIT_NOFILE, (max_files, max_files))

        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env={**child_env(tmp), **(env or {})},
                                     preexec_fn=limit_files if max_files else None)
        self._ready = threading.Event()
        self.url = ""
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._ready.wait(START_TIMEOUT) or not self.url:
            self.kill()
            raise RuntimeError("the server did not start:\n" + "".join(self.stderr))

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)
            m = re.search(r"listening on (http://\S+)", line)
            if m:
                self.url = m.group(1)
                self._ready.set()
        self._ready.set()

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def client(self, **kw):
        import openai

        kw.setdefault("api_key", self.api_key or "none")
        return openai.OpenAI(base_url=self.base_url, max_retries=0, timeout=kw.pop("timeout", 300), **kw)

    def http(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=300, trust_env=False)

    def metrics(self) -> dict[str, float]:
        with self.http() as h:
            text = h.get("/metrics").text
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def wait_metrics(self, pred, timeout: float = 120) -> dict[str, float]:
        """Poll /metrics until pred(metrics) holds (generous: the machine is busy)."""
        deadline = time.monotonic() + timeout
        while True:
            m = self.metrics()
            if pred(m):
                return m
            if time.monotonic() > deadline:
                raise AssertionError(f"metrics never satisfied the condition: {m}")
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
