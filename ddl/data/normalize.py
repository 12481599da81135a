"""Input normalization as in the course (C2 W1 "Normalizing inputs").

    mu = 1/m sum_i x_i,   sigma^2 = 1/m sum_i (x_i - mu)^2,   x := (x - mu) / sigma

computed on the TRAINING split only and applied unchanged to dev, test and prediction inputs.
A feature whose training std is below STD_FLOOR (constant, e.g. an always-black pixel) gets
std = 1, so it is only centred: dividing by ~0 would turn noise into huge inputs.
The statistics travel with the model as {"norm/mean", "norm/std"} (see to_dict/from_dict).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ddl.data.errors import DataError

STD_FLOOR = 1e-8


@dataclass(frozen=True)
class Normalizer:
    """Per-feature mean (n_x,) and std (n_x,), float64."""

    mean: np.ndarray
    std: np.ndarray

    def __post_init__(self):
        mean, std = np.asarray(self.mean, np.float64), np.asarray(self.std, np.float64)
        if mean.ndim != 1 or mean.shape != std.shape:
            raise DataError(f"normalizer mean {mean.shape} and std {std.shape} must both be (n_x,)")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise DataError("normalizer statistics must be finite with std > 0")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    def apply(self, rows: np.ndarray) -> np.ndarray:
        """(b, n_x) -> (rows - mean) / std, in the rows' float dtype (float32 stays float32)."""
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape[1] != self.mean.size:
            raise DataError(f"normalizer expects rows (b, {self.mean.size}), got {rows.shape}")
        dtype = rows.dtype if rows.dtype.kind == "f" else np.float64
        return (rows.astype(dtype, copy=False) - self.mean.astype(dtype)) / self.std.astype(dtype)

    def to_dict(self) -> dict:
        return {"norm/mean": self.mean.copy(), "norm/std": self.std.copy()}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        missing = [k for k in ("norm/mean", "norm/std") if k not in d]
        if missing:
            raise DataError(f"normalizer statistics missing keys {missing}")
        return cls(np.asarray(d["norm/mean"]), np.asarray(d["norm/std"]))


def fit_normalizer(split, chunk: int = 65536) -> Normalizer:
    """Mean and std of `split`'s rows, streamed in chunks (Chan et al.'s pairwise update).

    Reads the split's rows as take() returns them, so call it on the un-normalized split.
    """
    n, mean, m2 = 0, np.zeros(split.n_x), np.zeros(split.n_x)
    for _, rows in split.iter_rows(chunk):
        rows = rows.astype(np.float64, copy=False)
        nb, mb = len(rows), rows.mean(axis=0)
        m2b = ((rows - mb) ** 2).sum(axis=0)
        delta, tot = mb - mean, n + nb
        mean = mean + delta * (nb / tot)
        m2 = m2 + m2b + delta**2 * (n * nb / tot)
        n = tot
    if n == 0:
        raise DataError("cannot fit normalization statistics on an empty training split")
    std = np.sqrt(m2 / n)
    return Normalizer(mean, np.where(std < STD_FLOOR, 1.0, std))
