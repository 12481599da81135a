"""Dataset files: .npz, a pair of .npy files read row by row, .csv, .h5 and .mat -> `Raw`.

Large data lives in .npy files (`scripts/make_synthetic.py` writes them block by block). `NpyRows`
reads the .npy header (shape, dtype, data offset) and then only the rows asked for, with positional
file reads rather than np.memmap: every page touched through a memory map stays counted in the
process's resident memory until unmapped, so one epoch over a mapped 1 GB file grows each rank by
1 GB (measured), while reads keep it flat (the OS page cache still serves repeated reads).
"""
from __future__ import annotations

import csv
import os
import threading
import warnings
from pathlib import Path

import numpy as np

from ddl.data.errors import fail
from ddl.data.splits import Raw

# Rows closer than this many bytes apart are fetched with one read (skipping costs one seek).
_GAP_BYTES = 4096


def _exists(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise fail(str(path), "file not found")
    return path


class NpyRows:
    """Rows of a C-order .npy file, read on demand: `rows[sorted int array]` -> ndarray (b, ...)."""

    def __init__(self, path):
        self.path = str(_exists(path))
        self._file = open(self.path, "rb", buffering=0)
        self._lock = threading.Lock()  # seek + read pairs stay atomic under a prefetch thread
        self.shape, fortran, self.dtype = self._header()
        self.offset = self._file.tell()
        if len(self.shape) < 1 or fortran or self.dtype.hasobject:
            raise fail(self.path, "needs a C-order numeric array with one row per example")
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        size = os.path.getsize(self.path) - self.offset
        if size < self.shape[0] * self.row_bytes:
            raise fail(self.path, f"file is truncated: the header says {self.shape} "
                                  f"{self.dtype} but only {size} bytes of data follow")

    def _header(self) -> tuple:
        """(shape, fortran_order, dtype) from the .npy header; the file is left at the data."""
        fmt = np.lib.format
        try:
            version = fmt.read_magic(self._file)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            return read(self._file)
        except Exception as e:  # any parse failure of a user file is reported as bad input
            raise fail(self.path, f"not a readable .npy file ({e})") from e

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows),) + self.shape[1:], self.dtype)
        if rows.size == 0:
            return out
        if rows[0] < 0 or rows[-1] >= len(self):
            raise IndexError(f"row {rows[0]}..{rows[-1]} out of range for {len(self)} rows")
        gap = max(1, _GAP_BYTES // max(self.row_bytes, 1))
        cuts = np.flatnonzero(np.diff(rows) > gap) + 1
        for s, e in zip(np.r_[0, cuts], np.r_[cuts, len(rows)]):
            lo = int(rows[s])
            block = self._read(lo, int(rows[e - 1]) + 1)
            out[s:e] = block[rows[s:e] - lo]
        return out

    def _read(self, lo: int, hi: int) -> np.ndarray:
        buf = np.empty((hi - lo,) + self.shape[1:], self.dtype)
        view, done = memoryview(buf).cast("B"), 0
        with self._lock:
            self._file.seek(self.offset + lo * self.row_bytes)
            while done < len(view):
                n = self._file.readinto(view[done:])
                if not n:
                    raise fail(self.path, f"file is truncated (rows {lo}..{hi - 1} missing)")
                done += n
        return buf

    def __del__(self):
        if getattr(self, "_file", None) is not None:
            self._file.close()


class NpyWriter:
    """Write a (m, ...) .npy file block by block; the file appears only once complete.

    Data goes to `<path>.partial`, renamed by commit(); on any error the partial file is removed.
    """

    def __init__(self, path, shape: tuple, dtype):
        self.path, self.shape, self.dtype = Path(path), tuple(shape), np.dtype(dtype)
        self.tmp, self.rows = Path(f"{path}.partial"), 0
        self._file = open(self.tmp, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype),
                  "fortran_order": False, "shape": self.shape}
        np.lib.format.write_array_header_2_0(self._file, header)

    def write(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:] or self.rows + len(block) > self.shape[0]:
            raise ValueError(f"block {block.shape} does not fit {self.shape} at row {self.rows}")
        self._file.write(block.tobytes())
        self.rows += len(block)

    def commit(self) -> None:
        self._file.close()
        if self.rows != self.shape[0]:
            raise ValueError(f"{self.path}: wrote {self.rows} of {self.shape[0]} rows")
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._file.close()
        self.tmp.unlink(missing_ok=True)


def load_npy_dir(path) -> Raw:
    """Folder with X.npy, y.npy (+ optional X_dev/y_dev, X_test/y_test .npy), or its X.npy."""
    path = _exists(path)
    folder = path if path.is_dir() else path.parent
    parts = {}
    for part in ("", "_dev", "_test"):
        x_file, y_file = folder / f"X{part}.npy", folder / f"y{part}.npy"
        if part == "" or x_file.exists() or y_file.exists():
            parts[part] = (NpyRows(x_file), _load_npy(y_file))
    return Raw(str(folder), *parts[""], dev=parts.get("_dev"), test=parts.get("_test"))


