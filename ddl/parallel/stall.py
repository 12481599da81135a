"""Waiting for a collective without burning a core, and noticing a rank that does not arrive.

`wait(req, watch)` polls a non-blocking MPI request: it spins (yielding the core) for SPIN_S (a
balanced step's allreduce completes well within that), then sleeps with a doubling backoff capped
at MAX_SLEEP_S,
so ranks waiting for a stalled one use next to no CPU. Past `watch.timeout` seconds every waiting
rank reports its position to rank 0, which names the ranks that have not arrived (rank, host) and
the step; then it keeps waiting with a warning every timeout (on_stall=wait) or writes the last
consistent state and ends the job (on_stall=abort, through `watch.on_abort`).
"""
from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from mpi4py import MPI

log = logging.getLogger("ddl")
SPIN_S, FIRST_SLEEP_S, MAX_SLEEP_S = 0.05, 20e-6, 1e-3
STALL_TAG, COLLECT_S = 7301, 1.0


class StalledError(RuntimeError):
    """A collective did not complete within train.stall_timeout and train.on_stall=abort."""


@dataclass
class StallWatch:
    """What a rank does when a collective takes longer than `timeout` seconds (0: never asks)."""

    timeout: float = 0.0
    on_stall: str = "wait"                          # wait | abort
    position: str = "start"                         # e.g. "epoch 3 step 17", set by the trainer
    on_abort: Optional[Callable[[], None]] = None   # rank 0: checkpoint the last consistent state
    _sent: list = field(default_factory=list)


def wait(comm, req, watch: Optional[StallWatch]) -> None:
    """Complete `req` (a request on `comm`, an mpi4py communicator, or a list of them), politely
    and watchfully."""
    if isinstance(req, list):
        req = _All(req)
    start = time.perf_counter()
    spin_until, sleep = start + SPIN_S, FIRST_SLEEP_S
    next_report = start + watch.timeout if watch and watch.timeout > 0 else None
    while not req.Test():
        now = time.perf_counter()
        if now < spin_until:          # yield, or an oversubscribed node starves the others
            os.sched_yield()          # (measured: a pure Test() spin is 200x slower at 3 ranks/2 cores)
            continue
        time.sleep(sleep)
        sleep = min(sleep * 2, MAX_SLEEP_S)
        if next_report is not None and now >= next_report:
            report(comm, watch, now - start)
            next_report = now + watch.timeout


class _All:
    """Requests that complete together (the step's reduce-scatter and its tail's allreduce)."""

    def __init__(self, reqs: list):
        self.reqs = reqs

    def Test(self) -> bool:  # noqa: N802 - mpi4py's name
        return MPI.Request.Testall(self.reqs)


def report(comm, watch: StallWatch, waited: float) -> None:
    """Every waiting rank tells rank 0 where it is; rank 0 names the missing ranks."""
    rank, size = comm.Get_rank(), comm.Get_size()
    if rank != 0:
        watch._sent.append(comm.isend((rank, socket.gethostname(), watch.position), dest=0,
                                      tag=STALL_TAG))
        return
    arrived, deadline = {0: (socket.gethostname(), watch.position)}, time.monotonic() + COLLECT_S
    while len(arrived) < size and time.monotonic() < deadline:
        if comm.iprobe(source=MPI.ANY_SOURCE, tag=STALL_TAG):
            r, host, where = comm.recv(source=MPI.ANY_SOURCE, tag=STALL_TAG)
            arrived[r] = (host, where)
        else:
            time.sleep(0.01)
    missing = [r for r in range(size) if r not in arrived]
    hosts = sorted({h for h, _ in arrived.values()})
    log.warning("stalled: %s after %.0f s; rank(s) %s have not arrived (waiting: rank(s) %s on %s). "
                "%s", watch.position, waited, missing or "?", sorted(arrived), ", ".join(hosts),
                "Ending the job with a checkpoint (train.on_stall=abort)." if watch.on_stall == "abort"
                else "Still waiting (train.on_stall=wait); a stopped rank resumes where it was.")
    if watch.on_stall == "abort":
        if watch.on_abort is not None:
            watch.on_abort()
        raise StalledError(f"{watch.position} did not complete within {waited:.0f} s: rank(s) "
                           f"{missing or '?'} did not arrive (train.on_stall=abort; the last "
                           "consistent state is checkpointed: resume with checkpoint.resume=auto)")
