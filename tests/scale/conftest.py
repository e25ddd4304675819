"""A real Ray cluster on this machine for the --ray tests, kept small (2 CPUs, no dashboard, a
small object store), started once for this package (tests/scale) by a process of ours and
stopped with it when the package's last test is done: the tests only submit jobs to it, a start
costs 8-17 s of wall time on 2 busy cores, and an idle cluster left up would still use CPU while the rest
of the suite runs.

The cluster's owner is a child process that calls ray.init() and waits on its stdin: closing
stdin makes it call ray.shutdown(); if it dies anyway, Ray's own processes share its fate. The
tests check that no Ray process of theirs is left behind.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

# Ray reads its token settings when it is imported: set before anything imports it. The test
# cluster, the drivers started by tests and this process all share one token (nothing is
# written to ~/.ray). The root conftest clears RAY_* for each test; _ray_token sets it again.
RAY_AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
os.environ.update(RAY_AUTH)


@pytest.fixture(autouse=True)
def _ray_token(monkeypatch):
    for k, v in RAY_AUTH.items():
        monkeypatch.setenv(k, v)

OWNER = r"""
import json, sys, ray
ray.init(num_cpus=int(sys.argv[1]), include_dashboard=False, object_store_memory=96 * 1024 * 1024,
         _temp_dir=sys.argv[2], log_to_driver=False, logging_level="WARNING")
ctx = ray.get_runtime_context()
print(json.dumps({"address": ctx.gcs_address}), flush=True)
sys.stdin.read()  # until the test closes it
ray.shutdown()
"""


def have_ray() -> bool:
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        return False
    return True


needs_ray = pytest.mark.skipif(not have_ray(), reason="Ray is not installed (pip install '.[ray]')")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc: Linux)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def ray_processes_using(temp_dir: str) -> list[int]:
    """Ray's daemons started for a cluster whose session lives in ``temp_dir``."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and temp_dir in cmdline(int(d.name)):
            out.append(int(d.name))
    return out


class RayCluster:
    def __init__(self, env: dict[str, str], cpus: int = 2) -> None:
        # a short path: Ray's unix sockets live under it (108-byte limit)
        self.temp_dir = tempfile.mkdtemp(prefix="cg3ray", dir="/tmp")
        self.proc = subprocess.Popen([sys.executable, "-c", OWNER, str(cpus), self.temp_dir], env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        import json

        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            self.proc.kill()
            raise RuntimeError("the Ray cluster did not start")
        self.address = json.loads(line)["address"]

    def workers(self, name: str = "MapWorker") -> list[int]:
        return [p for p in descendants(self.proc.pid) if name in cmdline(p)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        deadline = time.monotonic() + 60
        while ray_processes_using(self.temp_dir) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = ray_processes_using(self.temp_dir)
        for pid in left:  # ours, found by the session directory we gave them
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        assert not left, f"Ray processes left behind: {[cmdline(p)[:80] for p in left]}"


def cluster_env(base: Path) -> dict[str, str]:
    """What every process of the test cluster sees: isolated caches, no real Hub."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "CHATGLM3_MODEL", "CHATGLM3_DEBUG")}
    env.update(RAY_AUTH)
    env.update(HF_HOME=str(base / "hf-home"), HF_HUB_CACHE=str(base / "hf-cache"),
               CHATGLM3_CONFIG_DIR=str(base / "config"), CHATGLM3_STATE_DIR=str(base / "state"),
               CHATGLM3_CACHE_DIR=str(base / "cache"),
               HF_ENDPOINT="http://127.0.0.1:9", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    return env


@pytest.fixture(scope="package")
def ray_cluster(tmp_path_factory):
    if not have_ray():
        pytest.skip("Ray is not installed (pip install '.[ray]')")
    cluster = RayCluster(cluster_env(tmp_path_factory.mktemp("raycluster")))
    yield cluster
    cluster.stop()
