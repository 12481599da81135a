"""Waiting for a collective without burning a core, and noticing a rank that does not arrive.

`wait_watched(comm, req, watch)` polls a non-blocking MPI request: it spins (yielding the core) for SPIN_S
(a balanced step's allreduce completes well within that), then sleeps with a doubling backoff
capped at MAX_SLEEP_S, so ranks waiting for a stalled one use next to no CPU. Past the policy's
timeout every waiting rank reports its position to rank 0, which names the ranks that have not
arrived (rank, host) and where the run is; then it keeps waiting with a warning every timeout
(on_stall=wait) or raises StalledError (on_stall=abort: the runner catches it, writes the last
consistent state and ends the job). The watch is configured once, with its communicator.
"""
from __future__ import annotations

import logging
import os
import socket
import time

from mpi4py import MPI

from ddl.parallel.comm import StalledError, StallPolicy

log = logging.getLogger("ddl")
SPIN_S, FIRST_SLEEP_S, MAX_SLEEP_S = 0.05, 20e-6, 1e-3
STALL_TAG, COLLECT_S = 7301, 1.0


class StallWatch:
    """A communicator's stall policy and the reports its rank has sent (completed at its end)."""

    def __init__(self, policy: StallPolicy):
        self.policy, self.sent = policy, []


def wait_watched(comm, req, watch: StallWatch) -> None:
    """Complete `req` (a request on `comm`, an mpi4py communicator, or a list of them), politely
    and watchfully."""
    if isinstance(req, list):
        req = _All(req)
    timeout = watch.policy.timeout
    start = time.perf_counter()
    spin_until, sleep = start + SPIN_S, FIRST_SLEEP_S
    next_report = start + timeout if timeout > 0 else None
    while not req.Test():
        now = time.perf_counter()
        if now < spin_until:          # yield, or an oversubscribed node starves the others
            os.sched_yield()          # (measured: a pure Test() spin is 200x slower at 3 ranks/2 cores)
            continue
        time.sleep(sleep)
        sleep = min(sleep * 2, MAX_SLEEP_S)
        if next_report is not None and now >= next_report:
            report(comm, watch, now - start)
            next_report = now + timeout


class _All:
    """Requests that complete together (the step's reduce-scatter and its tail's allreduce)."""

    def __init__(self, reqs: list):
        self.reqs = reqs

    def Test(self) -> bool:  # noqa: N802 - mpi4py's name
        return MPI.Request.Testall(self.reqs)


def report(comm, watch: StallWatch, waited: float) -> None:
    """Every waiting rank tells rank 0 where it is; rank 0 names the missing ranks."""
    rank, size, policy = comm.Get_rank(), comm.Get_size(), watch.policy
    where = policy.position()
    if rank != 0:
        watch.sent.append(comm.isend((rank, socket.gethostname(), where), dest=0, tag=STALL_TAG))
        return
    arrived, deadline = {0: (socket.gethostname(), where)}, time.monotonic() + COLLECT_S
    while len(arrived) < size and time.monotonic() < deadline:
        if comm.iprobe(source=MPI.ANY_SOURCE, tag=STALL_TAG):
            r, host, there = comm.recv(source=MPI.ANY_SOURCE, tag=STALL_TAG)
            arrived[r] = (host, there)
        else:
            time.sleep(0.01)
    missing = [r for r in range(size) if r not in arrived]
    hosts = sorted({h for h, _ in arrived.values()})
    log.warning("stalled: %s after %.0f s; rank(s) %s have not arrived (waiting: rank(s) %s on %s). "
                "%s", where, waited, missing or "?", sorted(arrived), ", ".join(hosts),
                "Ending the job with a checkpoint (train.on_stall=abort)." if policy.on_stall == "abort"
                else "Still waiting (train.on_stall=wait); a stopped rank resumes where it was.")
    if policy.on_stall == "abort":
        raise StalledError(f"{where} did not complete within {waited:.0f} s: rank(s) "
                           f"{missing or '?'} did not arrive (train.on_stall=abort; the last "
                           "consistent state is checkpointed: resume with checkpoint.resume=auto)")
