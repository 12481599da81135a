"""Splits: a dataset's raw arrays, seeded train/dev/test index sets, and the `Split` row view.

A `Split` is an index array into a row source (an in-memory array, or `NpyRows` reading a .npy file
on demand); `take(idx)` reads only the requested rows, so a split never loads a whole file.
Rows are examples: features come out as (b, n_x), labels as (b,) int64 or (b, k) float targets.
Integer features are widened to float64; uint8 ones are pixels, divided by 255 as the course does.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import numpy as np

# Third SeedSequence word so the split stream never equals an epoch stream default_rng([seed, e]).
_SPLIT_STREAM = 0x5EED
# Feature bytes per streamed chunk (NaN scans, normalizer fits): bounds peak memory on big files.
CHUNK_BYTES = 8 << 20
PIXEL_DIVISOR = 255.0   # uint8 features are pixels, scaled to [0, 1] as the course does


@dataclass
class Raw:
    """A dataset as loaded, before splitting. X is (M, ...) rows; y is (M,) labels or (M, k)."""

    where: str                      # file path or generator description, used in every error
    X: Any                          # ndarray or NpyRows
    y: np.ndarray
    dev: Optional[tuple] = None     # the source's own (X, y) dev split, used as is
    test: Optional[tuple] = None    # the source's own (X, y) test split, used as is
    class_names: Optional[list] = None
    n_classes: Optional[int] = None  # known class count (generated sets); None = infer


class Split:
    """The rows `index` of a row source, with their labels; optionally normalized on the way out."""

    def __init__(self, source, y, index: Optional[np.ndarray] = None, normalizer=None):
        self.source = source
        self.index = np.arange(len(y), dtype=np.int64) if index is None else \
            np.asarray(index, dtype=np.int64)
        self.y = np.asarray(y)[self.index]
        self.normalizer = normalizer

    @property
    def m(self) -> int:
        return len(self.index)

    @property
    def n_x(self) -> int:
        return int(np.prod(self.source.shape[1:], dtype=np.int64))

    @property
    def source_dtype(self) -> np.dtype:
        return np.dtype(self.source.dtype)

    def take(self, idx) -> tuple[np.ndarray, np.ndarray]:
        """Rows idx (split positions, any order) -> (X (b, n_x), y (b,) or (b, k)), in idx order."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        X = as_features(gather(self.source, self.index[idx]), self.n_x)
        if self.normalizer is not None:
            X = self.normalizer.apply(X)
        return X, self.y[idx]

    def iter_rows(self, chunk: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (start, X rows start..start+b) over the whole split, at most CHUNK_BYTES each."""
        step = chunk_rows(self.n_x, chunk)
        for start in range(0, self.m, step):
            yield start, self.take(np.arange(start, min(start + step, self.m)))[0]

    def with_normalizer(self, normalizer) -> "Split":
        out = copy.copy(self)
        out.normalizer = normalizer
        return out


def chunk_rows(n_x: int, chunk: int) -> int:
    """Rows per streamed chunk: at most `chunk`, and at most CHUNK_BYTES of float64 features."""
    return max(1, min(chunk, CHUNK_BYTES // (8 * max(n_x, 1))))


def gather(source, rows: np.ndarray) -> np.ndarray:
    """source[rows] for any row order, reading the source in ascending row order (file locality)."""
    if rows.size < 2 or np.all(rows[1:] >= rows[:-1]):
        return source[rows]
    order = np.argsort(rows, kind="stable")
    data = source[rows[order]]
    out = np.empty_like(data)
    out[order] = data
    return out


def as_features(rows: np.ndarray, n_x: int) -> np.ndarray:
    """(b, ...) stored rows -> (b, n_x) features, flattened row-major (h, w, c for images)."""
    rows = rows.reshape(len(rows), n_x)
    if rows.dtype == np.uint8:
        return rows / PIXEL_DIVISOR
    if rows.dtype.kind in "biu":
        return rows.astype(np.float64)
    return rows


def split_indices(m: int, dev_fraction: float, test_fraction: float, seed: int,
                  labels: Optional[np.ndarray] = None) -> tuple[np.ndarray, ...]:
    """Seeded (train, dev, test) row indices of 0..m-1, each sorted ascending.

    Sizes are round(fraction * m) (per class when `labels` is given: a stratified split), taken
    from one permutation drawn from default_rng([seed, 0, _SPLIT_STREAM]), identical on every rank.
    """
    perm = np.random.default_rng([seed, 0, _SPLIT_STREAM]).permutation(m)
    groups = [perm] if labels is None else [perm[labels[perm] == c] for c in np.unique(labels)]
    parts: tuple[list, list, list] = ([], [], [])
    for g in groups:
        n_test = _round(test_fraction * len(g))
        n_dev = _round(dev_fraction * len(g))
        parts[2].append(g[:n_test])
        parts[1].append(g[n_test:n_test + n_dev])
        parts[0].append(g[n_test + n_dev:])
    return tuple(np.sort(np.concatenate(p)).astype(np.int64) for p in parts)


def _round(x: float) -> int:
    """Round half up (Python's round() rounds half to even)."""
    return int(np.floor(x + 0.5))
