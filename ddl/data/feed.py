"""Getting a split's rows onto the backend as columns (n_x, b).

Small splits are moved to the device ONCE, cast, and each batch is a gather of whole rows there
(contiguous copies; on a GPU the data then never crosses PCIe again). File-backed
splits (.npy) and splits larger than `cache_mb` are read row by row on demand, so memory stays flat. Either
way the batch is the transposed VIEW of its rows, (n_x, b): the matrix products read it in place,
and both paths give identical arrays, so the choice never changes a result.
"""
from __future__ import annotations

import numpy as np


class Feeder:
    """Batches of one split for one backend and dtype."""

    def __init__(self, backend, split, dtype: str, cache_mb: float):
        self.backend, self.split, self.dtype = backend, split, dtype
        self.X = self.y = None
        self.last = (None, None)       # (idx, its batch): a full batch asks for the same rows each step
        nbytes = split.m * split.n_x * np.dtype(dtype).itemsize
        in_memory = isinstance(getattr(split, "source", None), np.ndarray)  # not a file on disk
        if in_memory and 0 < nbytes <= cache_mb * 2**20:
            rows, y = split.take(np.arange(split.m))
            self.X = backend.asarray(rows, dtype)
            self.y = backend.asarray(y)

    def batch(self, idx: np.ndarray):
        """(X (n_x, b), y (b,) or (b, k)) of the split's rows `idx` (host int64 array). The same
        `idx` array as the last call gets the same arrays back (the caller must not write to them)."""
        if idx is not self.last[0]:
            self.last = (idx, self.gather(idx))
        return self.last[1]

    def gather(self, idx: np.ndarray):
        xp, backend = self.backend.xp, self.backend
        if self.X is not None:
            i = backend.asarray(idx)
            return xp.take(self.X, i, axis=0).T, xp.take(self.y, i, axis=0)
        rows, y = self.split.take(idx)
        return backend.asarray(np.ascontiguousarray(rows, dtype=self.dtype)).T, backend.asarray(y)


def feeder(cache: dict, backend, split, dtype: str, cache_mb: float) -> Feeder:
    """The Feeder of `split`, built on first use and kept in `cache`."""
    key = id(split)
    if key not in cache:
        cache[key] = Feeder(backend, split, dtype, cache_mb)
    return cache[key]
