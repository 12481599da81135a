"""Generated datasets: course fingerprints (shared/datasets/README.md) and synthetic's blocks."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ddl.data import DataConfig, DataError, load_dataset
from ddl.data import generated
from ddl.data.generated import circles, moons, synthetic_rows

REPO = Path(__file__).resolve().parents[1]


def whole(name, **kw):
    """All rows of a generated set, unsplit, as the trainer sees them."""
    ds = load_dataset(DataConfig(name=name, dev_fraction=0.0, **kw))
    return (*ds.train.take(np.arange(ds.train.m)), ds)


def test_flower_matches_course_fingerprint():
    X, y, ds = whole("flower")
    assert X.shape == (400, 2) and y.dtype == np.int64 and ds.n_classes == 2
    np.testing.assert_allclose(X[0], [1.20444229, 3.57611415], atol=1e-8)
    np.testing.assert_allclose(X[399], [0.73078083, 3.06832921], atol=1e-8)
    assert X.sum() == pytest.approx(10.087983277441666, abs=1e-10)
    np.testing.assert_array_equal(y, np.repeat([0, 1], 200))


def test_circles_train_and_test_match_course_fingerprint():
    X, y, ds = whole("circles")
    assert X.shape == (300, 2) and np.bincount(y).tolist() == [150, 150]
    np.testing.assert_allclose(X[0], [-0.07741354, 0.85260226], atol=1e-8)
    assert y[:5].tolist() == [1, 0, 1, 1, 0]
    assert X.sum() == pytest.approx(0.10318058999808777, abs=1e-10)
    Xt, yt = ds.test.take(np.arange(ds.test.m))
    assert Xt.shape == (100, 2) and np.bincount(yt).tolist() == [50, 50]
    np.testing.assert_allclose(Xt[0], [-0.52423739, -0.60910361], atol=1e-8)
    assert Xt.sum() == pytest.approx(-0.418253070660783, abs=1e-10)


def test_moons_match_course_fingerprint():
    X, y, ds = whole("moons")
    assert X.shape == (300, 2) and ds.test is None
    np.testing.assert_allclose(X[0], [-0.21687013, 1.01544937], atol=1e-8)
    assert y[:5].tolist() == [0, 1, 1, 1, 0]
    assert X.sum() == pytest.approx(229.31214774688254, abs=1e-9)


@pytest.mark.parametrize("m,seed,noise,factor", [(101, 7, 0.1, 0.5), (2, 0, 0.3, 0.3)])
def test_own_moons_circles_equal_sklearn_stream(m, seed, noise, factor):
    datasets = pytest.importorskip("sklearn.datasets")
    Xs, ys = datasets.make_moons(m, noise=noise, random_state=np.random.RandomState(seed))
    X, y = moons(m, seed, noise)
    np.testing.assert_array_equal(X, Xs)
    np.testing.assert_array_equal(y, ys)
    Xs, ys = datasets.make_circles(m, noise=noise, factor=factor,
                                   random_state=np.random.RandomState(seed))
    X, y = circles(m, seed, noise, factor)
    np.testing.assert_array_equal(X, Xs)
    np.testing.assert_array_equal(y, ys)


@pytest.mark.parametrize("name", ["blobs", "spirals", "flower"])
def test_any_number_of_classes(name):
    X, y, ds = whole(name, classes=5, m=503)
    assert ds.n_classes == 5 and X.shape == (503, 2)
    assert np.bincount(y).tolist() == [101, 101, 101, 100, 100]
    assert np.isfinite(X).all()


def test_blobs_features_and_seed_reproducibility():
    X1, y1, _ = whole("blobs", n_x=7, seed=4)
    X2, y2, _ = whole("blobs", n_x=7, seed=4)
    X3, _, _ = whole("blobs", n_x=7, seed=5)
    assert X1.shape == (400, 7)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(X1, X3)


@pytest.mark.parametrize("kw", [dict(name="flower", n_x=3), dict(name="moons", classes=3),
                                dict(name="circles", factor=1.5), dict(name="blobs", m=0),
                                dict(name="synthetic", noise=2.0), dict(name="spirals", classes=1)])
def test_bad_generator_parameters(kw):
    with pytest.raises(DataError, match=kw["name"]):
        load_dataset(DataConfig(**kw))


def test_synthetic_rows_are_blockwise_and_independent_of_m():
    kw = dict(seed=3, n_x=2000, classes=4, noise=0.1)  # 524-row blocks: the ranges cross blocks
    assert generated.block_rows(2000) == 524
    X, y = synthetic_rows(0, 1500, **kw)
    Xa, ya = synthetic_rows(500, 1100, **kw)  # what a rank would generate for its rows alone
    np.testing.assert_array_equal(Xa, X[500:1100])
    np.testing.assert_array_equal(ya, y[500:1100])
    Xd, yd, ds = whole("synthetic", m=1000, **kw)
    np.testing.assert_array_equal(Xd, X[:1000])
    np.testing.assert_array_equal(yd, y[:1000])
    assert ds.n_classes == 4 and min(np.bincount(y, minlength=4)) > 50


def test_make_synthetic_script_matches_in_memory_set(tmp_path):
    out = tmp_path / "synth"
    cmd = [sys.executable, str(REPO / "scripts/make_synthetic.py"), "--m", "700", "--n-x", "6",
           "--classes", "3", "--out", str(out), "--seed", "9"]
    subprocess.run(cmd, check=True, capture_output=True)
    X, y, _ = whole("synthetic", m=700, n_x=6, classes=3, seed=9, dtype="float32")
    Xf, yf, ds = whole("synthetic", path=str(out))
    assert Xf.dtype == np.float32 and ds.n_classes == 3
    np.testing.assert_array_equal(Xf, X)
    np.testing.assert_array_equal(yf, y)
    bad = subprocess.run(cmd[:3] + ["0"] + cmd[4:], capture_output=True, text=True)
    assert bad.returncode == 2 and "m >= 1" in bad.stderr


def test_make_synthetic_leaves_nothing_half_written(tmp_path, monkeypatch):
    from ddl.data import synthetic

    real = synthetic.synthetic_block

    def dies_on_second_block(k, *a):
        if k == 1:
            raise RuntimeError("disk full")
        return real(k, *a)

    monkeypatch.setattr(synthetic, "synthetic_block", dies_on_second_block)
    with pytest.raises(RuntimeError, match="disk full"):
        generated.write_synthetic(tmp_path, m=2000, n_x=2000, classes=2)
    assert list(tmp_path.iterdir()) == []


def test_large_synthetic_is_generated_on_demand_and_equals_the_in_memory_set(monkeypatch):
    from ddl.data import synthetic

    cfg = DataConfig(name="synthetic", m=3000, n_x=7, classes=3, noise=0.1, dev_fraction=0.2)
    small = load_dataset(cfg)
    monkeypatch.setattr(synthetic, "LAZY_BYTES", 1000)      # force the on-demand source
    lazy = load_dataset(cfg)
    assert isinstance(lazy.train.source, synthetic.SyntheticRows)
    assert isinstance(small.train.source, np.ndarray)
    idx = np.array([5, 0, 2399, 17, 1000])
    for a, b in ((small.train, lazy.train), (small.dev, lazy.dev)):
        np.testing.assert_array_equal(a.take(idx[idx < a.m])[0], b.take(idx[idx < b.m])[0])
        np.testing.assert_array_equal(a.y, b.y)


def test_synthetic_features_are_standard_normal_and_classes_balanced():
    X, y = synthetic_rows(0, 50000, seed=1, n_x=4, classes=3)
    assert abs(X.mean()) < 0.01 and abs(X.std() - 1) < 0.01      # 200k draws: se ~0.002
    counts = np.bincount(y, minlength=3) / len(y)
    assert counts.min() > 0.15, counts
