"""The array backend: the only module that knows NumPy, CuPy and array_api_strict apart.

Everything numerical receives a `Backend` (or just its `xp` namespace) chosen once at start-up.
It also owns the counter-based random stream used for dropout masks, so a mask depends only on
(key, global example index, unit) and never on how a batch was split across ranks.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

BACKENDS = ("numpy", "cupy", "array_api_strict", "auto")
DTYPES = ("float32", "float64")

_M64 = (1 << 64) - 1
# NumPy >= 2.1 follows the array API standard in every function ddl calls (astype included), so
# its own namespace serves ddl directly: array_api_compat's wrappers cost a call layer on every
# matmul and sum, most of a small network's step. Older NumPy goes through the wrappers.
LEAN_NUMPY = tuple(int(v) for v in np.__version__.split(".")[:2]) >= (2, 1)


def namespace(*arrays):
    """The array namespace of `arrays` (array_api_compat's), bare NumPy where it is lean."""
    if LEAN_NUMPY and all(type(a) is np.ndarray for a in arrays):
        return np
    from array_api_compat import array_namespace  # noqa: PLC0415

    return array_namespace(*arrays)


@dataclass(frozen=True)
class Backend:
    """A chosen array namespace plus the host<->device edges."""

    name: str
    xp: Any
    device_id: int | None = None

    def dtype(self, name: str):
        if name not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {name!r}")
        return getattr(self.xp, name)

    def asarray(self, a, dtype: str | None = None):
        """Host (NumPy) or backend array -> backend array, optionally cast to `dtype`
        ('float32'/'float64'). A device array stays on the device (no host round trip)."""
        if self.name == "cupy" and hasattr(a, "__cuda_array_interface__"):
            return a if dtype is None else a.astype(dtype, copy=False)
        a = np.asarray(a)
        if dtype is not None:
            a = a.astype(dtype, copy=False)
        if self.name == "array_api_strict":
            return self.xp.asarray(a)
        if self.name == "cupy":
            return self.xp.asarray(a)
        return a

    def to_numpy(self, a) -> np.ndarray:
        """Backend array (or scalar) -> host NumPy array."""
        if self.name == "cupy":
            import cupy  # noqa: PLC0415 - only this module imports CuPy

            return cupy.asnumpy(a)
        if self.name == "array_api_strict":
            return np.asarray(a._array) if hasattr(a, "_array") else np.asarray(a)
        return np.asarray(a)

    def synchronize(self) -> None:
        """Wait for queued device work (needed before handing device memory to MPI)."""
        if self.name == "cupy":
            import cupy  # noqa: PLC0415

            cupy.cuda.get_current_stream().synchronize()

    def is_array(self, a) -> bool:
        if self.name == "array_api_strict":
            return isinstance(a, type(self.xp.asarray(0.0)))
        if self.name == "cupy":
            import cupy  # noqa: PLC0415

            return isinstance(a, cupy.ndarray)
        return isinstance(a, np.ndarray)


def gpu_count() -> int:
    """Number of visible CUDA devices (0 if CuPy or a driver is missing)."""
    return gpu_status()[0]


NO_CUPY = "CuPy is not installed"


def gpu_status() -> tuple[int, str]:
    """(visible CUDA devices, why none: "" when there are some, else the cause in CuPy's words)."""
    try:
        import cupy  # noqa: PLC0415
    except ModuleNotFoundError as err:
        if err.name == "cupy" or err.name is None:
            return 0, NO_CUPY
        return 0, f"CuPy is installed but does not import ({type(err).__name__}: {err})"
    except Exception as err:  # noqa: BLE001 - a broken CuPy install is also "no GPU", with a reason
        return 0, f"CuPy is installed but does not import ({type(err).__name__}: {err})"
    try:
        n = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as err:  # noqa: BLE001 - driver too old, wrong wheel for the CUDA, no device
        version = getattr(cupy, "__version__", "?")
        return 0, f"CuPy {version} found no usable device ({type(err).__name__}: {err})"
    return n, "" if n else "CuPy sees no CUDA device (check CUDA_VISIBLE_DEVICES and --gpus)"


def cuda_driver_major() -> int | None:
    """The CUDA major version the installed driver supports (libcuda), or None without a driver."""
    import ctypes  # noqa: PLC0415

    try:
        version = ctypes.c_int(0)
        if ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version)) != 0:
            return None
        return version.value // 1000
    except (OSError, AttributeError):
        return None


