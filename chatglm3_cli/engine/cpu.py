"""CPU facts and the OpenMP settings llama.cpp runs under (no llama_cpp import here).

llama-cpp-python's CPU build uses OpenMP for its thread pool. By default libgomp's worker
threads spin at every barrier (hundreds per token), so two processes that generate at the
same time on the same cores stall each other: measured on 2 cores with the 6B-shaped Q4_0
file, a chat beside one batch job fell to 0.30x of its speed alone (0.54x with passive
waiting; a fair share is 0.5x), and beside two to 0.07x (0.23x). ``prepare_openmp`` chooses
passive waiting unless the user set a wait policy, and it must run before the OpenMP runtime
starts, that is before llama_cpp is first imported.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

# Environment variables through which a user states an OpenMP wait policy themselves.
_USER_OMP_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

_prepared: str | None = None  # what prepare_openmp decided: "passive (ours)" or "user: ..."


def prepare_openmp() -> str:
    """Set OMP_WAIT_POLICY=passive for this process unless the user chose a policy.

    Returns a short description of the policy in effect (shown by `chatglm3 bench`).
    CHATGLM3_OMP_WAIT_POLICY=passive|active overrides our default without touching
    OMP_WAIT_POLICY itself (for measurements)."""
    global _prepared
    if _prepared is not None:
        return _prepared
    from .. import env

    user = [f"{v}={env.get(v)}" for v in _USER_OMP_VARS if env.get(v)]
    if user:
        _prepared = "user: " + " ".join(user)
    else:
        want = env.choice("CHATGLM3_OMP_WAIT_POLICY", ("passive", "active")) or "passive"
        # os.environ also updates the C environment, which libgomp reads when it loads.
        os.environ["OMP_WAIT_POLICY"] = want.upper()
        _prepared = f"{want} (default)" if want == "passive" else f"{want} (CHATGLM3_OMP_WAIT_POLICY)"
    return _prepared


def omp_policy() -> str | None:
    """The policy prepare_openmp settled on, or None if it has not run yet."""
    return _prepared


def _allowed_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return list(range(os.cpu_count() or 1))


def _cgroup_cpu_limit() -> int | None:
    """CPUs a cgroup v2 quota allows (rounded up), or None without a quota."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota == "max":
            return None
        return max(1, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):
        return None


def physical_cores(cpus: list[int] | None = None, sysfs: Path = Path("/sys/devices/system/cpu")) -> int:
    """Physical cores among the CPUs this process may use (SMT siblings counted once)."""
    cpus = _allowed_cpus() if cpus is None else cpus
    cores: set[tuple[str, str]] = set()
    for c in cpus:
        topo = sysfs / f"cpu{c}" / "topology"
        try:
            cores.add(((topo / "physical_package_id").read_text().strip(),
                       (topo / "core_id").read_text().strip()))
        except OSError:
            return max(1, len(cpus))  # no topology (containers, other systems): logical CPUs
    return max(1, len(cores))


def default_threads() -> int:
    """Threads for llama.cpp: one per physical core this process may use, within any cgroup
    quota. A second hyper-thread on a core adds no decode speed (memory- and SIMD-bound) and
    its threads only wait at the barriers for the slower sibling."""
    n = physical_cores()
    limit = _cgroup_cpu_limit()
    return max(1, min(n, limit) if limit else n)
