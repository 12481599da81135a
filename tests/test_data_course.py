"""The course's files load with the shapes, counts and pixel order of shared/datasets/README.md.

Files are found under $DDL_DATASETS (default: shared/datasets beside the repo), as ddl finds
them. CI sets DDL_DATASETS, and then a missing file fails its test; without it (a clone with no
shared/ beside it) such a test skips.
"""
import os
from pathlib import Path

import numpy as np
import pytest

from ddl.data import DataConfig, DataError, load_dataset

ROOT = Path(os.environ.get("DDL_DATASETS",
                           Path(__file__).resolve().parents[1].parent / "shared" / "datasets"))
CAT = ROOT / "c1w2_c1w4_catvnoncat"
FOOTBALL = ROOT / "c2w1_regularization_football" / "data.mat"
SIGNS = ROOT / "c2w3_signs" / "test_signs.h5"


def need(path: Path) -> Path:
    if not path.exists():
        assert not os.environ.get("DDL_DATASETS"), f"DDL_DATASETS is set but {path} is absent"
        pytest.skip(f"course file {path} is absent")
    return path


@pytest.mark.parametrize("name", ["catvnoncat", "football", "signs"])
def test_a_missing_course_folder_names_data_path_and_ddl_datasets(tmp_path, monkeypatch, name):
    monkeypatch.setenv("DDL_DATASETS", str(tmp_path / "nowhere"))
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(name=name))
    text = str(err.value)
    assert "DDL_DATASETS" in text and "data.path" in text and str(tmp_path / "nowhere") in text


def rows(split):
    return split.take(np.arange(split.m))


def test_catvnoncat_shapes_counts_and_pixel_order():
    need(CAT / "train_catvnoncat.h5")
    ds = load_dataset(DataConfig(name="catvnoncat", path=str(CAT), dev_fraction=0.0))
    X, y = rows(ds.train)
    Xt, yt = rows(ds.test)
    assert X.shape == (209, 12288) and Xt.shape == (50, 12288) and ds.dev is None
    assert ds.n_classes == 2 and ds.class_names == ["non-cat", "cat"]
    assert y.dtype == np.int64 and np.bincount(y).tolist() == [137, 72]
    assert np.bincount(yt).tolist() == [17, 33]
    assert y[:10].tolist() == [0, 0, 1, 0, 0, 0, 0, 1, 0, 0]
    assert yt[:10].tolist() == [1, 1, 1, 1, 1, 0, 1, 1, 1, 1]
    # Course column 1 = our row 1; divided by 255, so * 255 gives the raw uint8 values back.
    np.testing.assert_allclose(X[1, :10] * 255, [196, 192, 190, 193, 186, 182, 188, 179, 174, 213],
                               atol=1e-9)
    np.testing.assert_allclose(Xt[1, :10] * 255, [115, 110, 111, 137, 129, 129, 155, 146, 145, 159],
                               atol=1e-9)
    assert (X * 255).mean() == pytest.approx(103.0071, abs=1e-4)
    assert (Xt * 255).mean() == pytest.approx(107.3723, abs=1e-4)


def test_catvnoncat_rows_are_row_major_height_width_channel():
    h5py = pytest.importorskip("h5py")
    path = need(CAT / "train_catvnoncat.h5")
    with h5py.File(path) as f:
        raw = f["train_set_x"][:3]
    ds = load_dataset(DataConfig(name="catvnoncat", path=str(path), dev_fraction=0.0))
    X, _ = ds.train.take([2, 0])
    np.testing.assert_array_equal(X, raw[[2, 0]].reshape(2, -1) / 255)  # exactly the course's op
    # Pixel (row 5, column 7), channel 2 sits at (5 * 64 + 7) * 3 + 2.
    assert X[1, (5 * 64 + 7) * 3 + 2] == raw[0, 5, 7, 2] / 255
    assert ds.test is not None and ds.test.m == 50  # the train file's sibling is the test split


def test_football_train_and_test_from_mat():
    need(FOOTBALL)
    ds = load_dataset(DataConfig(name="football", path=str(FOOTBALL.parent), dev_fraction=0.0))
    X, y = rows(ds.train)
    Xt, yt = rows(ds.test)
    assert X.shape == (211, 2) and Xt.shape == (200, 2)
    assert y.dtype == np.int64 and yt.dtype == np.int64  # not the file's wrapping uint8
    assert np.bincount(y).tolist() == [105, 106] and np.bincount(yt).tolist() == [113, 87]
    np.testing.assert_allclose(X[0], [-0.158986, 0.423977], atol=1e-6)
    np.testing.assert_allclose(Xt[0], [-0.35306235, -0.67390181], atol=1e-8)
    assert (y[0], yt[0]) == (1, 0)
    assert (-y).min() == -1  # negation no longer wraps to 255


def test_signs_test_file_alone():
    need(SIGNS)
    ds = load_dataset(DataConfig(name="signs", path=str(SIGNS), dev_fraction=0.0))
    X, y = rows(ds.train)
    assert X.shape == (120, 12288) and ds.test is None
    assert ds.n_classes == 6 and ds.class_names == ["0", "1", "2", "3", "4", "5"]
    assert np.bincount(y).tolist() == [20] * 6
    assert y[:10].tolist() == [0, 0, 0, 5, 1, 0, 3, 1, 5, 1]
    assert round(X.min() * 255) == 3 and round(X.max() * 255) == 241
    assert (X * 255).mean() == pytest.approx(181.9456, abs=1e-4)


def test_signs_stratified_split_of_the_test_file():
    need(SIGNS)
    cfg = DataConfig(name="signs", path=str(SIGNS), dev_fraction=0.25, stratify=True)
    ds = load_dataset(cfg)
    assert np.bincount(ds.dev.y).tolist() == [5] * 6 and ds.train.m == 90


def test_signs_folder_without_training_file_says_how_to_proceed():
    need(SIGNS)
    if (SIGNS.parent / "train_signs.h5").exists():
        pytest.skip("train_signs.h5 is present")
    with pytest.raises(DataError, match=r"train_signs\.h5: file not found.*test_signs\.h5"):
        load_dataset(DataConfig(name="signs", path=str(SIGNS.parent)))