def cupy_package_hint(major: int | None = None, installed: bool = False) -> str:
    """What to install: the CuPy wheel (and ddl extra) that matches this machine's CUDA driver; with
    CuPy `installed` and no driver at all, the driver is what is missing."""
    major = cuda_driver_major() if major is None else major
    if installed and major is None:
        return ("install the NVIDIA driver (no libcuda.so.1 is loadable here), or run on a GPU "
                "machine; CuPy itself is installed")
    if major in (12, 13):
        return f"pip install 'ddl[gpu-cuda{major}]' (cupy-cuda{major}x, for this driver's CUDA {major})"
    return ("pip install 'ddl[gpu-cuda13]' (cupy-cuda13x) or 'ddl[gpu-cuda12]' (cupy-cuda12x), "
            "matching the CUDA version nvidia-smi shows; never both")


_WARNED = {"auto": False}


def get_backend(name: str = "numpy", local_rank: int = 0) -> Backend:
    """Choose the backend once. `auto` is CuPy when a GPU is visible, NumPy otherwise.

    With CuPy, the process binds to GPU `local_rank % device_count`.
    """
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "auto":
        n, why = gpu_status()
        if n == 0 and why != NO_CUPY and not _WARNED["auto"]:
            _WARNED["auto"] = True      # CuPy is there but unusable: say why once, then use NumPy
            logging.getLogger("ddl").warning("backend=auto: using NumPy because %s. Fix: %s", why,
                                             cupy_package_hint(installed=True))
        name = "cupy" if n > 0 else "numpy"
    if name == "numpy":
        if LEAN_NUMPY:
            return Backend("numpy", np)
        import array_api_compat.numpy as xp  # noqa: PLC0415

        return Backend("numpy", xp)
    if name == "array_api_strict":
        import array_api_strict as xp  # noqa: PLC0415

        return Backend("array_api_strict", xp)
    n, why = gpu_status()
    if n == 0:
        raise RuntimeError(f"backend=cupy was asked for, but no GPU is usable here: {why}. Fix: "
                           f"{cupy_package_hint(installed=why != NO_CUPY)}; or run with "
                           "backend=numpy or backend=auto.")
    import array_api_compat.cupy as xp  # noqa: PLC0415
    import cupy  # noqa: PLC0415

    device = local_rank % n
    cupy.cuda.Device(device).use()
    return Backend("cupy", xp, device_id=device)


THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def set_blas_threads(n: int | None) -> None:
    """Limit BLAS threads (one per rank under MPI keeps 2 ranks on 2 cores from fighting)."""
    if not n:
        return
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415

        threadpool_limits(int(n))
    except ImportError:
        os.environ.setdefault("OMP_NUM_THREADS", str(n))


def kernel_threads(env=os.environ, blas: int | None = None) -> int:
    """Threads ddl's own compiled loops (the fused update) may run on in this process: as many as
    the BLAS was given (`blas`), else the user's OMP_NUM_THREADS / OPENBLAS_NUM_THREADS /
    MKL_NUM_THREADS, else 1."""
    if blas:
        return int(blas)
    for name in THREAD_VARIABLES:
        value = env.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


# ---- counter-based random numbers (SplitMix64 finalizer over a counter) --------------------------

def _mix_int(x: int) -> int:
    """SplitMix64 finalizer on a Python int (host side, for building keys)."""
    x &= _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def make_key(*parts: int) -> int:
    """Fold integers (seed, epoch, step, layer, ...) into one 64-bit key."""
    k = 0x9E3779B97F4A7C15
    for p in parts:
        k = _mix_int(k ^ (int(p) & _M64))
    return k


def _mix(xp, x):
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB
    return x ^ (x >> 31)


def counter_uniform(xp, key: int, rows: int, cols, dtype):
    """Uniform [0, 1) numbers of shape (rows, len(cols)), element (i, j) a pure function of
    (key, cols[j], i): `cols` holds global example indices (integer backend array), `i` is the unit.

    The same (key, example, unit) gives the same number on any rank, in any batch split.
    """
    col = xp.astype(cols, xp.uint64)
    unit = xp.arange(rows, dtype=xp.uint64)
    base = _mix(xp, col ^ key)                         # per example
    x = _mix(xp, base[None, :] + (unit[:, None] + 1) * 0x9E3779B97F4A7C15)
    bits = 53 if dtype == xp.float64 else 24       # exact in the dtype: never rounds up to 1.0
    return xp.astype(x >> (64 - bits), dtype) * (1.0 / (1 << bits))
