"""Generic files (.npz .npy .csv .h5 .mat) and every bad-input error, each naming the file."""
import sys

import numpy as np
import pytest

from ddl.data import DataConfig, DataError, load_dataset, shard_batches
from ddl.data.files import NpyRows

RNG = np.random.default_rng(0)
X10, Y10 = RNG.standard_normal((10, 3)), np.arange(10) % 3


def load(name, path, **kw):
    return load_dataset(DataConfig(name=name, path=str(path), dev_fraction=0.0, **kw))


def everything(split):
    return split.take(np.arange(split.m))


def save_npz(tmp_path, name="d", **arrays):
    path = tmp_path / f"{name}.npz"
    np.savez(path, **arrays)
    return path


def save_npy(tmp_path, X, y):
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    return tmp_path


def test_npz_with_and_without_own_splits(tmp_path):
    ds = load("npz", save_npz(tmp_path, X=X10, y=Y10))
    X, y = everything(ds.train)
    np.testing.assert_array_equal(X, X10)
    assert y.dtype == np.int64 and ds.n_classes == 3 and ds.dev is None and ds.test is None
    own = save_npz(tmp_path, X=X10, y=Y10, X_dev=X10[:2], y_dev=Y10[:2],
                   X_test=X10[:4], y_test=Y10[:4])
    ds = load_dataset(DataConfig(name="npz", path=str(own), dev_fraction=0.5, test_fraction=0.4))
    assert (ds.train.m, ds.dev.m, ds.test.m) == (10, 2, 4)  # own splits used as is
    np.testing.assert_array_equal(everything(ds.test)[0], X10[:4])


def test_npy_pair_reads_requested_rows_in_order(tmp_path):
    X = RNG.standard_normal((5000, 4)).astype(np.float32)
    ds = load("npy", save_npy(tmp_path, X, np.arange(5000) % 2))
    assert isinstance(ds.train.source, NpyRows)
    idx = np.array([4999, 3, 3, 1200, 0, 4998])  # unsorted, repeated, near and far rows
    Xb, yb = ds.train.take(idx)
    assert Xb.dtype == np.float32
    np.testing.assert_array_equal(Xb, X[idx])
    np.testing.assert_array_equal(yb, idx % 2)
    empty_X, empty_y = ds.train.take(np.array([], dtype=np.int64))  # a zero-row shard
    assert empty_X.shape == (0, 4) and empty_y.shape == (0,)


