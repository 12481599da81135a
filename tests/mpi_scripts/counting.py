"""A NumPy twin of a GPU that counts every time the host would wait for the device.

`CountingBackend` hands out `CountingArray`s (an ndarray subclass): each implicit host read that
would block on a GPU (`float(a)`, `bool(a)`, `int(a)`, `a.item()`, `a.tolist()`) is counted, as
are the backend's explicit edges (`to_numpy`, `synchronize`). `CountingDevice` stands in for
`ddl.parallel.gpu.CupyDevice` under the three allreduce strategies: its device->host copy and its
stream drain count as waits, and its `nccl()` is a stand-in NCCL that sums through MPI on the
host (queued on "the stream", so it waits for nothing, like the real one).
"""
from __future__ import annotations

import types
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

WAITS = Counter()   # kind -> count; sum(WAITS.values()) is the number of host waits


class CountingArray(np.ndarray):
    """A "device" array: reductions stay 0-d arrays (as on CuPy), host reads are counted."""

    def __array_wrap__(self, obj, context=None, return_scalar=False):
        return super().__array_wrap__(obj, context, False)

    def __array_function__(self, func, types, args, kwargs):
        # np.concatenate & co. would hand back plain ndarrays: keep them "on the device"
        return counted(super().__array_function__(func, types, args, kwargs))

    def __float__(self):
        WAITS["float()"] += 1
        return super().__float__()

    def __int__(self):
        WAITS["int()"] += 1
        return super().__int__()

    def __bool__(self):
        WAITS["bool()"] += 1
        return super().__bool__()

    def item(self, *args):
        WAITS["item()"] += 1
        return super().item(*args)

    def tolist(self):
        WAITS["tolist()"] += 1
        return super().tolist()


def counted(out):
    """Results of the namespace's functions, as CountingArrays."""
    if isinstance(out, (tuple, list)):
        return type(out)(counted(o) for o in out)
    if isinstance(out, np.ndarray) and not isinstance(out, CountingArray):
        return out.view(CountingArray)
    if isinstance(out, np.generic):
        return np.asarray(out).view(CountingArray)
    return out


class CountingNamespace:
    """array_api_compat.numpy, with every array it returns a CountingArray."""

    def __init__(self, xp):
        self._xp = xp

    def __getattr__(self, name):
        f = getattr(self._xp, name)
        if not callable(f) or isinstance(f, type):
            return f
        return lambda *a, **k: counted(f(*a, **k))


def counting_backend():
    import array_api_compat.numpy as xp

    from ddl.backend import Backend

    @dataclass(frozen=True)
    class CountingBackend(Backend):
        def asarray(self, a, dtype=None):
            return counted(np.asarray(super().asarray(a, dtype)))

        def to_numpy(self, a):
            WAITS["to_numpy"] += 1
            return np.array(a, copy=True).view(np.ndarray)

        def synchronize(self):
            WAITS["synchronize"] += 1

    return CountingBackend("numpy", CountingNamespace(xp))


@dataclass
class CountingDevice:
    """The device operations of the GPU strategies, on CountingArrays."""

    routed: Counter = field(default_factory=Counter)   # strategy calls by kind
    arrays: dict = field(default_factory=dict)         # "pointer" -> array, for the NCCL twin
    gpus: int = 1                                       # the node's visible devices

    def device_count(self) -> int:
        return self.gpus

    @staticmethod
    def owns(buf) -> bool:
        return isinstance(buf, CountingArray)

    @staticmethod
    def sync() -> None:
        WAITS["stream sync"] += 1

    @staticmethod
    def pinned(n, dtype):
        return np.empty((n,), dtype=dtype)

    def to_host(self, buf, out) -> None:
        WAITS["device->host copy"] += 1
        self.routed["staged"] += 1
        out[...] = buf

    @staticmethod
    def to_device(host, buf) -> None:
        buf[...] = host

    @staticmethod
    def stream_ptr() -> int:
        return 0

    @staticmethod
    def event():
        """The twin's collectives complete when called: every queued one is done."""
        return lambda: True

    def ptr(self, buf) -> int:
        self.arrays[id(buf)] = buf
        return id(buf)

    def nccl(self):
        return nccl_twin(self)


def nccl_twin(device: CountingDevice):
    """What ddl's Nccl strategy touches of cupy.cuda.nccl, summing through MPI on the host."""
    from mpi4py import MPI

    class NcclCommunicator:
        def __init__(self, size, uid, rank):
            assert uid == b"uid" and size == MPI.COMM_WORLD.Get_size()
            self.comm = MPI.COMM_WORLD.Clone()

        def allReduce(self, send, recv, n, dtype, op, stream):
            assert send == recv and op == "sum"
            buf = device.arrays.pop(send)
            assert buf.size == n
            device.routed["nccl"] += 1
            self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)

        def bcast(self, ptr, n, dtype, root, stream):
            self.comm.Bcast(device.arrays.pop(ptr), root=root)

        def destroy(self):
            self.comm.Free()

    return types.SimpleNamespace(
        available=True, NcclCommunicator=NcclCommunicator, get_unique_id=lambda: b"uid",
        NCCL_SUM="sum", NCCL_FLOAT32=0, NCCL_FLOAT64=1, NCCL_INT32=2, NCCL_INT64=3)
