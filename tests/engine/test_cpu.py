"""Thread count and OpenMP wait policy (chatglm3_cli/engine/cpu.py)."""
from __future__ import annotations

import os
import subprocess
import sys

from chatglm3_cli.engine import cpu


def _topology(root, cpus):
    for c, (pkg, core) in cpus.items():
        d = root / f"cpu{c}" / "topology"
        d.mkdir(parents=True)
        (d / "physical_package_id").write_text(f"{pkg}\n")
        (d / "core_id").write_text(f"{core}\n")


def test_physical_cores_count_smt_siblings_once(tmp_path):
    # 2 packages x 2 cores x 2 hyper-threads
    _topology(tmp_path, {0: (0, 0), 1: (0, 1), 2: (1, 0), 3: (1, 1), 4: (0, 0), 5: (0, 1), 6: (1, 0), 7: (1, 1)})
    assert cpu.physical_cores(list(range(8)), sysfs=tmp_path) == 4
    assert cpu.physical_cores([0, 4], sysfs=tmp_path) == 1  # two siblings of one core
    assert cpu.physical_cores([0, 1, 2], sysfs=tmp_path) == 3


def test_physical_cores_without_topology_counts_logical_cpus(tmp_path):
    assert cpu.physical_cores([0, 1, 2], sysfs=tmp_path / "absent") == 3


def test_default_threads_is_positive_and_within_the_allowed_cpus():
    n = cpu.default_threads()
    assert 1 <= n <= len(os.sched_getaffinity(0))


def _policy_in_child(env_extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "CHATGLM3_OMP_WAIT_POLICY")}
    env.update(env_extra)
    code = ("import os\nfrom chatglm3_cli.engine import cpu\nfrom chatglm3_cli.engine.llama import runtime\nruntime.llama()\n"
            "print(os.environ.get('OMP_WAIT_POLICY'), '|', cpu.omp_policy())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_passive_waiting_is_set_before_llama_cpp_loads_unless_the_user_chose():
    assert _policy_in_child({}) == "PASSIVE | passive (default)"
    assert _policy_in_child({"OMP_WAIT_POLICY": "active"}) == "active | user: OMP_WAIT_POLICY=active"
    assert _policy_in_child({"GOMP_SPINCOUNT": "1000"}).startswith("None | user: GOMP_SPINCOUNT=1000")
    assert _policy_in_child({"CHATGLM3_OMP_WAIT_POLICY": "active"}) == "ACTIVE | active (CHATGLM3_OMP_WAIT_POLICY)"
