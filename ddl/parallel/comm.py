"""The communicator interface every rank talks through, and its single-process form.

A `Comm` is deliberately narrow (chainermn's flat communicator is the model) and is built once
with everything it needs: the process builds one (`get_comm`), and each run derives its own
(`for_run`) with the run's backend, how that backend's arrays are reduced and the stall policy.
Nothing changes a communicator after it is built, and no collective asks what kind of buffer it
was given: the transport for the backend's arrays is picked when the communicator is made.

    allreduce_sum(buf)        backend arrays (the gradient buffer, batch-norm sums), in place
    sum_host(buf)             small host NumPy arrays (evaluation sums, checks), in place
    reduce_scatter_sum, allgather   the two halves of a ring allreduce (the sharded optimizer)

Every subclass shares the bookkeeping here, so counts and timings mean the same with or without MPI:

    allreduce_count   number of collective calls
    counts[tag]       number of those calls per tag ("grad", "params", "bn", "eval", ...)
    allreduce_time    seconds spent inside them (all tags); times[tag] per tag
"""
from __future__ import annotations

import os
import socket
import sys
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Optional

from ddl.backend import namespace as array_namespace
from ddl.parallel.nodes import Nodes
from ddl.parallel.threads import own_cpus
from ddl.parallel.watchdog import Beacon, StalledError

OPS = ("sum", "max", "min")
MODES = ("auto", "host", "cuda_aware", "nccl")  # how CuPy buffers are reduced; see gpu.py
STALL_POLICIES = ("wait", "abort")


@dataclass(frozen=True)
class StallPolicy:
    """What the stall watch (ddl/parallel/watchdog.py) does when a collective takes longer than
    `timeout` seconds (0: no watch): `on_stall` wait (warn again every timeout) or abort (end the
    job). `where` says where the run is (e.g. "epoch 3 step 17"), asked only when a stall is
    reported."""

    timeout: float = 0.0
    on_stall: str = "wait"
    where: Optional[Callable[[], str]] = None

    def __post_init__(self):
        if self.on_stall not in STALL_POLICIES:
            raise ValueError(f"on_stall must be one of {STALL_POLICIES}, got {self.on_stall!r}")

    def position(self) -> str:
        return self.where() if self.where is not None else "a collective"


class Comm(ABC):
    """Base communicator: counters, timing and `reduce_list`; subclasses supply the transport."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    library_version: str = "serial (no MPI)"
    describe: str = ""          # how the run's arrays are summed, when there is something to say

    def __init__(self, stall: Optional[StallPolicy] = None) -> None:
        self.reset_counters()
        self.node_cpus = (own_cpus(),)    # the CPU sets of this node's ranks, by local rank
        self.nodes = Nodes((0,), (socket.gethostname(),))   # the hosts the job spans
        self.stall = stall or StallPolicy()
        self.beacon = Beacon()            # where this rank is, for the stall watch
        self.watch = None                 # the stall watch's thread, where there is one

    def reset_counters(self) -> None:
        """Zero `allreduce_count`, `counts`, `allreduce_time` and `times`."""
        self.allreduce_count = 0
        self.allreduce_time = 0.0
        self.counts: dict[str, int] = defaultdict(int)
        self.times: dict[str, float] = defaultdict(float)

    @abstractmethod
    def for_run(self, backend=None, allreduce: str = "auto", stall: Optional[StallPolicy] = None) -> Comm:
        """A communicator for one run over the same ranks: the backend's arrays reduced the way
        `allreduce` says (auto | host | cuda_aware | nccl, for CuPy), stalls handled by `stall`.
        Collective: every rank calls it at the same point (a GPU transport may refuse on all)."""

    def close(self) -> None:
        """The run's end, reached by every rank (a GPU transport frees its communicator)."""
        self.unwatch()

    def stalled(self) -> Optional[StalledError]:
        """Wait until the stall watch decides that a stall ends the job (on_stall=abort, rank 0):
        its StalledError, the stalled collective held, for the caller to end the job with
        (`abort`); None at once without a watch, or once the watch stops."""
        return self.watch.ending() if self.watch is not None else None

    def unwatch(self) -> None:
        """Local: the stall watch ends (a run that failed, or closes)."""
        if self.watch is not None:
            self.watch.stop()
            self.watch = None

    def allreduce_sum(self, buf, tag: str = "grad"):
        """IN PLACE buf <- sum over ranks of buf (a flat 1-D array of the run's backend); returns
        `buf`."""
        _check_flat(buf, tag)
        self.timed(tag, self._allreduce_sum, buf)
        return buf

    def sum_host(self, buf, tag: str = "eval"):
        """IN PLACE buf <- sum over ranks of buf (a small flat host NumPy array); returns `buf`."""
        _check_flat(buf, tag)
        self.timed(tag, self._sum_host, buf)
        return buf

    def reduce_scatter_sum(self, buf, out, counts, tail=None, tag: str = "grad"):
        """out <- this rank's block of the sum over ranks of `buf` (block r: `counts[r]` elements,
        in rank order), and IN PLACE `tail` <- its sum over ranks, in the same round (the step's
        count, loss and verdicts reach every rank). Returns `out`."""
        check_counts(counts, self.size, buf, out, self.rank)
        self.timed(tag, self._reduce_scatter_sum, buf, out, tuple(counts), tail)
        return out

    def allgather(self, buf, counts, tag: str = "params"):
        """IN PLACE: block r of `buf` (`counts[r]` elements, in rank order) <- rank r's block.
        Returns `buf`."""
        check_counts(counts, self.size, buf)
        self.timed(tag, self._allgather, buf, tuple(counts))
        return buf

    def timed(self, tag: str, transport, *args, calls: int = 1):
        """transport(*args), its seconds added to the tag's time and `calls` to its count: the
        bookkeeping of every collective (a reduction strategy's own too)."""
        start = time.perf_counter()
        self.beacon.enter(start)
        try:
            result = transport(*args)
        finally:
            self.beacon.leave()
        elapsed = time.perf_counter() - start
        self.allreduce_count += calls
        self.counts[tag] += calls
        self.allreduce_time += elapsed
        self.times[tag] += elapsed
        return result

    def reduce_list(self, arrays, tag: str = "bn") -> list:
        """Sum a list of small same-dtype backend arrays over ranks in ONE allreduce (concat,
        sum, split). Returns new arrays with the input shapes: out[i] = sum over ranks of arrays[i].
        """
        if not arrays:
            return []
        xp = array_namespace(*arrays)
        flat = xp.concat([xp.reshape(a, (-1,)) for a in arrays])
        self.allreduce_sum(flat, tag=tag)
        out, start = [], 0
        for a in arrays:
            n = _numel(a.shape)
            out.append(xp.reshape(flat[start:start + n], a.shape))
            start += n
        return out

    def node_buffers(self, ext_size: int, param_size: int, dtype):
        """Collective: a sharded step's buffers in memory every rank of this node maps
        (ddl/parallel/shared_memory.py), or None where the ranks do not all share one node's
        memory (a world of one, no MPI, several nodes, or no room). A new object: the
        communicator itself is not changed."""
        return None

    @abstractmethod
    def _allreduce_sum(self, buf) -> None:
        """The backend's transport: the in-place sum (MPI, host-staged CuPy, NCCL, or nothing)."""

    @abstractmethod
    def _sum_host(self, buf) -> None:
        """The in-place sum of a host NumPy array."""

    @abstractmethod
    def _reduce_scatter_sum(self, buf, out, counts: tuple, tail) -> None:
        """The transport's reduce-scatter of `buf` into `out`, with `tail` summed in place."""

    @abstractmethod
    def _allgather(self, buf, counts: tuple) -> None:
        """The transport's in-place allgather of the blocks of `buf`."""

    @abstractmethod
    def allreduce_obj(self, obj, op: str = "sum"):
        """Reduce a picklable Python object (numbers, NumPy scalars) over ranks with sum/max/min."""

    @abstractmethod
    def bcast(self, obj, root: int = 0):
        """Return root's picklable `obj` (e.g. a config dict) on every rank."""

    @abstractmethod
    def bcast_array(self, buf, root: int = 0):
        """IN PLACE buf <- root's buf (flat 1-D backend array). Returns `buf`."""

    @abstractmethod
    def barrier(self) -> None:
        """Wait until every rank arrives."""

    @abstractmethod
    def abort(self, code: int = 1) -> None:
        """End every rank now with exit status `code` (never returns)."""


