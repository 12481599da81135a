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


def choose(configured: int, node_sets: Sequence[frozenset], mine: int,
           env: Mapping[str, str] = os.environ) -> tuple[Optional[int], str]:
    """(threads to set, or None to leave the BLAS as the user set it; why), for the log."""
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
    return n, how + (f", SLURM_CPUS_PER_TASK={cap}" if cap else "")


def oversubscribes(threads: int, node_sets: Sequence[frozenset]) -> bool:
    """Whether `threads` per rank on every rank of this node needs more cores than it has."""
    return threads * len(node_sets) > _node(node_sets)[0]


def own_cpus() -> frozenset:
    try:
        return frozenset(os.sched_getaffinity(0))
    except AttributeError:                     # macOS: no affinity API
        return frozenset(range(os.cpu_count() or 1))
