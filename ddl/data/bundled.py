"""scikit-learn's bundled sets (digits, breast_cancer), read from the data files its wheel ships.

Importing scikit-learn costs about 1.5 s (it pulls in SciPy and joblib) for two small CSV files;
ddl finds the package with `importlib.util.find_spec` (which imports nothing) and parses the files
the way scikit-learn's loaders do, to the same arrays (tests/test_bundled.py checks them against
`sklearn.datasets`). Should a release move the files, ddl falls back to importing scikit-learn.
"""
from __future__ import annotations

import csv
import gzip
import importlib.util
from pathlib import Path

import numpy as np

from ddl.data.errors import DataError

NAMES = ("digits", "breast_cancer")


def data_dir() -> Path | None:
    """scikit-learn's `datasets/data` folder, or None where scikit-learn is not installed."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def read_digits(folder: Path) -> tuple[np.ndarray, np.ndarray, list]:
    """load_digits: 1797 rows of 64 pixel values (0..16) then the digit, comma-separated, gzipped."""
    with gzip.open(folder / "digits.csv.gz", "rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",", dtype=np.float64)
    return data[:, :-1], data[:, -1].astype(int), [str(n) for n in range(10)]


def read_breast_cancer(folder: Path) -> tuple[np.ndarray, np.ndarray, list]:
    """load_breast_cancer: a header `n_samples,n_features,<class names>`, then features and label."""
    with open(folder / "breast_cancer.csv", encoding="utf-8", newline="") as f:
        rows = csv.reader(f)
        head = next(rows)
        n, d, names = int(head[0]), int(head[1]), [str(s) for s in head[2:]]
        table = np.array(list(rows), dtype=np.float64)
    if table.shape != (n, d + 1):
        raise ValueError(f"breast_cancer.csv holds {table.shape}, its header says {(n, d + 1)}")
    return table[:, :-1], table[:, -1].astype(int), names


def imported(name: str) -> tuple[np.ndarray, np.ndarray, list]:
    """The set through scikit-learn itself (slow to import): the fallback."""
    try:
        from sklearn import datasets  # noqa: PLC0415 - optional extra
    except ImportError as e:
        raise DataError(f"dataset {name!r} ships with scikit-learn, which is not installed; "
                        "install it with: pip install 'ddl[sklearn]'") from e
    bunch = getattr(datasets, f"load_{name}")()
    return bunch.data, bunch.target, [str(n) for n in bunch.target_names]


def load(name: str) -> tuple[np.ndarray, np.ndarray, list]:
    """(X rows, integer labels, class names) of a bundled set, from its file when it is there."""
    folder = data_dir()
    if folder is None:
        return imported(name)                  # raises the install hint
    try:
        return {"digits": read_digits, "breast_cancer": read_breast_cancer}[name](folder)
    except (OSError, ValueError, StopIteration):
        return imported(name)
