"""Generated datasets (no download, deterministic from a seed): the course's planar sets and
`synthetic`, the scale dataset for benchmarks. X is (m, n_x) float64 rows, y (m,) int64.

flower, moons and circles reproduce the course exactly when given its parameters: they draw from
NumPy's legacy RandomState(seed) stream, the stream `np.random.seed(seed)` sets. moons and circles
re-implement scikit-learn 1.9's make_moons/make_circles step by step (same draws, same order), so
the course fingerprints hold without scikit-learn. blobs and spirals (any number of classes) and
`synthetic` lives in ddl/data/synthetic.py.
"""
from __future__ import annotations


import numpy as np

from ddl.data.errors import DataError, fail
from ddl.data import synthetic
from ddl.data.synthetic import (block_rows, synthetic_block, synthetic_rows,  # noqa: F401
                                write_synthetic)
from ddl.data.splits import Raw

# None in DataConfig means "this dataset's default"; these are the course's values where it has one.
DEFAULTS = {
    "flower": dict(m=400, seed=1, noise=0.2, classes=2),
    "moons": dict(m=300, seed=3, noise=0.2),
    "circles": dict(m=300, seed=1, noise=0.05, factor=0.8),
    "blobs": dict(m=400, seed=0, noise=1.0, classes=3, n_x=2),
    "spirals": dict(m=300, seed=0, noise=0.2, classes=3),
    "synthetic": dict(m=10000, seed=0, noise=0.0, classes=2, n_x=20),
}
_OPTIONAL = ("m", "seed", "noise", "classes", "n_x", "factor")


def class_sizes(m: int, classes: int) -> list[int]:
    """m examples over `classes` classes, sizes differing by at most one."""
    return [m // classes + (j < m % classes) for j in range(classes)]


def flower(m=400, seed=1, noise=0.2, classes=2):
    """C1 W3 load_planar_dataset: petals r = 4 sin(4 theta); rows not shuffled (class 0 first)."""
    rs = np.random.RandomState(seed)
    X, y = np.zeros((m, 2)), np.zeros(m, dtype=np.int64)
    start = 0
    for j, n in enumerate(class_sizes(m, classes)):
        t = np.linspace(j * 3.12, (j + 1) * 3.12, n) + rs.randn(n) * noise  # theta noise first
        r = 4 * np.sin(4 * t) + rs.randn(n) * noise
        X[start:start + n] = np.c_[r * np.sin(t), r * np.cos(t)]
        y[start:start + n] = j
        start += n
    return X, y


def _two_arcs_shuffled(rs, x, z, n_out, noise):
    """The end of sklearn's make_moons/make_circles: shuffle rows, then add normal noise."""
    X = np.vstack([x, z]).T
    y = np.hstack([np.zeros(n_out, np.int64), np.ones(len(x) - n_out, np.int64)])
    idx = np.arange(len(X))
    rs.shuffle(idx)
    X, y = X[idx], y[idx]
    return X + rs.normal(scale=noise, size=X.shape), y


def moons(m=300, seed=3, noise=0.2):
    """C2 W2 opt_utils.load_dataset: sklearn.make_moons(m, noise) after np.random.seed(seed)."""
    n_out = m // 2
    a, b = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, m - n_out)
    x = np.append(np.cos(a), 1 - np.cos(b))
    z = np.append(np.sin(a), 1 - np.sin(b) - 0.5)
    return _two_arcs_shuffled(np.random.RandomState(seed), x, z, n_out, noise)


def circles(m=300, seed=1, noise=0.05, factor=0.8):
    """C2 W1 init_utils.load_dataset: sklearn.make_circles(m, noise) after np.random.seed(seed)."""
    n_out = m // 2
    a = np.linspace(0, 2 * np.pi, n_out, endpoint=False)
    b = np.linspace(0, 2 * np.pi, m - n_out, endpoint=False)
    x = np.append(np.cos(a), np.cos(b) * factor)
    z = np.append(np.sin(a), np.sin(b) * factor)
    return _two_arcs_shuffled(np.random.RandomState(seed), x, z, n_out, noise)


def blobs(m=400, seed=0, noise=1.0, classes=3, n_x=2):
    """Gaussian clusters of std `noise` around centres uniform in [-10, 10]^n_x; balanced."""
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-10, 10, (classes, n_x))
    y = rng.permutation(np.arange(m) % classes).astype(np.int64)
    return centers[y] + noise * rng.standard_normal((m, n_x)), y


def spirals(m=300, seed=0, noise=0.2, classes=3):
    """CS231n spirals: class j has radius 0..1 and angle 4j..4(j+1) plus normal noise."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for j, n in enumerate(class_sizes(m, classes)):
        r = np.linspace(0.0, 1.0, n)
        t = np.linspace(4 * j, 4 * (j + 1), n) + noise * rng.standard_normal(n)
        X.append(np.c_[r * np.sin(t), r * np.cos(t)])
        y.append(np.full(n, j, np.int64))
    return np.concatenate(X), np.concatenate(y)


def load_generated(cfg) -> Raw:
    """DataConfig -> Raw for a generated set (circles also gets the course's own test set)."""
    p = _params(cfg)
    where = f"generated:{cfg.name}(" + ", ".join(f"{k}={v}" for k, v in p.items()) + ")"
    if p["m"] < 1 or p["noise"] < 0 or p.get("classes", 2) < 2 or p.get("n_x", 2) < 1:
        raise fail(where, "needs m >= 1, noise >= 0, classes >= 2 and n_x >= 1")
    if cfg.name == "synthetic":
        X, y = synthetic.dataset(p["m"], p["n_x"], p["classes"], p["seed"], p["noise"],
                                 cfg.teacher_hidden, cfg.dtype)
        return Raw(where, X, y, n_classes=p["classes"])
    if cfg.name == "circles" and not 0 < p["factor"] < 1:
        raise fail(where, "circles needs 0 < factor < 1")
    gen = {"flower": flower, "moons": moons, "circles": circles, "blobs": blobs,
           "spirals": spirals}[cfg.name]
    X, y = gen(**p)
    test = circles(**{**p, "m": max(1, p["m"] // 3), "seed": p["seed"] + 1}) \
        if cfg.name == "circles" else None  # the course's test set: 100 points from seed 2
    return Raw(where, X, y, test=test, n_classes=p.get("classes", 2))


def _params(cfg) -> dict:
    """The generator's keyword arguments: DataConfig values, None replaced by DEFAULTS."""
    defaults = DEFAULTS[cfg.name]
    extra = [k for k in _OPTIONAL if k not in defaults and getattr(cfg, k) is not None]
    if extra:
        raise DataError(f"dataset {cfg.name!r} does not take data.{extra[0]} (it takes "
                        f"{sorted(defaults)}); leave it unset (null)")
    return {k: v if getattr(cfg, k) is None else getattr(cfg, k) for k, v in defaults.items()}
