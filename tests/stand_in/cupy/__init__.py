"""A test-only CuPy, for CI machines without a GPU: ddl's real CuPy code paths run over
array_api_strict arrays that live on a device other than the CPU ("device1"), and that refuse every
implicit host conversion (np.asarray, float(), int(), bool(), DLPack): a hidden host read on the
device path fails the test, where real CuPy would only wait for the GPU. Only what ddl calls is
here: the array namespace (registered as array_api_compat.cupy, creating arrays on the device),
asnumpy, the runtime's device count (DDL_STAND_IN_GPUS, default 1), Device().use(), the current
stream, ndarray.get/set/data.ptr/__cuda_array_interface__, cupyx.empty_pinned, and NCCL over MPI
(cupy.cuda.nccl). No kernels: ElementwiseKernel (the fused update's) is absent.

    PYTHONPATH=tests/stand_in python -m ddl backend=cupy ...
"""
from __future__ import annotations

import itertools
import sys
import types

import array_api_strict as _xs
import numpy as _np

__version__ = "14.2.0 (ddl's stand-in)"
DEVICE = _xs.Device("device1")
CPU = _xs.Device("CPU_DEVICE")
ndarray = type(_xs.asarray(0.0))


def _on_device(a) -> bool:
    return isinstance(a, ndarray) and a.device == DEVICE


def _refusing(name: str):
    original = getattr(ndarray, name)

    def guarded(self, *args, **kwargs):
        if self.device == DEVICE:
            raise RuntimeError(f"implicit host conversion of a device array ({name}): ddl must "
                               "copy device data to the host explicitly (Backend.to_numpy)")
        return original(self, *args, **kwargs)
    return guarded


for _name in ("__float__", "__int__", "__bool__", "__index__", "__complex__", "__dlpack__"):
    setattr(ndarray, _name, _refusing(_name))


def asnumpy(a, out=None):
    """The explicit copy to the host."""
    host = _np.asarray(a.to_device(CPU)) if isinstance(a, ndarray) else _np.asarray(a)
    if out is None:
        return host.copy()
    out[...] = host
    return out


_POINTERS: dict = {}
_NEXT = itertools.count(1)


def _get(self, out=None):
    return asnumpy(self, out=out)


def _set(self, host):
    self[...] = _xs.asarray(_np.asarray(host), device=DEVICE)


def _data(self):
    ptr = next(_NEXT)
    _POINTERS[ptr] = self
    return types.SimpleNamespace(ptr=ptr)


ndarray.get = _get
ndarray.set = _set
ndarray.data = property(_data)
ndarray.__cuda_array_interface__ = property(lambda self: {"device": str(self.device)})
ndarray.flags = property(lambda self: types.SimpleNamespace(c_contiguous=True))   # strict arrays are
type(_xs.float64).name = property(lambda self: self._np_dtype.name)             # and their dtypes named


class _Namespace(types.ModuleType):
    """array_api_strict, with arrays created on the device unless a device is given."""

    CREATION = ("asarray", "zeros", "ones", "empty", "full", "arange", "eye", "linspace")

    def __getattr__(self, name):
        value = getattr(_xs, name)
        if name in self.CREATION:
            def created(*args, device=None, **kwargs):
                return value(*args, device=DEVICE if device is None else device, **kwargs)
            return created
        return value


namespace = _Namespace("array_api_compat.cupy")
sys.modules["array_api_compat.cupy"] = namespace

from cupy import cuda  # noqa: E402,F401 - after the names its modules use