def test_csv_label_column_by_name(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,label,b\n1.5,0,2\n3,1,4.25\n5,1,6\n")
    ds = load("csv", path)
    X, y = everything(ds.train)
    np.testing.assert_array_equal(X, [[1.5, 2], [3, 4.25], [5, 6]])
    assert y.tolist() == [0, 1, 1]
    with pytest.raises(DataError, match=r"d\.csv.*no label column 'target'"):
        load("csv", path, label="target")


def test_h5_keys_test_split_and_uint8_pixels(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "d.h5"
    imgs = RNG.integers(0, 256, (6, 2, 2, 3), dtype=np.uint8)
    with h5py.File(path, "w") as f:
        f["img"], f["lab"], f["timg"], f["tlab"] = imgs, np.arange(6) % 2, imgs[:2], [1, 0]
    ds = load("h5", path, x_key="img", y_key="lab", x_test_key="timg", y_test_key="tlab")
    X, _ = everything(ds.train)
    np.testing.assert_array_equal(X, imgs.reshape(6, -1) / 255)
    assert ds.n_x == 12 and ds.test.m == 2
    with pytest.raises(DataError, match=r"d\.h5: missing key 'X'"):
        load("h5", path)


def test_mat_keys_and_regression_targets(tmp_path):
    from scipy.io import savemat

    path = tmp_path / "d.mat"
    savemat(path, {"A": X10, "t": X10[:, :2] * 2.5})
    ds = load("mat", path, x_key="A", y_key="t", regression=True)
    X, y = everything(ds.train)
    assert ds.n_classes == 0 and y.shape == (10, 2) and y.dtype == np.float64
    np.testing.assert_array_equal(y, X10[:, :2] * 2.5)


def bad_files(tmp_path):
    """(dataset name, path, expected message) for each kind of broken input."""
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x89HDF-not-really" * 50)
    nan_X, inf_X = X10.copy(), X10.copy()
    nan_X[7, 1], inf_X[4, 0] = np.nan, np.inf
    nan_dir = tmp_path / "nan_npy"
    nan_dir.mkdir()
    neg, frac = Y10.copy(), Y10.astype(float)
    csv_named_npz, npy_named_npz = tmp_path / "table.npz", tmp_path / "one.npz"
    csv_named_npz.write_text("a,b,label\n1,2,0\n3,4,1\n")
    np.save(tmp_path / "one.npy", X10)
    (tmp_path / "one.npy").rename(npy_named_npz)
    neg[2], frac[2] = -1, 1.5
    return [
        ("npz", tmp_path / "missing.npz", "file not found"),
        ("npy", tmp_path / "no_such_dir", "file not found"),
        ("h5", garbage, "not a readable HDF5 file"),
        ("npz", garbage, "not a readable .npz file"),
        ("mat", garbage, "not a readable MATLAB"),
        ("npz", save_npz(tmp_path, "noy", X=X10), "missing key 'y'"),
        ("npz", save_npz(tmp_path, "short", X=X10, y=Y10[:9]), "X has 10 rows but y has 9"),
        ("npz", save_npz(tmp_path, "nan", X=nan_X, y=Y10), "row 7 of the features contains NaN"),
        ("npz", save_npz(tmp_path, "inf", X=inf_X, y=Y10), "row 4 of the features contains NaN"),
        ("npy", save_npy(nan_dir, nan_X.astype(np.float32), Y10), "row 7 of the features"),
        ("npz", save_npz(tmp_path, "neg", X=X10, y=neg), "label -1 at row 2 is outside 0..2"),
        ("npz", save_npz(tmp_path, "frac", X=X10, y=frac), "non-integer class label 1.5 at row 2"),
        ("npz", save_npz(tmp_path, "empty", X=X10[:0], y=Y10[:0]), "the dataset is empty"),
        ("npz", csv_named_npz, "text (a CSV renamed .npz?), not a NumPy .npz archive: for a CSV file use "
                               "data=csv"),
        ("npz", npy_named_npz, "a single-array .npy file, not an .npz archive of X and y"),
        ("npz", save_npz(tmp_path, "objects", X=np.array([{}, {}], dtype=object), y=Y10[:2]),
         "holds pickled Python objects, which ddl never loads"),
        ("npz", save_npz(tmp_path, "narrow_dev", X=X10, y=Y10, X_dev=X10[:4, :2], y_dev=Y10[:4]),
         "(dev split): examples of shape (2,), but the train split's are (3,)"),
    ]


def test_each_bad_input_is_a_clear_data_error(tmp_path):
    for name, path, message in bad_files(tmp_path):
        with pytest.raises(DataError) as err:
            load(name, path)
        assert str(path) in str(err.value) and message in str(err.value), (name, str(err.value))


def test_label_beyond_configured_classes(tmp_path):
    path = save_npz(tmp_path, X=X10, y=Y10)  # labels 0..2
    with pytest.raises(DataError, match=r"d\.npz: label 2 at row 2 is outside 0\.\.1"):
        load("npz", path, classes=2)


def test_truncated_npy_is_reported(tmp_path):
    folder = save_npy(tmp_path, X10, Y10)
    data = (folder / "X.npy").read_bytes()
    (folder / "X.npy").write_bytes(data[:-8 * 3 * 4])  # drop the last 4 rows
    with pytest.raises(DataError, match=r"X\.npy: file is truncated"):
        load("npy", folder)


def test_split_that_empties_training_set(tmp_path):
    path = save_npz(tmp_path, X=X10[:2], y=Y10[:2])
    with pytest.raises(DataError, match=r"d\.npz: the split leaves the training set empty"):
        load_dataset(DataConfig(name="npz", path=str(path), dev_fraction=0.5, test_fraction=0.4))


def test_batch_larger_than_training_set_is_one_full_batch(tmp_path):
    ds = load("npz", save_npz(tmp_path, X=X10, y=Y10))
    (batch,) = shard_batches(ds.train.m, 1000, epoch=0, seed=0, rank=0, world_size=1)
    assert sorted(batch.tolist()) == list(range(10))


def test_file_dataset_without_path_and_unknown_name():
    with pytest.raises(DataError, match="set data.path"):
        load_dataset(DataConfig(name="npz"))
    with pytest.raises(DataError, match="unknown dataset name 'cifar'"):
        load_dataset(DataConfig(name="cifar"))


def test_missing_sklearn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # makes `import sklearn` fail
    with pytest.raises(DataError, match=r"pip install 'ddl\[sklearn\]'"):
        load_dataset(DataConfig(name="digits"))


def test_sklearn_bundled_sets():
    pytest.importorskip("sklearn")
    ds = load_dataset(DataConfig(name="digits", dev_fraction=0.0))
    assert (ds.train.m, ds.n_x, ds.n_classes) == (1797, 64, 10)
    ds = load_dataset(DataConfig(name="breast_cancer", dev_fraction=0.0))
    assert (ds.train.m, ds.n_x, ds.class_names) == (569, 30, ["malignant", "benign"])
