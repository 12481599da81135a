"""DataError and the input checks that raise it.

Every message names where the data came from (a file path, or a generator description such as
"generated:flower") and the problem, in one sentence.
"""
from __future__ import annotations

import numpy as np


class DataError(ValueError):
    """Bad dataset input: missing/corrupt file, missing key, bad labels, bad split, ..."""


def fail(where: str, problem: str) -> DataError:
    """Build the error for `where` (to `raise fail(...)`)."""
    return DataError(f"{where}: {problem}")


def check_lengths(where: str, X, y, part: str = "") -> None:
    """X and y must have the same number of rows, and at least one."""
    tag = f" ({part})" if part else ""
    if len(X) != len(y):
        raise fail(where, f"X has {len(X)} rows but y has {len(y)}{tag}; they must match")
    if len(X) == 0:
        raise fail(where, f"the dataset is empty{tag}: 0 examples")


def check_widths(parts: dict) -> None:
    """Every given split has the train split's features per example: {part: (X, y, where)}."""
    shape = parts["train"][0].shape[1:]
    for part, (X, _, where) in ((p, v) for p, v in parts.items() if v is not None and p != "train"):
        if X.shape[1:] != shape:
            raise fail(where, f"examples of shape {tuple(X.shape[1:])}, but the train split's are "
                              f"{tuple(shape)}: every split needs the same features")


def class_labels(where: str, y) -> np.ndarray:
    """Labels (m,) or (m, 1) of any numeric dtype -> int64 class indices (m,).

    Float labels are accepted when every value is a whole number (MAT files store doubles);
    uint8 labels (the course's football data) are widened so negation cannot wrap.
    """
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise fail(where, f"class labels must be a vector (m,) or (m, 1), got shape {y.shape}")
    if y.dtype.kind == "b":
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
        if bad.size:
            raise fail(where, f"non-integer class label {y[bad[0]].item()} at row {bad[0]}; "
                              "labels must be class indices 0..C-1 (or set data.regression=true)")
    elif y.dtype.kind not in "iu":
        raise fail(where, f"class labels must be numeric, got dtype {y.dtype}")
    return y.astype(np.int64)


def check_label_range(where: str, y: np.ndarray, n_classes: int) -> None:
    """Every label must lie in 0..n_classes-1 (report the first offending row)."""
    bad = np.flatnonzero((y < 0) | (y >= n_classes))
    if bad.size:
        raise fail(where, f"label {int(y[bad[0]])} at row {bad[0]} is outside 0..{n_classes - 1}")


def regression_targets(where: str, y) -> np.ndarray:
    """Regression targets (m,) or (m, k) -> float64 (m, k), all finite."""
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise fail(where, f"regression targets must be numeric, got dtype {y.dtype}")
    y = y.astype(np.float64).reshape(len(y), -1)
    bad = np.flatnonzero(~np.isfinite(y).all(axis=1))
    if bad.size:
        raise fail(where, f"regression target at row {bad[0]} is NaN or infinite")
    return y


def check_finite(where: str, split, chunk: int = 65536) -> None:
    """Stream over a Split's rows in chunks; raise at the first row holding NaN or Inf.

    The row number reported is the split's row, which is the file's row for a whole-file split.
    Integer features (pixels) cannot be NaN, so they are not read at all.
    """
    if split.source_dtype.kind in "biu" or getattr(split.source, "finite", False):
        return
    for start, rows in split.iter_rows(chunk):
        bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
        if bad.size:
            raise fail(where, f"row {start + bad[0]} of the features contains NaN or Inf")
