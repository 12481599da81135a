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
    said = f"BLAS threads per rank: 1, {cores} cores shared by 2 ranks on this node"
    assert said + (")" if share == 1 else "; one, as the network's largest product") in text, text
    text = _run(["mpiexec", "-n", "2", sys.executable, "-m", "ddl", "train.blas_threads=64"], tmp_path)
    assert "needs more than this node's" in text
    text = _run([sys.executable, "-m", "ddl"], tmp_path, OMP_NUM_THREADS="1")
    assert "BLAS threads per rank: as set, OMP_NUM_THREADS=1 from the environment)" in text
    if cores > 1:       # the default network is too small to split: one thread, said so
        text = _run([sys.executable, "-m", "ddl"], tmp_path)
        assert (f"BLAS threads per rank: 1, {cores} cores shared by 1 rank on this node; one, as the "
                "network's largest product (0.0 M multiply-adds a step) is too small") in text, text


def test_a_network_too_small_to_split_gets_one_thread_whatever_the_allocation():
    from ddl.parallel.threads import SPLIT_MIN_MACS, largest_product

    two_cores = [frozenset({0, 1})]
    course = ([2, 20, 7, 5, 1], 64)                  # the course's network at batch 64
    big = ([784, 1024, 1024, 10], 256)
    assert largest_product([2, 20, 7, 5, 1], 64) == max(2 * 20, 20 * 7, 7 * 5, 5) * 64
    assert largest_product(*big) == 1024 * 1024 * 256 > SPLIT_MIN_MACS
    n, why = choose(0, two_cores, 0, env={}, work=course)
    assert n == 1 and "too small to gain from more" in why and "2 cores shared by 1 rank" in why, why
    assert choose(0, two_cores, 0, env={}, work=big) == choose(0, two_cores, 0, env={}) == (
        2, "2 cores shared by 1 rank on this node")
    assert choose(2, two_cores, 0, env={}, work=course) == (2, "train.blas_threads")   # asked: given
    assert choose(0, two_cores, 0, env={"OMP_NUM_THREADS": "2"}, work=course)[0] is None


def test_a_busy_machine_gets_fewer_threads_down_to_one():
    from ddl.parallel.threads import busy_cores

    four = [frozenset({0, 1, 2, 3})]
    assert choose(0, four, 0, env={}, busy=0.3) == (4, "4 cores shared by 1 rank on this node")
    n, why = choose(0, four, 0, env={}, busy=2.6)
    assert n == 1 and "other work keeps 2.6 of the cores busy" in why, why
    assert choose(0, four, 0, env={}, busy=1.2)[0] == 3
    assert choose(0, four, 0, env={}, busy=7.0)[0] == 1            # never none
    assert choose(0, [frozenset({0, 1})] * 2, 0, env={}, busy=2.0)[0] == 1   # two ranks: their share
    assert choose(2, four, 0, env={}, busy=4.0) == (2, "train.blas_threads")   # asked: given
    measured = busy_cores(0.05)
    assert measured is None or 0.0 <= measured <= (os.cpu_count() or 1) + 0.01
