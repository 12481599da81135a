"""The communicator interface every rank talks through, and its single-process form.

A `Comm` is deliberately narrow (chainermn's flat communicator is the model): the trainer packs all
gradients into ONE flat buffer and calls `allreduce_sum(buf, tag="grad")` once per step, or, with
the optimizer sharded across ranks, `reduce_scatter_sum` of that buffer and `allgather` of the
parameters (the two halves of a ring allreduce: the same bytes). Every subclass shares the
bookkeeping here, so counts and timings mean the same with or without MPI:

    allreduce_count   number of collective calls (allreduce_sum, reduce_scatter_sum, allgather)
    counts[tag]       number of those calls per tag ("grad", "params", "bn", ...)
    allreduce_time    seconds spent inside them (all tags); times[tag] per tag
"""
from __future__ import annotations

import os
import sys
import time
from abc import ABC, abstractmethod
from collections import defaultdict

from ddl.backend import namespace as array_namespace
from ddl.parallel.threads import own_cpus


class Comm(ABC):
    """Base communicator: counters, timing and `reduce_list`; subclasses supply the transport."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    library_version: str = "serial (no MPI)"
    allreduce_mode: str = "host"

    def __init__(self) -> None:
        self.reset_counters()
        self.node_cpus = (own_cpus(),)    # the CPU sets of this node's ranks, by local rank

    def reset_counters(self) -> None:
        """Zero `allreduce_count`, `counts`, `allreduce_time` and `times`."""
        self.allreduce_count = 0
        self.allreduce_time = 0.0
        self.counts: dict[str, int] = defaultdict(int)
        self.times: dict[str, float] = defaultdict(float)

    def allreduce_sum(self, buf, tag: str = "grad"):
        """IN PLACE buf <- sum over ranks of buf (a flat 1-D backend array); returns `buf`."""
        if getattr(buf, "ndim", None) != 1:
            raise ValueError(
                f"allreduce_sum needs a flat 1-D array, got ndim={getattr(buf, 'ndim', None)} "
                f"for tag {tag!r}"
            )
        self._timed(tag, self._allreduce_sum, buf)
        return buf

    def reduce_scatter_sum(self, buf, out, counts, tail=None, tag: str = "grad"):
        """out <- this rank's block of the sum over ranks of `buf` (block r: `counts[r]` elements,
        in rank order), and IN PLACE `tail` <- its sum over ranks, in the same round (the step's
        count, loss and verdicts reach every rank). Returns `out`."""
        check_counts(counts, self.size, buf, out, self.rank)
        self._timed(tag, self._reduce_scatter_sum, buf, out, tuple(counts), tail)
        return out

    def allgather(self, buf, counts, tag: str = "params"):
        """IN PLACE: block r of `buf` (`counts[r]` elements, in rank order) <- rank r's block.
        Returns `buf`."""
        check_counts(counts, self.size, buf)
        self._timed(tag, self._allgather, buf, tuple(counts))
        return buf

    def start_allreduce(self, buf, tag: str = "grad"):
        """Begin the in-place sum over ranks of `buf` (flat, 1-D) and return a handle for `finish`;
        `buf` may not be touched until then. This form reduces at once and returns None (a world
        of one, or a transport without non-blocking collectives)."""
        self.allreduce_sum(buf, tag=tag)

    def progress(self, handles: list) -> None:
        """Let started reductions advance (MPI moves data only inside its calls)."""

    def finish(self, handles: list, tag: str = "grad") -> None:
        """Complete every reduction `start_allreduce` began (None handles are done already)."""

    def _timed(self, tag: str, transport, *args, calls: int = 1):
        """transport(*args), its seconds added to the tag's time and `calls` to its count (0: the
        wait that completes calls counted when they started)."""
        start = time.perf_counter()
        result = transport(*args)
        elapsed = time.perf_counter() - start
        self.allreduce_count += calls
        self.counts[tag] += calls
        self.allreduce_time += elapsed
        self.times[tag] += elapsed
        return result

    def reduce_list(self, arrays, tag: str = "bn") -> list:
        """Sum a list of small same-dtype arrays over ranks in ONE allreduce (concat, sum, split).

        Returns new arrays with the input shapes: out[i] = sum over ranks of arrays[i].
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

    @abstractmethod
    def _allreduce_sum(self, buf) -> None:
        """The transport's in-place sum (MPI, host-staged CuPy, NCCL, or nothing when serial)."""

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

    def node_memory(self, ext_size: int, param_size: int, dtype):
        """Collective: the sharded step's buffers in memory every rank maps (ddl/parallel/shared_memory.py),
        or None where the ranks do not share one node's memory (a world of one, or no MPI)."""
        return None

    def use_allreduce(self, mode: str, backend=None) -> None:
        """How device buffers are reduced (host | cuda_aware | nccl); nothing to do without MPI."""
        check_mode(mode)
        self.allreduce_mode = mode


class SerialComm(Comm):
    """One process, no MPI: every collective is the identity, but the counters still count."""

    def _allreduce_sum(self, buf) -> None:
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


OPS = ("sum", "max", "min")
MODES = ("host", "cuda_aware", "nccl")  # how CuPy buffers are reduced; see gpu.py


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


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
