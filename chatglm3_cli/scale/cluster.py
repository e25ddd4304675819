"""Ray itself: importing the optional extra, and one connection for the length of one job.

``--ray`` takes an address: ``local`` (the default, also a bare ``--ray``) starts a private
cluster on this machine for the job and stops it after; ``auto`` joins RAY_ADDRESS or a cluster
already running here; anything else (``HOST:PORT``, ``ray://HOST:10001``) is passed to Ray.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any, Iterator

from .. import env
from ..errors import ClusterError, RayNotInstalledError

# The range pyproject's `ray` extra allows and the tests ran with (Ray Data's `concurrency`
# argument and its actor-pool defaults are what the driver relies on).
RAY_MIN = (2, 50)
RAY_BELOW = (3, 0)
LOCAL = "local"
AUTO = "auto"
LOCAL_OBJECT_STORE = 256 * 1024 * 1024  # records and answers are text: a small store is plenty
LOCAL_START_ATTEMPTS = 3


@dataclass(frozen=True)
class ClusterOptions:
    address: str = LOCAL
    workers: int = 1  # actors, each with the model loaded once
    worker_cpus: float = 1.0  # Ray CPUs per actor (and llama.cpp threads, unless --threads)
    worker_gpus: float = 0.0  # Ray GPUs per actor
    verbose: bool = False  # Ray's own warnings and native logs on stderr too

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError("workers must be >= 1")
        if self.worker_cpus <= 0 or self.worker_gpus < 0:
            raise ValueError("worker CPUs must be > 0 and worker GPUs >= 0")

    def describe(self, n_parallel: int) -> str:
        each = f"{self.worker_cpus:g} CPU" + (f", {self.worker_gpus:g} GPU" if self.worker_gpus else "")
        return (f"{self.workers} worker{'s' if self.workers != 1 else ''} ({each} each, "
                f"{n_parallel} sequences in flight each)")

    def n_parallel(self, given: int | None) -> int:
        """--parallel, else what suits the workers' hardware (not the driver's)."""
        return given if given is not None else (8 if self.worker_gpus > 0 else 4)

    @property
    def threads(self) -> int:
        """llama.cpp threads per worker: as many as the CPUs Ray gives the actor."""
        return max(1, int(self.worker_cpus))


def _version(text: str) -> tuple[int, int]:
    parts = (text.split(".") + ["0", "0"])[:2]
    try:
        return int(parts[0]), int(parts[1])
    except ValueError:
        return (0, 0)


def _local_auth(address: str | None) -> None:
    """Ray protects a new cluster with a token it saves in ~/.ray; a cluster of our own lives for
    one job, so its token lives in this process (and the cluster it starts) only. It must be set
    before Ray is imported: Ray reads it then, and a token set later reaches the cluster's
    processes but not this driver ("InvalidAuthToken", then "Failed to start GCS")."""
    if (address or LOCAL).strip() not in ("", LOCAL) or "ray" in sys.modules:
        return
    if env.get("RAY_AUTH_MODE") is None and env.get("RAY_AUTH_TOKEN") is None:
        import secrets

        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


def import_ray(address: str | None = None) -> Any:
    """The ``ray`` module with Ray Data, or RayNotInstalledError saying how to get it; ``address``
    is the job's --ray (a local cluster gets its own token first)."""
    _local_auth(address)
    try:
        import ray
        import ray.data  # noqa: F401  (pandas/pyarrow come with ray[data])
    except ImportError as e:
        missing = f" ({e.name} is missing)" if getattr(e, "name", None) else ""
        raise RayNotInstalledError(f"--ray needs Ray Data, which is not installed here{missing}") from None
    v = _version(getattr(ray, "__version__", "0"))
    if not RAY_MIN <= v < RAY_BELOW:
        raise RayNotInstalledError(
            f"--ray needs Ray >= {RAY_MIN[0]}.{RAY_MIN[1]}, < {RAY_BELOW[0]} (this is Ray {ray.__version__})")
    return ray


class Cluster:
    """A connected Ray: what the driver needs to know about it while a job runs."""

    def __init__(self, ray: Any, options: ClusterOptions, started: bool) -> None:
        self.ray = ray
        self.options = options
        self.started = started  # a local cluster of our own, stopped with the job

    def resources(self) -> dict[str, float]:
        try:
            return dict(self.ray.cluster_resources())
        except Exception:  # a Ray Client connection may not answer this
            return {}

    def check_room(self) -> str | None:
        """Refuse a worker that no node could ever hold on a cluster we started (it would wait
        forever); on another cluster, return a note (an autoscaler may still add nodes)."""
        res = self.resources()
        if not res:
            return None
        o = self.options
        problems = []
        if o.worker_gpus > 0 and res.get("GPU", 0) < o.worker_gpus:
            problems.append(f"--worker-gpus {o.worker_gpus:g} but the cluster has {res.get('GPU', 0):g} GPUs")
        if res.get("CPU", 0) < o.worker_cpus:
            problems.append(f"--worker-cpus {o.worker_cpus:g} but the cluster has {res.get('CPU', 0):g} CPUs")
        if not problems:
            return None
        if self.started:
            raise ClusterError("no worker fits this machine: " + "; ".join(problems),
                               hint="lower --worker-cpus/--worker-gpus, or join a bigger cluster with --ray ADDRESS")
        return "no worker fits the cluster yet (" + "; ".join(problems) + "): waiting for nodes to join"

    def workers_alive(self) -> int | None:
        """Ray Data actors of this job that are alive (None when Ray cannot say)."""
        try:
            from ray._private import state  # GCS-backed: works without the dashboard

            job = self.ray.get_runtime_context().get_job_id()
            n = 0
            for info in state.actors().values():
                if info.get("State") != "ALIVE":
                    continue
                if "MapWorker" not in str(info.get("ActorClassName", "")):
                    continue
                if str(info.get("JobID", job)) != str(job):
                    continue
                n += 1
            return n
        except Exception:
            return None


