"""The stand-in's NCCL: sums through MPI on the host, what ddl's Nccl strategy calls of it
(DDL_STAND_IN_NCCL=0: a CuPy without NCCL)."""
import os

import numpy as np

available = os.environ.get("DDL_STAND_IN_NCCL", "1") == "1"
NCCL_SUM, NCCL_FLOAT32, NCCL_FLOAT64, NCCL_INT32, NCCL_INT64 = "sum", 0, 1, 2, 3


def get_unique_id():
    return b"stand-in"


class NcclCommunicator:
    def __init__(self, size, uid, rank):
        from mpi4py import MPI

        assert uid == b"stand-in"
        self.comm = MPI.COMM_WORLD.Clone()
        assert (self.comm.Get_size(), self.comm.Get_rank()) == (size, rank)

    def _array(self, ptr):
        from cupy import _POINTERS

        return _POINTERS.pop(ptr)

    def allReduce(self, send, recv, count, dtype, op, stream):  # noqa: N802 - NCCL's name
        from mpi4py import MPI

        assert send == recv and op == NCCL_SUM
        buf = self._array(send)
        host = buf.get()
        assert host.size == count
        self.comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM)
        buf.set(host)

    def bcast(self, ptr, count, dtype, root, stream):
        buf = self._array(ptr)
        host = np.ascontiguousarray(buf.get())
        self.comm.Bcast(host, root=root)
        buf.set(host)

    def destroy(self):
        self.comm.Free()
