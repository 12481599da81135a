"""backend.py's GPU edges without a GPU: why `auto` fell back, what `cupy` says, which CuPy to
install, and device arrays passed through `asarray` untouched (stand-in CuPy modules)."""
from __future__ import annotations

import logging
import sys
import types

import numpy as np
import pytest

from ddl import backend as B


def stand_in_cupy(monkeypatch, count=None, error=None):
    """A `cupy` whose runtime reports `count` devices or raises `error`."""
    def get_device_count():
        if error is not None:
            raise error
        return count

    runtime = types.SimpleNamespace(getDeviceCount=get_device_count)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(
        __version__="14.2.0", cuda=types.SimpleNamespace(runtime=runtime)))
    monkeypatch.setattr(B, "_WARNED", {"auto": False})
    monkeypatch.setattr(B, "cuda_driver_major", lambda: 12)    # a driver is there (too old, say)


class CUDARuntimeError(RuntimeError):
    pass


def test_auto_says_once_why_it_fell_back_to_numpy(monkeypatch, caplog):
    stand_in_cupy(monkeypatch, error=CUDARuntimeError("cudaErrorInsufficientDriver"))
    with caplog.at_level(logging.WARNING, logger="ddl"):
        assert B.get_backend("auto").name == "numpy"
        assert B.get_backend("auto").name == "numpy"
    (record,) = caplog.records
    assert "cudaErrorInsufficientDriver" in record.getMessage()
    assert "gpu-cuda1" in record.getMessage()


def test_auto_without_cupy_is_quiet(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "cupy", None)          # import cupy -> ImportError
    monkeypatch.setattr(B, "_WARNED", {"auto": False})
    with caplog.at_level(logging.WARNING, logger="ddl"):
        assert B.get_backend("auto").name == "numpy"
    assert caplog.records == []


def test_auto_says_when_an_installed_cupy_does_not_import(monkeypatch, caplog, tmp_path):
    broken = tmp_path / "cupy"                # an installed CuPy whose CUDA libraries are missing
    broken.mkdir()
    (broken / "__init__.py").write_text("raise ImportError('libcudart.so.13: cannot open shared object file')")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cupy", raising=False)
    monkeypatch.setattr(B, "_WARNED", {"auto": False})
    with caplog.at_level(logging.WARNING, logger="ddl"):
        assert B.get_backend("auto").name == "numpy"
    (record,) = caplog.records
    assert "CuPy is installed but does not import" in record.getMessage()
    assert "libcudart.so.13" in record.getMessage()


def test_cupy_without_a_driver_says_the_driver_is_missing(monkeypatch):
    monkeypatch.setattr(B, "cuda_driver_major", lambda: None)
    assert "install the NVIDIA driver" in B.cupy_package_hint(installed=True)
    assert "cupy-cuda13x" in B.cupy_package_hint()          # CuPy missing: the package, as before


def test_cupy_names_the_cause_and_the_package(monkeypatch):
    stand_in_cupy(monkeypatch, error=CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device"))
    with pytest.raises(RuntimeError, match=r"cudaErrorNoDevice.*pip install 'ddl\[gpu-cuda1"):
        B.get_backend("cupy")
    stand_in_cupy(monkeypatch, count=0)
    with pytest.raises(RuntimeError, match="CUDA_VISIBLE_DEVICES"):
        B.get_backend("cupy")


def test_the_package_hint_follows_the_driver():
    assert "cupy-cuda13x" in B.cupy_package_hint(13) and "cuda12" not in B.cupy_package_hint(13)
    assert "cupy-cuda12x" in B.cupy_package_hint(12)
    both = B.cupy_package_hint(None if B.cuda_driver_major() is None else 11)
    assert "cupy-cuda13x" in both and "cupy-cuda12x" in both and "never both" in both


class DeviceArray:
    """Like cupy.ndarray: refuses implicit conversion to NumPy."""

    __cuda_array_interface__ = {}
    dtype = np.float32

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed")

    def astype(self, dtype, copy=True):
        out = DeviceArray()
        out.dtype = np.dtype(dtype)
        return out


def test_asarray_leaves_device_arrays_on_the_device():
    be = B.Backend("cupy", xp=types.SimpleNamespace(asarray=lambda a: ("copied", a)))
    a = DeviceArray()
    assert be.asarray(a) is a
    assert be.asarray(a, "float64").dtype == np.float64
    assert be.asarray(np.ones(2))[0] == "copied"              # host arrays still go to the device