def _quiet(verbose: bool) -> None:
    # Ray and Ray Data log progress and advice to stderr: our progress display says what
    # matters, and failures come back as exceptions (one line from the CLI).
    level = logging.INFO if verbose else logging.ERROR
    for name in ("ray", "ray.data", "ray.data._internal"):
        logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def connect(options: ClusterOptions) -> Iterator[Cluster]:
    """Join (or start) the cluster for one job; a cluster started here is stopped after it."""
    if not options.verbose and env.get("RAY_BACKEND_LOG_LEVEL") is None:
        # native (C++) log lines of this process; a cluster started here inherits it too
        os.environ["RAY_BACKEND_LOG_LEVEL"] = "fatal"
    address = options.address.strip() or LOCAL
    ray = import_ray(address)
    _quiet(options.verbose)
    if ray.is_initialized():  # a library caller who connected already
        yield Cluster(ray, options, started=False)
        return
    kwargs: dict[str, Any] = {"log_to_driver": options.verbose,
                              "logging_level": logging.INFO if options.verbose else logging.ERROR}
    if address == LOCAL:
        kwargs.update(address="local", include_dashboard=False,
                      num_cpus=max(1, math.ceil(options.workers * options.worker_cpus)),
                      object_store_memory=LOCAL_OBJECT_STORE)
    else:
        _check_reachable(address)
        kwargs["address"] = address
    # Ray's driver prints its cluster's error messages on sys.stdout: never on ours
    with contextlib.redirect_stdout(_RayStdout(options.verbose)):
        # Starting a node has fixed time limits (30 s for the raylet to register, a few for the
        # GCS): on a machine busy enough to miss them, a cluster of our own is started again
        # (twice at most) rather than failing the job.
        attempts = LOCAL_START_ATTEMPTS if address == LOCAL else 1
        for attempt in range(1, attempts + 1):
            try:
                with (contextlib.nullcontext() if options.verbose else _native_stderr_silenced()):
                    ray.init(**kwargs)
                break
            except Exception as e:  # Ray raises plain Exception for some start-up failures
                with contextlib.suppress(Exception):
                    ray.shutdown()  # what this try started
                if attempt < attempts:
                    continue
                where = "start a local Ray cluster" if address == LOCAL else f"connect to the Ray cluster at {address}"
                raise ClusterError(f"cannot {where}: {_first_line(e)}") from None
        _quiet(options.verbose)
        # Ray's driver answers SIGTERM with a stack dump and exit status 15. Ours: the job
        # stops between lines, Ray is shut down quietly, and the process ends by the signal
        # itself (status 143 in a shell), as it would without --ray.
        main = threading.current_thread() is threading.main_thread()  # signals are the main thread's
        previous = signal.signal(signal.SIGTERM, _raise_terminated) if main else None
        terminated = False
        try:
            yield Cluster(ray, options, started=address == LOCAL)
        except Terminated:
            terminated = True
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
            with contextlib.suppress(Exception), contextlib.redirect_stderr(io.StringIO()):
                ray.shutdown()
        if terminated:
            sys.stderr.flush()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)


class Terminated(BaseException):
    """SIGTERM while a job runs on a cluster (a BaseException: no `except Exception` keeps it)."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


REACH_TIMEOUT_S = 10.0


class _RayStdout(io.TextIOBase):
    """Stands in for sys.stdout while Ray runs in this process: Ray prints its raylets' error
    messages there (a worker that died, a task that is retried). With --verbose they go to
    stderr as they are; otherwise a worker's death is one line on stderr, the rest dropped."""

    def __init__(self, verbose: bool) -> None:
        import sys

        super().__init__()
        self.verbose = verbose
        self.err = sys.stderr

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.verbose:
            self.err.write(text)
        elif "worker died or was killed" in text:
            self.err.write("ray: a worker process died; Ray starts it again and reruns its records\n")
        return len(text)

    def flush(self) -> None:
        self.err.flush()


def _check_reachable(address: str) -> None:
    """A HOST:PORT (or ray://HOST:PORT) where nothing answers fails here in seconds; Ray itself
    keeps retrying for minutes."""
    import socket

    if address == AUTO:
        return  # Ray finds it (RAY_ADDRESS, or the cluster started on this machine) and says so
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ClusterError(f"--ray {address}: expected HOST:PORT, ray://HOST:PORT, 'auto' or 'local'")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_TIMEOUT_S):
            pass
    except OSError as e:
        raise ClusterError(f"cannot connect to the Ray cluster at {address}: "
                           f"{e.strerror or type(e).__name__}") from None


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Ray's C++ core prints a line of its own while it starts (even the one saying that
    RAY_BACKEND_LOG_LEVEL quietens it): point file descriptor 2 elsewhere for that moment.
    Failures still come back as exceptions."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError, AttributeError):  # no real stderr (a test runner's capture)
        yield
        return
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]
