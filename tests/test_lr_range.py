"""The learning-rate range test (ddl/runner/lr_range.py): its rates, its smoothing and suggestion
on a made-up curve, and a real tracked range test on moons (and on 2 ranks, the same curve)."""
from __future__ import annotations

import json
import math

import pytest
from mlflow import MlflowClient

from ddl.runner.lr_range import rates, smooth, suggest
from helpers import ddl_train


def test_the_rates_grow_by_one_factor_from_start_to_end():
    r = rates(1e-6, 10.0, 100)
    assert r[0] == 1e-6 and r[-1] == pytest.approx(10.0) and len(r) == 100
    ratios = [b / a for a, b in zip(r, r[1:])]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-9)


def test_the_suggestion_runs_from_where_the_loss_falls_to_its_minimum():
    lrs = rates(1e-4, 1.0, 60)
    # flat until 1e-3, falling until 0.1, exploding after
    losses = [1.0 if lr < 1e-3 else max(0.2, 1.0 - 0.4 * math.log10(lr / 1e-3)) if lr <= 0.1 else 0.2 * (lr / 0.1) ** 3
              for lr in lrs]
    low, high = suggest(list(zip(lrs, losses)))
    assert 1e-3 < low < 1e-2 and 0.05 < high < 0.3, (low, high)
    assert smooth([1.0, 1.0, 1.0]) == pytest.approx([1.0, 1.0, 1.0])          # bias-corrected
    assert suggest([(1e-3, 1.0), (1e-2, 1.0)]) == (1e-5, 1e-3)                 # never fell: high / 100


def range_test(tmp_path, ranks: int, name: str) -> dict:
    uri = f"sqlite:///{tmp_path / name / 'mlflow.db'}"
    (tmp_path / name).mkdir()
    code, so, se = ddl_train(ranks, "lr_range.enabled=true", "data=moons", "train.dtype=float64",
                             "train.progress=false", f"tracking.uri={uri}", f"out_dir={tmp_path / name / 'run'}",
                             cwd=tmp_path / name, timeout=180)
    text = so + se
    assert code == 0, text
    assert "Search there: ddl-train -m hydra/sweeper=search optimizer.lr='tag(log, interval(" in text, text
    found = json.loads((tmp_path / name / "run" / "lr_range.json").read_text())
    assert 1e-6 <= found["low"] < found["high"] <= 10.0
    assert (tmp_path / name / "run" / "lr_range.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / name / "run" / "final.npz").exists()            # it trains nothing to keep
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("ddl").experiment_id])
    assert run.info.status == "FINISHED"
    assert float(run.data.tags["ddl.lr_range.high"]) == pytest.approx(found["high"], rel=1e-3)
    assert len(client.get_metric_history(run.info.run_id, "lr_range/loss")) == len(found["lr"])
    return found


def test_a_tracked_range_test_suggests_a_range_logs_its_curve_and_two_ranks_give_the_same(tmp_path):
    one, two = range_test(tmp_path, 0, "one"), range_test(tmp_path, 2, "two")
    assert (two["low"], two["high"]) == (one["low"], one["high"])
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-10)             # float64: data-parallel, same curve


def test_a_range_test_is_not_a_sweep_point_and_its_bounds_are_checked(tmp_path):
    code, so, se = ddl_train(0, "-m", "lr_range.enabled=true", "optimizer=gd,adam", "tracking=off",
                             cwd=tmp_path, timeout=120)
    assert code == 1 and se.count("lr_range.enabled=true is a run of its own") == 2, se
    code, so, se = ddl_train(0, "lr_range.enabled=true", "lr_range.start=10", "lr_range.end=1", "tracking=off",
                             cwd=tmp_path, timeout=120)
    assert code == 1 and "lr_range.start" in se and "Traceback" not in se, se
