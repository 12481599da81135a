"""A trained run's final.npz predicts raw rows with the saved normalization and BN statistics."""
import json

import numpy as np

from ddl.config import Config
from ddl.config import DataConfig
from ddl.data.dataset import load_dataset
from ddl.predict import load
from helpers import ddl_train


def test_final_npz_reproduces_the_reported_train_accuracy(tmp_path):
    out = tmp_path / "run"
    code, so, se = ddl_train(0, "data=moons", "data.normalize=true", "model.hidden=[8,4]",
                             "model.batchnorm=true", "train.dtype=float64", "train.epochs=20",
                             "tracking=off", f"out_dir={out}", cwd=tmp_path, timeout=120)
    assert code == 0, so + se
    summary = json.loads((out / "summary.json").read_text())
    m = load(out / "final.npz")
    assert m.normalizer is not None and m.bn_state is not None
    ds = load_dataset(Config(data=DataConfig(name="moons", normalize=False)).data)  # raw rows
    X, y = ds.train.take(np.arange(ds.train.m))
    accuracy = float(np.mean(m.predict(X) == y))
    assert accuracy == summary["train"]["accuracy"], (accuracy, summary["train"])
    assert np.array_equal(m.predict(OnTheGPU(X)), m.predict(X))     # rows that live on a GPU


class OnTheGPU:
    """Rows as CuPy holds them: they refuse an implicit conversion and copy out with .get()."""

    __cuda_array_interface__ = {}

    def __init__(self, rows):
        self.rows = rows

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed")

    def get(self):
        return self.rows.copy()


def test_predict_on_raw_course_pixels_gives_the_reported_test_accuracy(tmp_path):
    import h5py
    import pytest

    from test_data_course import CAT, need

    out = tmp_path / "cat"
    code, so, se = ddl_train(0, "data=catvnoncat", f"data.path={need(CAT)}", "data.normalize=true",
                             "model.hidden=[7]", "train.dtype=float64", "train.epochs=60",
                             "optimizer=adam", "optimizer.lr=0.005", "train.batch_size=64",
                             "tracking=off", f"out_dir={out}", cwd=tmp_path, timeout=120)
    assert code == 0, so + se
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "learning_curves.png").stat().st_size > 1000, "plots are written untracked too"
    with h5py.File(CAT / "test_catvnoncat.h5") as f:           # the raw uint8 images, as shipped
        X, y = f["test_set_x"][:], f["test_set_y"][:]
    m = load(out / "final.npz")
    assert m.input_divisor == 255.0 and X.dtype == np.uint8 and X.shape == (50, 64, 64, 3)
    accuracy = float(np.mean(m.predict(X) == y))
    assert accuracy == summary["test"]["accuracy"], (accuracy, summary["test"])
    assert float(np.mean(m.predict(X.reshape(50, -1)) == y)) == accuracy    # flat rows too
    with pytest.raises(ValueError, match=r"rows.*\(m, 12288\).*transposed"):
        m.predict(X.reshape(50, -1).T)                        # the course's column layout
    with pytest.warns(UserWarning, match=r"look scaled already.*divides them by 255"):
        m.predict(X / 255.0)                                  # a student's own scaling: said
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.predict(X)                                          # the raw pixels: no word
