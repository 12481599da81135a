"""load_dataset: the front door from a DataConfig to the train/dev/test `Split`s a rank reads.

Pipeline: load the raw arrays (generated, scikit-learn, course file or generic file) -> check
lengths, labels and finiteness (naming the file) -> seeded split (or the source's own dev/test)
-> optional normalization fitted on the training split alone and attached to every split.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


from ddl.data import bundled, course, files, generated
from ddl.config import NAMES, DataConfig
from ddl.data.errors import (DataError, check_finite, check_label_range, check_lengths,
                             check_widths, class_labels, fail, regression_targets)
from ddl.data.normalize import Normalizer, fit_normalizer
from ddl.data.shard import rank_slice
from ddl.data.splits import PIXEL_DIVISOR, Raw, Split, split_indices

FILE_NAMES = ("npz", "npy", "csv", "h5", "mat")


@dataclass
class Dataset:
    """Splits of one dataset; every split's take() already applies `normalizer` (when set).

    `normalizer` is exposed to be saved with the model and applied to raw inputs at prediction.
    """

    name: str
    train: Split
    dev: Optional[Split]
    test: Optional[Split]
    n_classes: int                       # 0 for regression
    class_names: Optional[list]
    normalizer: Optional[Normalizer]
    where: str                           # file path or generator description
    input_divisor: float = 1.0           # features = stored values / input_divisor (255: pixels)

    @property
    def n_x(self) -> int:
        return self.train.n_x


def load_dataset(cfg: DataConfig, rank: int = 0, world_size: int = 1) -> Dataset:
    """DataConfig -> Dataset. Deterministic: every rank builds the same splits with no MPI.

    File-backed rows (.npy) are read only when a split's take() asks for them; small sets are held
    in memory whole. rank/world_size are checked but do not change the result.
    """
    rank_slice(0, rank, world_size)
    _check_config(cfg)
    raw = _load_raw(cfg)
    parts = {p: _labelled(raw, p, cfg.regression) for p in ("train", "dev", "test")}
    check_widths(parts)
    n_classes = _n_classes(raw, cfg, parts)
    splits = {}
    for p, part in parts.items():
        if part is not None:
            X, y, where = part
            if n_classes:
                check_label_range(where, y, n_classes)
            splits[p] = Split(X, y)
            check_finite(where, splits[p])
    train, dev, test = _split(raw, cfg, splits)
    norm = fit_normalizer(train) if cfg.normalize else None
    train, dev, test = (None if s is None else s.with_normalizer(norm) for s in (train, dev, test))
    divisor = PIXEL_DIVISOR if train.source_dtype == np.uint8 else 1.0
    return Dataset(cfg.name, train, dev, test, n_classes, raw.class_names, norm, raw.where, divisor)


def _check_config(cfg: DataConfig) -> None:
    if cfg.name not in NAMES:
        raise DataError(f"unknown dataset name {cfg.name!r}; choose one of {', '.join(NAMES)}")
    f_dev, f_test = cfg.dev_fraction, cfg.test_fraction
    if not (0 <= f_dev < 1 and 0 <= f_test < 1 and f_dev + f_test < 1):
        raise DataError(f"data.dev_fraction ({f_dev}) and data.test_fraction ({f_test}) must be "
                        "in [0, 1) with a sum below 1")
    if cfg.split_seed < 0:
        raise DataError(f"data.split_seed must be >= 0, got {cfg.split_seed}")
    if cfg.regression and (cfg.name not in FILE_NAMES or cfg.stratify):
        raise DataError(f"data.regression needs a file dataset ({', '.join(FILE_NAMES)}) and "
                        f"data.stratify=false, got name {cfg.name!r}, stratify {cfg.stratify}")


def _load_raw(cfg: DataConfig) -> Raw:
    name = cfg.name
    if name in generated.DEFAULTS and not (name == "synthetic" and cfg.path):
        return generated.load_generated(cfg)
    if name in bundled.NAMES:
        X, y, names = bundled.load(name)
        return Raw(f"sklearn:{name}", X, y, class_names=names, n_classes=len(names))
    if name in course.FOLDERS:
        return getattr(course, f"load_{name}")(cfg)
    if not cfg.path:
        raise DataError(f"dataset {name!r} reads a file: set data.path")
    if name in ("npy", "synthetic"):
        return files.load_npy_dir(cfg.path)
    if name == "npz":
        return files.load_npz(cfg.path, cfg.x_key or "X", cfg.y_key or "y")
    if name == "csv":
        return files.load_csv(cfg.path, cfg.label)
    reader = files.read_h5 if name == "h5" else files.read_mat
    return files.load_keyed(cfg.path, reader, cfg.x_key or "X", cfg.y_key or "y",
                            cfg.x_test_key, cfg.y_test_key)


def _labelled(raw: Raw, part: str, regression: bool):
    """(X, checked y, where) of the raw data's main ("train"), own dev or own test part, or None."""
    src = (raw.X, raw.y) if part == "train" else getattr(raw, part)
    if src is None:
        return None
    where = src[2] if len(src) > 2 else raw.where + ("" if part == "train" else f" ({part} split)")
    X, y = src[0], src[1]
    check_lengths(where, X, y)
    return X, (regression_targets if regression else class_labels)(where, y), where


def _n_classes(raw: Raw, cfg: DataConfig, parts: dict) -> int:
    """0 for regression; else the known or configured count, else max label + 1 (at least 2)."""
    if cfg.regression:
        return 0
    if raw.n_classes is not None:
        return raw.n_classes
    if cfg.classes is not None:
        if cfg.classes < 2:
            raise fail(raw.where, f"data.classes must be >= 2, got {cfg.classes}")
        return cfg.classes
    return max(2, *(int(p[1].max()) + 1 for p in parts.values() if p is not None))


def _split(raw: Raw, cfg: DataConfig, splits: dict) -> tuple:
    """Carve dev/test out of the main part unless the source brought its own."""
    main = splits["train"]
    f_dev = 0.0 if "dev" in splits else cfg.dev_fraction
    f_test = 0.0 if "test" in splits else cfg.test_fraction
    labels = main.y if cfg.stratify else None
    i_train, i_dev, i_test = split_indices(main.m, f_dev, f_test, cfg.split_seed, labels)
    if i_train.size == 0:
        raise fail(raw.where, f"the split leaves the training set empty ({main.m} examples, "
                              f"dev_fraction {f_dev}, test_fraction {f_test})")
    dev = splits.get("dev") or (Split(main.source, main.y, i_dev) if i_dev.size else None)
    test = splits.get("test") or (Split(main.source, main.y, i_test) if i_test.size else None)
    return Split(main.source, main.y, i_train), dev, test
