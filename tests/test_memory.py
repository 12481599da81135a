"""Training from a 1-GB `.npy` dataset keeps every rank's memory flat: rows are read on demand.

Measured: the peak RSS of the busiest of 2 ranks, minus its RSS when the run started, must stay
under 25 % of the file size (here it is about 7 %: ~70 MB for a 977 MiB file).
"""
from __future__ import annotations

import json
import sys

import pytest

from helpers import REPO, ddl_train, run_cmd

pytestmark = pytest.mark.slow


def test_one_gigabyte_npy_trains_with_flat_memory(tmp_path):
    data = tmp_path / "synthetic"
    code, out, err = run_cmd([sys.executable, REPO / "scripts" / "make_synthetic.py", "--m", 1_000_000,
                              "--n-x", 256, "--classes", 10, "--out", data], timeout=300)
    assert code == 0, err
    size_mb = (data / "X.npy").stat().st_size / 2**20
    assert size_mb > 950
    code, out, err = ddl_train(2, "tracking=off", "data=npy", f"data.path={data}", "model.hidden=[32]",
                               "train.epochs=1", "train.batch_size=4096", f"out_dir={tmp_path / 'run'}",
                               cwd=tmp_path, timeout=600)
    assert code == 0, out + err
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    growth = s["peak_rss_mb"] - s["rss_start_mb"]
    print(f"1-GB npy: file {size_mb:.0f} MiB, peak RSS growth {growth:.0f} MiB on the busiest rank")
    assert s["world_size"] == 2 and s["train"]["accuracy"] > 0.5
    assert growth < 0.25 * size_mb, f"peak RSS grew by {growth:.0f} MiB for a {size_mb:.0f} MiB file"
