"""Shared fixtures: the same numerical suite on every backend.

`backend` runs a test on numpy float32, numpy float64, array_api_strict float64 and (only when a
GPU is visible) cupy float32; `backend64` on the float64 ones only (gradient checks need float64).
Tolerances: `bk.tol` is the relative accuracy to expect from a short chain of ops in the dtype
(1e-12 in float64, 1e-5 in float32: float32 has a 6e-8 unit roundoff, times a few dozen ops).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from ddl.backend import Backend, get_backend, gpu_count

ALL = ["numpy-float32", "numpy-float64", "array_api_strict-float64", "cupy-float32"]
FLOAT64 = ["numpy-float64", "array_api_strict-float64", "cupy-float64"]


@dataclass(frozen=True)
class BK:
    """A backend under test plus its dtype and helpers that move data and check types."""

    backend: Backend
    dtype_name: str

    @property
    def xp(self):
        return self.backend.xp

    @property
    def dtype(self):
        return self.backend.dtype(self.dtype_name)

    @property
    def tol(self) -> float:
        return 1e-12 if self.dtype_name == "float64" else 1e-5

    def arr(self, host, dtype: str | None = "same"):
        """Host -> backend array in the test dtype (dtype=None keeps the host dtype, e.g. ints)."""
        return self.backend.asarray(host, self.dtype_name if dtype == "same" else dtype)

    def np(self, a) -> np.ndarray:
        """Backend array -> host, asserting it IS a backend array (array_api_strict arrays would
        otherwise be converted silently by NumPy)."""
        assert self.backend.is_array(a), f"expected a {self.backend.name} array, got {type(a)}"
        return self.backend.to_numpy(a)

    def num_grad(self, f, Z: np.ndarray) -> np.ndarray:
        """Central differences of the scalar f(backend array) w.r.t. each entry of host Z.

        Steps 1e-6 (float64) / 1e-2 (float32); the step actually taken is measured after rounding
        Z +- h to the dtype, so float32 rounding of the step itself does not bias the result.
        """
        h = 1e-6 if self.dtype_name == "float64" else 1e-2
        Z = np.asarray(Z, dtype=self.dtype_name)
        g = np.zeros(Z.shape)
        for i in np.ndindex(Z.shape):
            Zp, Zm = Z.copy(), Z.copy()
            Zp[i] += h
            Zm[i] -= h
            fp, fm = (float(self.np(self.xp.asarray(f(self.arr(a))))) for a in (Zp, Zm))
            g[i] = (fp - fm) / (float(Zp[i]) - float(Zm[i]))
        return g


def _make(param: str) -> BK:
    name, dtype = param.split("-")
    if name == "cupy" and gpu_count() == 0:
        pytest.skip("cupy backend needs a CUDA GPU; none is visible")
    return BK(get_backend(name), dtype)


@pytest.fixture(params=ALL)
def backend(request) -> BK:
    return _make(request.param)


@pytest.fixture(params=FLOAT64)
def backend64(request) -> BK:
    return _make(request.param)
from mlflow_server import mlflow_server  # noqa: F401,E402 - a real server for the MLflow tests
