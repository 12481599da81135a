"""How many BLAS / kernel threads a rank may run: its share of the cores it was given.

Launchers hand out cores in two ways. Either each rank is bound to its own cores (mpiexec
-bind-to, srun --cpu-bind): the ranks' CPU sets on a node are disjoint and a rank uses all of its
own. Or the ranks of a node share one set (no binding, a cgroup for the whole job): they split it
evenly. SLURM's --cpus-per-task caps either. A user's OMP_NUM_THREADS / OPENBLAS_NUM_THREADS /
MKL_NUM_THREADS is their choice and left alone; `train.blas_threads` overrides everything.
"""
from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence

from ddl.backend import THREAD_VARIABLES


def _node(node_sets: Sequence[frozenset]) -> tuple[int, bool]:
    """(the node's cores, whether its ranks' CPU sets are disjoint: bound by the launcher)."""
    cores = len(frozenset().union(*node_sets))
    return cores, sum(len(s) for s in node_sets) == cores


def cpus_per_rank(node_sets: Sequence[frozenset], mine: int, cpus_per_task: Optional[str] = None) -> int:
    """Cores rank `mine` (an index into `node_sets`, the CPU sets of this node's ranks) may use."""
    cores, disjoint = _node(node_sets)
    n = len(node_sets[mine]) if disjoint else cores // len(node_sets)
    if cpus_per_task and cpus_per_task.strip().isdigit():
        n = min(n, int(cpus_per_task))
    return max(1, n)


# A matrix product below this many multiply-adds runs on one thread: splitting it costs more in
# waking, spinning and joining threads than it saves, and when the cores are busy (a TA's sweeps,
# a shared login node) the spinning helper threads make a run several times slower. Measured with
# scripts/bench.py's thread rows; see the README's benchmark section.
SPLIT_MIN_MACS = 1_000_000
# Cores counted busy when more than this share of them is taken by other work right now
BUSY_SAMPLE_S = 0.1


def largest_product(sizes: Sequence[int], batch: int) -> int:
    """Multiply-adds of the step's largest matrix product (a layer's W @ A at `batch` columns)."""
    return max((sizes[i] * sizes[i + 1] for i in range(len(sizes) - 1)), default=0) * max(batch, 1)


def busy_cores(sample_s: float = BUSY_SAMPLE_S, stat: str = "/proc/stat") -> Optional[float]:
    """How many of the machine's cores other work keeps busy now: its busy time over a short
    sample (None where /proc/stat cannot be read: not Linux)."""
    import time  # noqa: PLC0415

    def read():
        with open(stat) as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)      # idle + iowait
        return sum(values[:8]) - idle, sum(values[:8])
    try:
        busy0, total0 = read()
        time.sleep(sample_s)
        busy1, total1 = read()
    except (OSError, ValueError, IndexError):
        return None
    return (busy1 - busy0) / max(total1 - total0, 1) * (os.cpu_count() or 1)


def choose(configured: int, node_sets: Sequence[frozenset], mine: int,
           env: Mapping[str, str] = os.environ, work: Optional[tuple] = None,
           busy: Optional[float] = None) -> tuple[Optional[int], str]:
    """(threads to set, or None to leave the BLAS as the user set it; why), for the log. work:
    (the network's sizes, this rank's batch): a network whose products are all too small to split
    gets one thread (SPLIT_MIN_MACS), whatever the allocation allows. busy: cores other work keeps
    busy now (a rank alone on its node): threads beyond the idle cores would spin against that
    work (OpenBLAS's waiting threads spin), so a busy machine gets fewer, down to one."""
    if configured:
        return configured, "train.blas_threads"
    for name in THREAD_VARIABLES:
        if env.get(name):
            return None, f"{name}={env[name]} from the environment"
    cap = env.get("SLURM_CPUS_PER_TASK")
    n = cpus_per_rank(node_sets, mine, cap)
    cores, disjoint = _node(node_sets)
    ranks = len(node_sets)
    how = ("its own cores" if disjoint and ranks > 1
           else f"{cores} cores shared by {ranks} rank{'s' * (ranks > 1)} on this node")
    how += f", SLURM_CPUS_PER_TASK={cap}" if cap else ""
    if work is not None and n > 1 and largest_product(*work) < SPLIT_MIN_MACS:
        macs = largest_product(*work)
        return 1, (f"{how}; one, as the network's largest product ({macs / 1e6:.1f} M multiply-adds a "
                   f"step) is too small to gain from more (train.blas_threads to choose)")
    idle = int(cores - busy + 0.5) if busy is not None and ranks == 1 else n
    if idle < n:
        return max(idle, 1), (f"{how}; {max(idle, 1)}, as other work keeps {busy:.1f} of the cores busy "
                              f"(train.blas_threads to choose)")
    return n, how


def oversubscribes(threads: int, node_sets: Sequence[frozenset]) -> bool:
    """Whether `threads` per rank on every rank of this node needs more cores than it has."""
    return threads * len(node_sets) > _node(node_sets)[0]


def own_cpus() -> frozenset:
    try:
        return frozenset(os.sched_getaffinity(0))
    except AttributeError:                     # macOS: no affinity API
        return frozenset(range(os.cpu_count() or 1))
