"""`synthetic`: a classification set of any size, labelled by a fixed random "teacher" network.

Every feature is a pure function of (seed, row, column): a counter-based hash turned into a
normal by Box-Muller, so ANY rows can be produced without the others. Blocks of rows
(`block_rows`) are the unit for writing files and labelling; a large set is never held in memory:
each rank keeps only the labels (8 bytes a row) and generates the rows its batches ask for.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import array_api_compat.numpy as xnp

from ddl.backend import counter_uniform, make_key
from ddl.data.errors import DataError
from ddl.data.files import NpyWriter

LAZY_BYTES = 256 * 2**20   # larger sets are generated on demand instead of held in memory


def block_rows(n_x: int) -> int:
    """Rows per synthetic block (<= 16384 rows, <= 8 MB of float64): fixed by n_x, not by m."""
    return max(1, min(1 << 14, (1 << 20) // n_x))


def teacher(seed: int, n_x: int, classes: int, hidden: int) -> tuple[np.ndarray, ...]:
    """The fixed random labelling network: logits = tanh(x W1^T + b1) W2^T + b2.

    b2 centres each logit on a calibration sample so that no class is (nearly) empty.
    """
    rng = np.random.default_rng([seed, 0, 0x7EAC])  # the teacher itself: small, drawn once
    W1 = rng.standard_normal((hidden, n_x)) / np.sqrt(n_x)
    b1 = 0.5 * rng.standard_normal(hidden)
    W2 = rng.standard_normal((classes, hidden)) / np.sqrt(hidden)
    hid = np.tanh(rng.standard_normal((4096, n_x)) @ W1.T + b1)
    return W1, b1, W2, -(hid @ W2.T).mean(axis=0)


def _uniform(seed: int, stream: int, rows: np.ndarray, n: int) -> np.ndarray:
    """(len(rows), n) uniforms in [0, 1), element (i, j) a function of (seed, stream, rows[i], j)."""
    return counter_uniform(xnp, make_key(seed, stream, 0x5E7), n, rows, np.float64).T


def row_features(seed: int, rows: np.ndarray, n_x: int) -> np.ndarray:
    """X[rows] ~ N(0, 1), float64 (len(rows), n_x), by Box-Muller on two hashed uniforms."""
    rows = np.asarray(rows, dtype=np.int64)
    u1, u2 = 1.0 - _uniform(seed, 1, rows, n_x), _uniform(seed, 2, rows, n_x)   # u1 in (0, 1]
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def row_labels(seed: int, rows: np.ndarray, X: np.ndarray, classes: int, noise: float, net):
    """Teacher argmax of X; with probability `noise` a (hashed) random class instead."""
    W1, b1, W2, b2 = net
    y = np.argmax(np.tanh(X @ W1.T + b1) @ W2.T + b2, axis=1).astype(np.int64)
    if noise > 0:
        u = _uniform(seed, 3, rows, 2)
        flip = u[:, 0] < noise
        y[flip] = np.minimum((u[flip, 1] * classes).astype(np.int64), classes - 1)
    return y


def synthetic_block(k: int, seed: int, n_x: int, classes: int, noise: float, net) -> tuple:
    """Block k = rows k*B..(k+1)*B-1 of the set (X float64, y int64)."""
    B = block_rows(n_x)
    rows = np.arange(k * B, (k + 1) * B, dtype=np.int64)
    X = row_features(seed, rows, n_x)
    return X, row_labels(seed, rows, X, classes, noise, net)


def synthetic_rows(start: int, stop: int, seed=0, n_x=20, classes=2, noise=0.0, hidden=32,
                   dtype="float64"):
    """Rows start..stop-1 of the synthetic set, generating only the blocks they touch."""
    net, B = teacher(seed, n_x, classes, hidden), block_rows(n_x)
    X, y = np.empty((stop - start, n_x), dtype), np.empty(stop - start, np.int64)
    for k in range(start // B, -(-stop // B)):
        Xb, yb = synthetic_block(k, seed, n_x, classes, noise, net)
        lo, hi = max(start, k * B), min(stop, (k + 1) * B)
        dst, src = slice(lo - start, hi - start), slice(lo - k * B, hi - k * B)
        X[dst], y[dst] = Xb[src], yb[src]
    return X, y


def write_synthetic(out, m: int, n_x: int, classes: int, seed=0, noise=0.0, hidden=32,
                    dtype="float32") -> None:
    """Write out/X.npy (m, n_x), out/y.npy (m,) block by block; both appear only when complete."""
    check_synthetic(m, n_x, classes, noise, hidden, dtype)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    wx, wy = NpyWriter(out / "X.npy", (m, n_x), dtype), NpyWriter(out / "y.npy", (m,), np.int64)
    try:
        net, B = teacher(seed, n_x, classes, hidden), block_rows(n_x)
        for k in range(-(-m // B)):
            X, y = synthetic_block(k, seed, n_x, classes, noise, net)
            wx.write(X[:m - k * B])
            wy.write(y[:m - k * B])
        wx.commit()
        wy.commit()
    except BaseException:
        wx.abort()
        wy.abort()
        raise


def check_synthetic(m, n_x, classes, noise, hidden, dtype) -> None:
    if m < 1 or n_x < 1 or classes < 2 or hidden < 1 or not 0 <= noise <= 1:
        raise DataError(f"synthetic needs m >= 1, n_x >= 1, classes >= 2, teacher_hidden >= 1 and "
                        f"noise in [0, 1], got m={m}, n_x={n_x}, classes={classes}, "
                        f"teacher_hidden={hidden}, noise={noise}")
    if dtype not in ("float32", "float64"):
        raise DataError(f"synthetic dtype must be float32 or float64, got {dtype!r}")




class SyntheticRows:
    """The features of a large synthetic set as a row source: rows are generated when read."""

    finite = True   # by construction: the NaN/Inf scan can skip it

    def __init__(self, m: int, n_x: int, seed: int, dtype: str):
        self.shape, self.dtype, self.seed = (m, n_x), np.dtype(dtype), seed

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        return row_features(self.seed, rows, self.shape[1]).astype(self.dtype)


def dataset(m: int, n_x: int, classes: int, seed: int, noise: float, hidden: int, dtype: str):
    """(X, y): X in memory when small, else a SyntheticRows source; y always in memory,
    labelled block by block (memory stays at one block)."""
    check_synthetic(m, n_x, classes, noise, hidden, dtype)
    if m * n_x * np.dtype(dtype).itemsize <= LAZY_BYTES:
        return synthetic_rows(0, m, seed, n_x, classes, noise, hidden, dtype)
    net, B = teacher(seed, n_x, classes, hidden), block_rows(n_x)
    y = np.empty(m, np.int64)
    for k in range(-(-m // B)):
        lo, hi = k * B, min(m, (k + 1) * B)
        rows = np.arange(lo, hi, dtype=np.int64)
        y[lo:hi] = row_labels(seed, rows, row_features(seed, rows, n_x), classes, noise, net)
    return SyntheticRows(m, n_x, seed, dtype), y
