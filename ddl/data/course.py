"""The course's own data files (see shared/datasets/README.md), loaded the way the course does.

- catvnoncat (C1 W2/W4): train_catvnoncat.h5 + test_catvnoncat.h5, images (m, 64, 64, 3) uint8;
  each row is the image flattened row-major (height, width, channel) and divided by 255
  (X.reshape(m, -1) / 255, the transpose of the course's (12288, m)); the test file is the test
  split.
- signs (C2 W3): the same layout with 6 classes; only test_signs.h5 is shipped here, so a path to a
  single file loads that file alone (split it with data.dev_fraction / data.test_fraction).
- football (C2 W1 regularization): data.mat with X, y (train) and Xval, yval (the course's test
  set); its labels are uint8 and come back as int64 so that negation cannot wrap.
data.path is the assignment folder or a file in it; unset, it is $DDL_DATASETS/<folder>, with
DDL_DATASETS defaulting to the shared/datasets folder beside the repository.
"""
from __future__ import annotations

import os
from pathlib import Path

from ddl.data.errors import fail
from ddl.data.files import h5_keys, load_keyed, read_h5, read_mat
from ddl.data.splits import Raw

FOLDERS = {"catvnoncat": "c1w2_c1w4_catvnoncat", "football": "c2w1_regularization_football",
           "signs": "c2w3_signs"}


def datasets_root() -> Path:
    """$DDL_DATASETS, else <repo>/../shared/datasets."""
    env = os.environ.get("DDL_DATASETS")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "datasets"


def course_path(name: str, path) -> Path:
    """data.path when given, else $DDL_DATASETS/<the assignment's folder>; a missing one is an
    error that says how to point ddl at the files."""
    found = Path(path) if path else datasets_root() / FOLDERS[name]
    if not found.exists():
        how = ("data.path is set to it" if path else
               f"it is DDL_DATASETS/{FOLDERS[name]}, with DDL_DATASETS "
               + (f"set to {os.environ['DDL_DATASETS']}" if os.environ.get("DDL_DATASETS")
                  else "unset (default: shared/datasets beside the checkout)"))
        raise fail(str(found), f"the course's {name} data is not there ({how}). Set "
                               f"DDL_DATASETS to the folder that holds {FOLDERS[name]}/ (laid "
                               f"out like shared/datasets), or data.path to the assignment's "
                               f"folder or file")
    return found


def load_catvnoncat(cfg) -> Raw:
    return load_course_h5(course_path("catvnoncat", cfg.path), "catvnoncat")


def load_signs(cfg) -> Raw:
    return load_course_h5(course_path("signs", cfg.path), "signs")


def load_football(cfg) -> Raw:
    path = course_path("football", cfg.path)
    path = path / "data.mat" if path.is_dir() else path
    return load_keyed(path, read_mat, "X", "y", "Xval", "yval")


def load_course_h5(path: Path, stem: str) -> Raw:
    """Folder with train_<stem>.h5 (+ test_<stem>.h5), or one file; a train file's test sibling
    is used as the test split when present."""
    if path.is_dir():
        train, test = path / f"train_{stem}.h5", path / f"test_{stem}.h5"
        if not train.exists():
            raise fail(str(train), f"file not found; to load a single file such as {test.name}, "
                                   "set data.path to that file")
    else:
        train = path
        test = path.with_name("test_" + path.name[6:]) if path.name.startswith("train_") else None
    X, y, names = read_course_set(train)
    own = read_course_set(test)[:2] + (str(test),) if test is not None and test.exists() else None
    return Raw(str(train), X, y, test=own, class_names=names)


def read_course_set(path: Path) -> tuple:
    """One course HDF5 file -> (images (m, h, w, c) uint8, labels (m,), class names)."""
    keys = h5_keys(path)
    prefix = "train" if "train_set_x" in keys else "test"
    if f"{prefix}_set_x" not in keys:
        raise fail(str(path), f"missing key 'train_set_x' or 'test_set_x' (keys present: {keys})")
    a = read_h5(path, [f"{prefix}_set_x", f"{prefix}_set_y"] +
                (["list_classes"] if "list_classes" in keys else []))
    names = a.get("list_classes")
    if names is not None:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
    return a[f"{prefix}_set_x"], a[f"{prefix}_set_y"], names
