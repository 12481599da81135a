"""A small dense network's forward pass, loss and backward pass as one compiled call (NumPy +
Numba): the course's networks ([2, 20, 7, 5, 1] and the like) do so little arithmetic per step
that NumPy's ~1 us per call, ~60 calls a step, is most of their time.

`compiled_pass(spec, backend, batch, mode, steps) -> pass or None` (None: the portable
model.forward / losses / model.backward, which stay the reference; tests/test_compiled.py holds
the two equal), where

    pass(params_buf, grads_buf, X, y) -> the summed loss      # the gradients written into grads_buf

Only plain dense networks qualify: no dropout, no batch norm (their portable code stays the one
path), on the NumPy backend, with at most MAX_MACS multiply-adds per step (above that BLAS's
products are what costs, and they are faster than these loops).
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from .model import layout

MAX_MACS = 1 << 20     # weights x examples per step: above this BLAS's products win
# auto: worth it when the steps' saving (~40 us each on the course's networks) beats what loading
# Numba and the cached loop costs once a run (~0.5 s; the very first run compiles it, ~5 s)
MIN_STEPS = 20_000


def compiled_pass(spec, backend, batch: int, mode: str = "auto",
                  steps: Optional[int] = None) -> Optional[Callable]:
    """The compiled pass for `spec` at local batches of up to `batch` examples, or None for the
    portable one. mode (train.compiled_pass): auto (where it qualifies and the run's `steps`, when
    known, are at least MIN_STEPS) | on (where it qualifies, else a ValueError saying why) | off."""
    if mode == "off":
        return None
    why = unfit(spec, backend, batch)
    if why is None and (mode == "on" or steps is None or steps >= MIN_STEPS):
        kernels = _kernels()
        if kernels is not None:
            return CompiledPass(kernels, spec, batch)
        why = "Numba is not installed (pip install numba)"
    if mode == "on":
        raise ValueError(f"train.compiled_pass=on does not fit this run: {why}")
    return None


def unfit(spec, backend, batch: int) -> Optional[str]:
    """Why this network cannot take the compiled pass, or None."""
    macs = sum(a * b for a, b in zip(spec.sizes, spec.sizes[1:])) * batch
    if backend.name != "numpy":
        return f"backend {backend.name!r} (NumPy only)"
    if spec.batchnorm:
        return "batch norm is on (model.batchnorm)"
    if any(k < 1.0 for k in spec.keep_prob):
        return "dropout is on (model.keep_prob < 1)"
    if macs > MAX_MACS:
        return (f"{macs:,} multiply-adds a step (weights x local batch), over {MAX_MACS:,}: BLAS's "
                "products are faster there")
    return None


class CompiledPass:
    """The compiled loop with its buffers, made on the first call for up to `batch` columns in the
    parameters' dtype (made again, wider, if a larger batch comes)."""

    def __init__(self, kernels, spec, batch: int):
        self.kernel = kernels.forward_backward
        self.sizes = np.asarray(spec.sizes, np.int64)
        self.rows = np.concatenate(([0], np.cumsum(self.sizes[1:]))).astype(np.int64)   # z's, a's blocks
        where = layout(spec).offsets()                                                 # W{l} in p, g
        self.weights = np.array([where[f"W{l}"][0] for l in range(1, len(spec.sizes))], np.int64)
        self.hidden = kernels.HIDDEN_CODES[spec.hidden]
        self.output = kernels.OUTPUT_CODES[spec.output]
        self.slope, self.columns, self.dtype = float(spec.slope), max(batch, 1), None

    def grow(self, columns: int, dtype) -> None:
        sizes, self.columns, self.dtype = self.sizes, columns, np.dtype(dtype)
        widest = int(sizes.max())
        self.x = np.empty((sizes[0], columns), dtype)
        self.z = np.empty((int(self.rows[-1]), columns), dtype)
        self.a = np.empty_like(self.z)
        self.d = np.empty((widest, columns), dtype)
        self.e = np.empty_like(self.d)

    def __call__(self, p, g, X, y) -> float:
        b = X.shape[1]
        if self.dtype is None or b > self.columns or p.dtype != self.dtype:
            self.grow(max(b, self.columns), p.dtype)
        y = y.reshape(b, -1)                      # labels (b,) -> (b, 1); targets (b, k) as they are
        return self.kernel(p, g, X, y, self.sizes, self.rows, self.weights, self.hidden, self.output,
                           self.slope, self.x, self.z, self.a, self.d, self.e)


_LOADED: list = []


def _kernels():
    """The compiled loop's module (cached on disk by Numba after the first run), or None."""
    if not _LOADED:
        try:
            from ddl.nn import compiled_kernels  # noqa: PLC0415 - imports Numba: only when asked for
        except ImportError:
            return None
        _LOADED.append(compiled_kernels)
    return _LOADED[0]
