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
