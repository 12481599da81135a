"""What each host spent between two evaluations, for a job of several ranks: its CPU use, its
ranks' memory, and the step's compute against its collectives per rank (the slowest rank named),
so that a straggling host shows in the dashboard. MLflow's system metrics see one process; these
are gathered from every rank (one small collective per evaluation) and logged by rank 0 as the
epoch's metrics, through the run's one tracking route.

    host/<name>/cpu_percent     the host's ranks' CPU time over the wall time (100: one core busy;
                                MPI's busy waits count as use)
    host/<name>/rss_mb          its ranks' resident memory now, summed
    host/<name>/peak_rss_mb     its largest rank's peak resident memory
    host/<name>/collective_share   its ranks' time in collectives over their wall time (mean)
    perf/slowest_rank, perf/slowest_compute_s   the rank with the most compute (wall minus
                                collectives) since the last evaluation, and that time
"""
from __future__ import annotations

import os
import resource
import time
from typing import Sequence

_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


class Sampler:
    """This rank's CPU and wall clocks and its collective seconds at the last evaluation."""

    def __init__(self, comm):
        self.comm = comm
        self.mark()

    def mark(self) -> None:
        self.wall, self.cpu, self.coll = time.perf_counter(), time.process_time(), self.comm.allreduce_time

    def sample(self) -> tuple:
        """(wall s, cpu s, collective s) since the last mark, the RSS now and the peak (MiB)."""
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        coll = self.comm.allreduce_time - self.coll
        self.mark()
        return wall, cpu, coll, rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE_MB
    except (OSError, ValueError, IndexError):
        return float("nan")


def gather(comm, sampler: Sampler) -> dict:
    """Collective (every rank): the metrics above, from every rank's sample; {} for one rank."""
    if comm.size == 1:
        return {}
    mine = (comm.rank, comm.nodes.host_of[comm.rank], *sampler.sample())
    return host_metrics(comm.allreduce_obj([mine], op="sum"))


def host_metrics(samples: Sequence[tuple]) -> dict:
    """samples: (rank, host, wall s, cpu s, collective s, rss MiB, peak rss MiB) of every rank."""
    out = {}
    for host in dict.fromkeys(s[1] for s in samples):
        mine = [s for s in samples if s[1] == host]
        out[f"host/{host}/cpu_percent"] = 100 * sum(s[3] for s in mine) / max(max(s[2] for s in mine), 1e-9)
        out[f"host/{host}/rss_mb"] = sum(s[5] for s in mine)
        out[f"host/{host}/peak_rss_mb"] = max(s[6] for s in mine)
        out[f"host/{host}/collective_share"] = sum(s[4] / max(s[2], 1e-9) for s in mine) / len(mine)
    slowest = max(samples, key=lambda s: s[2] - s[4])
    out["perf/slowest_rank"] = float(slowest[0])
    out["perf/slowest_compute_s"] = slowest[2] - slowest[4]
    return out
