"""The sharded step's buffers in memory that every rank of one node maps (MPI-3 shared windows).

When every rank runs on one node, the sharded step (ddl/parallel/reduction.py) need not send a
gradient or parameter byte through MPI:

    grads     each rank's [gradients | tail] buffer is its own segment of one shared window
    params    one parameter buffer, in a second window, that every rank trains from

The reduce-scatter becomes the tail's allreduce (its completion also says that every rank has
written its gradients) followed by this rank summing its block of every rank's segment, in rank
order; the allgather becomes a barrier, because each rank updated its block of the one parameter
buffer in place. The barrier also keeps a rank from writing its next gradients while another is
still reading them. `MPIComm` (ddl/parallel/mpi.py) takes those two paths for these buffers.

Freeing the windows is collective: only a run that ends normally frees them (`free`); after an
error they stay mapped until the process exits, so that no rank waits on a dying one.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

import numpy as np
from mpi4py import MPI

log = logging.getLogger("ddl")
SHM_DIR = "/dev/shm"
HEADROOM = 1.5          # the windows may take at most 1/HEADROOM of the free shared memory


class NodeMemory:
    """The two windows and this rank's NumPy views of them."""

    def __init__(self, node, wins: list, segments: list, params: np.ndarray):
        self.node, self.wins = node, wins
        self.segments = segments                    # every rank's [grads | tail], by rank
        self.grads = segments[node.Get_rank()]      # this rank's
        self.params = params

    @classmethod
    def allocate(cls, comm, ext_size: int, param_size: int, dtype) -> Optional["NodeMemory"]:
        """Collective over `comm` (all on one node): the windows, or None on every rank when the
        node's shared memory (SHM_DIR) has not room enough to spare."""
        itemsize = np.dtype(dtype).itemsize
        need = (comm.Get_size() * ext_size + param_size) * itemsize
        if not comm.allreduce(int(room() >= HEADROOM * need), op=MPI.MIN):
            if comm.Get_rank() == 0:
                log.warning("the node's shared memory (%s) has too little room for the sharded "
                            "step's buffers (%.0f MiB, %.0f free); the gradients go through MPI "
                            "instead", SHM_DIR, need / 2**20, room() / 2**20)
            return None
        node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
        grads = MPI.Win.Allocate_shared(ext_size * itemsize, itemsize, comm=node)
        params = MPI.Win.Allocate_shared(param_size * itemsize if node.Get_rank() == 0 else 0,
                                         itemsize, comm=node)
        segments = [view(grads, r, ext_size, dtype) for r in range(node.Get_size())]
        memory = cls(node, [grads, params], segments, view(params, 0, param_size, dtype))
        for win in memory.wins:
            win.Lock_all(MPI.MODE_NOCHECK)          # a passive epoch for the whole run: loads,
        memory.grads[:] = 0                         # stores and Sync() (a memory barrier) only
        return memory

    def holds_grads(self, buf) -> bool:
        return _same_start(buf, self.grads)

    def holds_params(self, buf) -> bool:
        return _same_start(buf, self.params)

    def sync(self) -> None:
        """Make this rank's stores visible to the others and theirs to it (around a collective)."""
        for win in self.wins:
            win.Sync()

    def sum_block(self, lo: int, hi: int, out: np.ndarray) -> None:
        """out <- the sum over ranks of [lo, hi) of their gradients, in rank order (the first two
        added in one pass; `allocate` makes at least two segments)."""
        first, second, *rest = self.segments
        np.add(first[lo:hi], second[lo:hi], out=out)
        for seg in rest:
            np.add(out, seg[lo:hi], out=out)

    def fill_params(self, values: np.ndarray) -> None:
        """The shared parameters <- `values` (equal on every rank): written by the node's first
        rank, then a barrier."""
        if self.node.Get_rank() == 0:
            np.copyto(self.params, values)
        self.sync()
        self.node.Barrier()
        self.sync()

    def free(self) -> None:
        """Collective: unmap the windows (no view of them may be used afterwards)."""
        self.segments, self.grads, self.params = [], None, None
        for win in self.wins:
            win.Unlock_all()
            win.Free()
        self.node.Free()


def view(win, rank: int, size: int, dtype) -> np.ndarray:
    buf, _ = win.Shared_query(rank)
    return np.frombuffer(buf, dtype=dtype, count=size)


def room(path: str = SHM_DIR) -> int:
    """Bytes free in the node's shared memory (0 where there is no such folder)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def _same_start(buf, base) -> bool:
    return (base is not None and isinstance(buf, np.ndarray) and buf.size > 0
            and buf.__array_interface__["data"][0] == base.__array_interface__["data"][0])
