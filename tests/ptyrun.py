"""Run a command with stdin, stdout and stderr on a pseudo-terminal, as a person would."""
from __future__ import annotations

import os
import pty
import select
import subprocess
import time


def run_in_pty(env, argv, timeout=60):
    """Run with stdin, stdout and stderr on a pseudo-terminal; return (exit code, screen text)."""
    master, slave = pty.openpty()
    p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif p.poll() is not None:
            break
    else:
        p.kill()
        raise AssertionError("the command hung on a terminal")
    os.close(master)
    return p.wait(timeout=10), b"".join(chunks).decode(errors="replace")
