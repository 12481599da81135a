"""scikit-learn's bundled sets read from its files, without importing it (ddl/data/bundled.py)."""
import subprocess
import sys

import numpy as np
import pytest

from ddl.data import bundled


@pytest.mark.parametrize("name", bundled.NAMES)
def test_files_give_scikit_learns_arrays(name):
    datasets = pytest.importorskip("sklearn.datasets")
    bunch = getattr(datasets, f"load_{name}")()
    X, y, names = bundled.load(name)
    assert X.dtype == bunch.data.dtype and np.array_equal(X, bunch.data)
    assert y.dtype.kind == "i" and np.array_equal(y, bunch.target)
    assert names == [str(n) for n in bunch.target_names]


def test_loading_does_not_import_scikit_learn():
    pytest.importorskip("sklearn")
    code = ("import sys; from ddl.data.dataset import load_dataset; from ddl.config import DataConfig; "
            "ds = load_dataset(DataConfig(name='digits')); print(ds.train.m + ds.dev.m, "
            "sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1797", "[]"], out.stdout + out.stderr


def test_moved_files_fall_back_to_importing(monkeypatch, tmp_path):
    datasets = pytest.importorskip("sklearn.datasets")
    monkeypatch.setattr(bundled, "data_dir", lambda: tmp_path)     # a folder without the files
    X, y, _ = bundled.load("breast_cancer")
    assert np.array_equal(X, datasets.load_breast_cancer().data)


def test_a_header_that_disagrees_is_not_trusted(tmp_path):
    (tmp_path / "breast_cancer.csv").write_text("3,2,a,b\n1,2,0\n3,4,1\n")
    with pytest.raises(ValueError, match="header says"):
        bundled.read_breast_cancer(tmp_path)
