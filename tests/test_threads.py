"""BLAS threads per rank from the allocation (ddl/parallel/threads.py), and what rank 0 logs."""
import os
import subprocess
import sys

import pytest

from ddl.parallel.threads import choose, cpus_per_rank, oversubscribes

F = frozenset


@pytest.mark.parametrize("sets,mine,cap,expected", [
    ([F({0, 1, 2, 3})], 0, None, 4),                          # one process: all of its cores
    ([F({0, 1, 2, 3})] * 2, 1, None, 2),                      # 2 ranks share 4 cores
    ([F({0, 1, 2, 3})] * 3, 0, None, 1),                      # 3 share 4: 1 each, never 2
    ([F({0, 1})] * 3, 2, None, 1),                            # more ranks than cores: still 1
    ([F({0, 1}), F({2, 3}), F({4, 5})], 1, None, 2),          # bound by the launcher: its own
    ([F({0}), F({1})], 0, None, 1),                           # bound to one core each
    ([F(range(16))] * 2, 0, "4", 4),                          # --cpus-per-task caps the share
    ([F(range(16))] * 2, 0, "12", 8),                         # ... but never raises it
    ([F(range(16))] * 2, 0, "", 8),
])
def test_cpus_per_rank(sets, mine, cap, expected):
    assert cpus_per_rank(sets, mine, cap) == expected


def test_precedence_override_then_environment_then_allocation():
    sets = [F({0, 1, 2, 3})] * 2
    assert choose(3, sets, 0, {"OMP_NUM_THREADS": "1"}) == (3, "train.blas_threads")
    assert choose(0, sets, 0, {"OPENBLAS_NUM_THREADS": "2"}) == \
        (None, "OPENBLAS_NUM_THREADS=2 from the environment")
    assert choose(0, sets, 0, {}) == (2, "4 cores shared by 2 ranks on this node")
    assert choose(0, [F({0, 1}), F({2, 3})], 0, {"SLURM_CPUS_PER_TASK": "2"}) == \
        (2, "its own cores, SLURM_CPUS_PER_TASK=2")


def test_oversubscription():
    assert oversubscribes(2, [F({0, 1})] * 2) and not oversubscribes(1, [F({0, 1})] * 2)


def _run(cmd, tmp_path, **env):
    _run.n = getattr(_run, "n", 0) + 1
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                              "MKL_NUM_THREADS", "SLURM_CPUS_PER_TASK")}
    out = subprocess.run(cmd + ["tracking=off", "train.epochs=2", f"out_dir={tmp_path}/run{_run.n}"],
                         capture_output=True, text=True, timeout=180, env={**clean, **env}, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout + out.stderr


def test_two_ranks_share_the_node_and_say_so(tmp_path):
    cores = len(os.sched_getaffinity(0))
    text = _run(["mpiexec", "-n", "2", sys.executable, "-m", "ddl"], tmp_path)
    share = max(1, cores // 2)
    assert f"BLAS threads per rank: {share}, {cores} cores shared by 2 ranks on this node)" in text
    text = _run(["mpiexec", "-n", "2", sys.executable, "-m", "ddl", "train.blas_threads=64"], tmp_path)
    assert "needs more than this node's" in text
    text = _run([sys.executable, "-m", "ddl"], tmp_path, OMP_NUM_THREADS="1")
    assert "BLAS threads per rank: as set, OMP_NUM_THREADS=1 from the environment)" in text
