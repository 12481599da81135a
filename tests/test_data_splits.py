"""Seeded train/dev/test splits and normalization fitted on the training split alone."""
import numpy as np
import pytest

from ddl.data import DataConfig, DataError, Normalizer, Split, fit_normalizer, load_dataset
from ddl.data.errors import check_finite
from ddl.data.splits import split_indices


def test_split_sizes_disjoint_cover_and_seeded():
    tr, dv, te = split_indices(1001, 0.2, 0.1, seed=4)
    assert (len(tr), len(dv), len(te)) == (701, 200, 100)
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, dv, te])), np.arange(1001))
    again = split_indices(1001, 0.2, 0.1, seed=4)
    assert all(np.array_equal(a, b) for a, b in zip((tr, dv, te), again))
    assert not np.array_equal(dv, split_indices(1001, 0.2, 0.1, seed=5)[1])
    assert all(np.all(np.diff(p) > 0) for p in (tr, dv, te))  # sorted: local file reads


def test_stratified_split_keeps_class_proportions():
    labels = np.repeat([0, 1, 2], [600, 300, 100])
    tr, dv, te = split_indices(1000, 0.2, 0.1, seed=0, labels=labels)
    assert np.bincount(labels[dv]).tolist() == [120, 60, 20]
    assert np.bincount(labels[te]).tolist() == [60, 30, 10]
    assert np.bincount(labels[tr]).tolist() == [420, 210, 70]


def test_zero_fractions_mean_no_split_and_ranks_agree():
    cfg = DataConfig(name="moons", dev_fraction=0.0, test_fraction=0.0)
    ds = load_dataset(cfg)
    assert ds.dev is None and ds.test is None and ds.train.m == 300
    cfg = DataConfig(name="moons", dev_fraction=0.3, test_fraction=0.1, split_seed=2)
    runs = [load_dataset(cfg, rank=r, world_size=3) for r in range(3)]
    for ds in runs[1:]:
        for a, b in ((ds.train, runs[0].train), (ds.dev, runs[0].dev), (ds.test, runs[0].test)):
            np.testing.assert_array_equal(a.index, b.index)


@pytest.mark.parametrize("dev,test", [(1.0, 0.0), (0.6, 0.4), (-0.1, 0.0)])
def test_bad_fractions(dev, test):
    with pytest.raises(DataError, match="dev_fraction"):
        load_dataset(DataConfig(dev_fraction=dev, test_fraction=test))


def leaky_npz(tmp_path):
    """Training rows near 0, dev/test rows near 1000: any leak moves the mean by ~hundreds."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((200, 3)) * [1.0, 2.0, 0.5] + [0.0, 1.0, -1.0]
    path = tmp_path / "leak.npz"
    np.savez(path, X=X, y=np.arange(200) % 2, X_dev=X[:50] + 1000, y_dev=np.zeros(50, int),
             X_test=X[:50] - 1000, y_test=np.zeros(50, int))
    return path, X


def test_normalization_statistics_come_from_training_split_only(tmp_path):
    path, X = leaky_npz(tmp_path)
    ds = load_dataset(DataConfig(name="npz", path=str(path), normalize=True))
    np.testing.assert_allclose(ds.normalizer.mean, X.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(ds.normalizer.std, X.std(axis=0), atol=1e-12)
    Xtr, _ = ds.train.take(np.arange(200))
    np.testing.assert_allclose(Xtr.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(Xtr.std(axis=0), 1, atol=1e-12)
    Xdev, _ = ds.dev.take([0])  # dev goes through the TRAINING statistics
    np.testing.assert_allclose(Xdev[0], (X[0] + 1000 - X.mean(0)) / X.std(0), atol=1e-9)


def test_normalization_with_fraction_split_uses_train_rows_only():
    ds = load_dataset(DataConfig(name="blobs", normalize=True, dev_fraction=0.3, test_fraction=0.2))
    raw = Split(ds.train.source, np.zeros(len(ds.train.source)))
    Xall, _ = raw.take(np.arange(raw.m))
    train_rows = Xall[ds.train.index]
    np.testing.assert_allclose(ds.normalizer.mean, train_rows.mean(0), atol=1e-12)
    assert np.abs(ds.normalizer.mean - Xall.mean(0)).max() > 1e-3  # so a leak would be caught


def test_streamed_fit_equals_one_pass_and_constant_feature_passes_through():
    rng = np.random.default_rng(2)
    X = np.c_[rng.standard_normal((1003, 2)) * 3 + 5, np.full(1003, 7.0)]
    norm = fit_normalizer(Split(X, np.zeros(1003)), chunk=97)  # uneven chunks
    np.testing.assert_allclose(norm.mean, X.mean(0), rtol=1e-13)
    np.testing.assert_allclose(norm.std[:2], X[:, :2].std(0), rtol=1e-12)
    assert norm.std[2] == 1.0  # zero variance: centred only, not divided by ~0
    out = norm.apply(X[:4].astype(np.float32))
    assert out.dtype == np.float32 and np.all(out[:, 2] == 0)


def test_normalizer_round_trips_through_dict():
    norm = Normalizer(np.array([1.0, -2.0]), np.array([0.5, 3.0]))
    back = Normalizer.from_dict(norm.to_dict())
    assert set(norm.to_dict()) == {"norm/mean", "norm/std"}
    np.testing.assert_array_equal(back.mean, norm.mean)
    np.testing.assert_array_equal(back.std, norm.std)
    with pytest.raises(DataError, match="missing keys"):
        Normalizer.from_dict({"norm/mean": norm.mean})
    with pytest.raises(DataError, match="std > 0"):
        Normalizer(np.zeros(2), np.array([1.0, 0.0]))
    with pytest.raises(DataError, match=r"expects rows \(b, 2\)"):
        norm.apply(np.zeros((3, 5)))


def test_finite_check_streams_and_reports_first_bad_row():
    X = np.ones((1000, 4))
    X[[612, 900], 2] = np.nan
    with pytest.raises(DataError, match="where.npz: row 612 of the features"):
        check_finite("where.npz", Split(X, np.zeros(1000)), chunk=100)