def _load_npy(path) -> np.ndarray:
    try:
        return np.load(_exists(path))
    except Exception as e:  # parse failure of a user file
        raise fail(str(path), f"not a readable .npy file ({e})") from e


def load_npz(path, x_key: str = "X", y_key: str = "y") -> Raw:
    """Arrays X (m, ...) and y; optional X_dev, y_dev, X_test, y_test are used as given splits."""
    path = str(_exists(path))
    kind = _npz_problem(path)
    if kind:
        raise fail(path, kind)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except ValueError as e:  # NumPy's hint here is about trusting the file: not what to do
        if "pickle" in str(e):
            raise fail(path, "holds pickled Python objects, which ddl never loads (unpickling can run "
                             "code); save plain numeric arrays with np.savez") from e
        raise fail(path, f"not a readable .npz file ({e})") from e
    except Exception as e:  # corrupt or truncated member ...
        raise fail(path, f"not a readable .npz file ({e})") from e
    get = _getter(path, arrays)
    own = {p: (get(f"X_{p}"), get(f"y_{p}")) if f"X_{p}" in arrays or f"y_{p}" in arrays else None
           for p in ("dev", "test")}
    return Raw(path, get(x_key), get(y_key), dev=own["dev"], test=own["test"])


def _npz_problem(path: str) -> str:
    """What the file is when it is not an .npz archive (a zip of .npy files), from its first bytes;
    "" when it starts like one."""
    with open(path, "rb") as f:
        head = f.read(1024)
    if head.startswith(b"PK"):
        return ""
    if head.startswith(b"\x93NUMPY"):
        return ("a single-array .npy file, not an .npz archive of X and y: save both with "
                "np.savez(path, X=..., y=...)")
    try:
        head.decode("utf-8")
        text = bool(head.strip())
    except UnicodeDecodeError:
        text = False
    if text:
        return ("text (a CSV renamed .npz?), not a NumPy .npz archive: for a CSV file use data=csv "
                "data.path=... (a header row, then numbers), or save the arrays with np.savez")
    return "not a readable .npz file (not a zip archive of .npy files, as np.savez writes)"


def _getter(path: str, arrays):
    def get(key):
        if key not in arrays:
            raise fail(path, f"missing key {key!r} (keys present: {sorted(arrays)})")
        return np.asarray(arrays[key])
    return get


def load_csv(path, label: str = "label") -> Raw:
    """A header row, then numbers; column `label` is y, every other column a feature."""
    path = str(_exists(path))
    try:
        with open(path, newline="") as f:
            header = [h.strip() for h in next(csv.reader(f), [])]
        with warnings.catch_warnings():  # a header-only file is reported below as empty
            warnings.simplefilter("ignore", UserWarning)
            table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2, dtype=np.float64)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise fail(path, f"cannot parse as CSV ({e})") from e
    if label not in header:
        raise fail(path, f"no label column {label!r} (columns: {header})")
    if table.size and table.shape[1] != len(header):
        raise fail(path, f"rows have {table.shape[1]} columns but the header has {len(header)}")
    j = header.index(label)
    table = table.reshape(-1, len(header))
    return Raw(path, np.delete(table, j, axis=1), table[:, j])


def read_h5(path, keys: list[str]) -> dict:
    """Read datasets `keys` from an HDF5 file into memory; missing keys are an error."""
    import h5py  # noqa: PLC0415 - only file loaders need h5py

    path = str(_exists(path))
    try:
        with h5py.File(path, "r") as f:
            absent = [k for k in keys if k not in f]
            if absent:
                raise fail(path, f"missing key {absent[0]!r} (keys present: {sorted(f.keys())})")
            return {k: np.asarray(f[k][()]) for k in keys}
    except OSError as e:
        raise fail(path, f"not a readable HDF5 file ({e})") from e


def h5_keys(path) -> list[str]:
    import h5py  # noqa: PLC0415

    try:
        with h5py.File(str(_exists(path)), "r") as f:
            return sorted(f.keys())
    except OSError as e:
        raise fail(str(path), f"not a readable HDF5 file ({e})") from e


def load_keyed(path, reader, x_key, y_key, x_test_key=None, y_test_key=None) -> Raw:
    """Shared by .h5 and .mat: keys X/y, and X_test/y_test keys for the file's own test split."""
    if (x_test_key is None) != (y_test_key is None):
        raise fail(str(path), "set both data.x_test_key and data.y_test_key, or neither")
    keys = [x_key, y_key] + ([x_test_key, y_test_key] if x_test_key else [])
    a = reader(path, keys)
    test = (a[x_test_key], a[y_test_key]) if x_test_key else None
    return Raw(str(path), a[x_key], a[y_key], test=test)


def read_mat(path, keys: list[str]) -> dict:
    """Read variables `keys` from a MATLAB v5 file (scipy.io.loadmat)."""
    from scipy.io import loadmat  # noqa: PLC0415

    path = str(_exists(path))
    try:
        data = loadmat(path)
    except Exception as e:  # scipy raises several types for corrupt or v7.3 files
        raise fail(path, f"not a readable MATLAB .mat file ({e})") from e
    get = _getter(path, data)
    return {k: get(k) for k in keys}
