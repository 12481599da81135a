"""DataConfig: what to load and how to split it (a plain dataclass; Hydra's `data` group schema).

Only str/int/float/bool/Optional fields, so OmegaConf can type-check it. None means "the dataset's
default" (for generated sets: the course's value, listed in ddl.data.generated.DEFAULTS).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

NAMES = ("flower", "moons", "circles", "blobs", "spirals", "synthetic", "digits", "breast_cancer",
         "catvnoncat", "football", "signs", "npz", "npy", "csv", "h5", "mat")


@dataclass
class DataConfig:
    # Which dataset: one of NAMES. Generated: flower moons circles blobs spirals synthetic;
    # scikit-learn's bundled digits, breast_cancer; course files catvnoncat football signs;
    # generic files npz npy csv h5 mat.
    name: str = "flower"
    # File or folder. Required for npz/npy/csv/h5/mat; course sets default to
    # $DDL_DATASETS/<assignment folder>; `synthetic` with a path reads the X.npy/y.npy folder
    # written by scripts/make_synthetic.py.
    path: Optional[str] = None
    # Fraction of the examples held out as the dev split (0 = no dev split). Ignored when the
    # source has its own dev split (npz X_dev/y_dev, npy X_dev.npy/y_dev.npy).
    dev_fraction: float = 0.2
    # Fraction held out as the test split (0 = none). Ignored when the source has its own test
    # split (catvnoncat, football, circles, npz X_test/y_test, h5/mat x_test_key/y_test_key).
    test_fraction: float = 0.0
    # Standardize inputs with the training split's mean and std (off: the course's defaults).
    normalize: bool = False
    # Split each class in the given fractions (classification only).
    stratify: bool = False
    # Seed of the train/dev/test split (the same split on every rank).
    split_seed: int = 0
    # Seed of a generated dataset (None: the course's, e.g. flower 1, moons 3, circles 1).
    seed: Optional[int] = None
    # Generated sets: number of examples (None: flower 400, moons/circles/spirals 300, ...).
    m: Optional[int] = None
    # Generated sets: number of features (blobs, synthetic only).
    n_x: Optional[int] = None
    # Number of classes: generated flower/blobs/spirals/synthetic; for files, None infers
    # max(label) + 1 and a value checks every label is in 0..classes-1.
    classes: Optional[int] = None
    # Generated sets: input noise std (flower/moons/circles/spirals), cluster std (blobs), or the
    # probability that a synthetic label is replaced by a random class.
    noise: Optional[float] = None
    # circles only: inner radius / outer radius (None: 0.8, sklearn's default the course keeps).
    factor: Optional[float] = None
    # synthetic: hidden units of the fixed random teacher network that labels the examples.
    teacher_hidden: int = 32
    # synthetic generated in memory: feature dtype ("float32" or "float64").
    dtype: str = "float64"
    # csv: name of the label column (every other column is a feature).
    label: str = "label"
    # h5/mat: keys of the features and labels (None: "X" and "y").
    x_key: Optional[str] = None
    y_key: Optional[str] = None
    # h5/mat: keys of the file's own test split (None: no own test split).
    x_test_key: Optional[str] = None
    y_test_key: Optional[str] = None
    # Files only: labels are float regression targets (m, k); n_classes becomes 0.
    regression: bool = False
