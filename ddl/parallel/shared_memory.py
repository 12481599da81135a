"""The sharded step's buffers in memory that every rank of one node maps (MPI-3 shared windows).

When every rank runs on one node, the sharded step (ddl/parallel/reduction.py) need not send a
gradient or parameter byte through MPI:

    grads     each rank's [gradients | tail] buffer is its own segment of one shared window
    params    one parameter buffer, in a second window, that every rank trains from

The reduce-scatter becomes the tail's allreduce (its completion also says that every rank has
written its gradients) followed by this rank summing its block of every rank's segment, in rank
order; the allgather becomes a barrier, because each rank updated its block of the one parameter
buffer in place. The barrier also keeps a rank from writing its next gradients while another is
still reading them.

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


class SharedBuffers:
    """The two windows, this rank's NumPy views of them, and the two halves of the step's
    collective through them."""

    def __init__(self, comm, node, wins: list, segments: list, params: np.ndarray, size: int):
        self.comm, self.node, self.wins = comm, node, wins
        self.segments = segments                    # every rank's [grads | tail], by rank
        self.grads = segments[node.Get_rank()]      # this rank's
        self.tail = self.grads[size:]
        self.params = params

    @classmethod
    def allocate(cls, comm, ext_size: int, param_size: int, dtype) -> Optional["SharedBuffers"]:
        """Collective over `comm` (a ddl MPIComm, all on one node): the windows, or None on every
        rank when the node's shared memory (SHM_DIR) has not room enough to spare."""
        itemsize = np.dtype(dtype).itemsize
        need = (comm.size * ext_size + param_size) * itemsize
        if not comm.mpi.allreduce(int(room() >= HEADROOM * need), op=MPI.MIN):
            if comm.rank == 0:
                log.warning("the node's shared memory (%s) has too little room for the sharded "
                            "step's buffers (%.0f MiB, %.0f free); the gradients go through MPI "
                            "instead", SHM_DIR, need / 2**20, room() / 2**20)
            return None
        node = comm.mpi.Split_type(MPI.COMM_TYPE_SHARED, key=comm.rank)
        grads = MPI.Win.Allocate_shared(ext_size * itemsize, itemsize, comm=node)
        params = MPI.Win.Allocate_shared(param_size * itemsize if node.Get_rank() == 0 else 0,
                                         itemsize, comm=node)
        segments = [view(grads, r, ext_size, dtype) for r in range(node.Get_size())]
        buffers = cls(comm, node, [grads, params], segments, view(params, 0, param_size, dtype),
                      param_size)
        for win in buffers.wins:
            win.Lock_all(MPI.MODE_NOCHECK)          # a passive epoch for the whole run: loads,
        buffers.grads[:] = 0                        # stores and Sync() (a memory barrier) only
        return buffers

    def reduce_scatter(self, lo: int, hi: int, out: np.ndarray) -> None:
        """out <- the sum over ranks of [lo, hi) of their gradients, and the tail summed in place:
        this rank's gradients out, the tail's allreduce (every rank's gradients are in once it
        completes), then the block summed from every segment."""
        self.sync()
        self.comm.wait([self.comm.mpi.Iallreduce(MPI.IN_PLACE, self.tail, op=MPI.SUM)])
        self.sync()
        self.sum_block(lo, hi, out)

    def barrier(self) -> None:
        """The allgather: every block is in place already once every rank has written its own."""
        self.sync()
        self.comm.wait([self.comm.mpi.Ibarrier()])
        self.sync()

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

    def holds_params(self, buf) -> bool:
        return self.params is not None and buf is self.params

    def free(self) -> None:
        """Collective: unmap the windows (no view of them may be used afterwards)."""
        self.segments, self.grads, self.tail, self.params = [], None, None, None
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