class SerialComm(Comm):
    """One process, no MPI: every collective is the identity, but the counters still count."""

    def for_run(self, backend=None, allreduce: str = "auto", stall: Optional[StallPolicy] = None) -> Comm:
        check_mode(allreduce)
        return SerialComm(stall)

    def _allreduce_sum(self, buf) -> None:
        return None

    def _sum_host(self, buf) -> None:
        return None

    def _reduce_scatter_sum(self, buf, out, counts: tuple, tail) -> None:
        out[...] = buf             # one block: the whole sum

    def _allgather(self, buf, counts: tuple) -> None:
        return None

    def allreduce_obj(self, obj, op: str = "sum"):
        check_op(op)
        return obj

    def bcast(self, obj, root: int = 0):
        check_root(root, 1)
        return obj

    def bcast_array(self, buf, root: int = 0):
        check_root(root, 1)
        return buf

    def barrier(self) -> None:
        return None

    def abort(self, code: int = 1) -> None:
        # Same effect as MPI_Abort on one process: no atexit handlers, no further Python code.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"allreduce must be one of {MODES}, got {mode!r}")


def check_op(op: str) -> None:
    if op not in OPS:
        raise ValueError(f"reduction op must be one of {OPS}, got {op!r}")


def check_counts(counts, size: int, buf, out=None, rank: int = 0) -> None:
    """The blocks of a reduce-scatter / allgather: one per rank, covering `buf`; `out` holds ours."""
    n = getattr(buf, "shape", (None,))
    if len(counts) != size or min(counts, default=0) < 0 or (sum(counts),) != tuple(n):
        raise ValueError(f"block counts {list(counts)} must be {size} non-negative numbers summing to "
                         f"the buffer's length {n}")
    if out is not None and tuple(getattr(out, "shape", ())) != (counts[rank],):
        raise ValueError(f"this rank's block has {counts[rank]} elements, the output buffer shape "
                         f"{getattr(out, 'shape', None)}")


def check_root(root: int, size: int) -> None:
    if not 0 <= root < size:
        raise ValueError(f"root must be a rank in [0, {size}), got {root}")


def _check_flat(buf, tag: str) -> None:
    if getattr(buf, "ndim", None) != 1:
        raise ValueError(f"a collective needs a flat 1-D array, got ndim={getattr(buf, 'ndim', None)} "
                         f"for tag {tag!r}")


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
