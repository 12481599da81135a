"""A sweep's answer from its points: rollups, the swept numeric keys, the plots and the table."""
import math

import pytest

from ddl.runner.sweep_summary import (console_table, error_series, point_run, rollups,
                                      swept_numeric, thresholds, write_artifacts)
from ddl.runner.report import rows_from_runs

PNG = b"\x89PNG\r\n\x1a\n"


def _summary(train, dev, label, test=math.nan, split="dev"):
    held = dev if split == "dev" else test
    return {"train": {"error": train}, "dev": {"error": dev}, "test": {"error": test},
            "avoidable_bias": train, "variance": held - train, "diagnosis": label,
            "diagnosis_split": split, "mlflow_run_id": None}


def _params(opt, lr):
    return {"optimizer.name": opt, "optimizer.lr": str(lr), "out_dir": f"x/{opt}{lr}",
            "tracking.run_name": f"{opt} lr={lr}", "train.epochs": "10"}


POINTS = [
    point_run(0, "gd lr=0.1", _params("gd", 0.1), _summary(0.20, 0.22, "high bias")),
    point_run(1, "gd lr=0.01", _params("gd", 0.01), _summary(0.30, 0.31, "high bias")),
    point_run(2, "adam lr=0.1", _params("adam", 0.1), _summary(0.02, 0.12, "high variance")),
    point_run(3, "adam lr=0.01", _params("adam", 0.01), None),
]


def test_rollups_name_the_best_point_and_count_failures():
    rows = rows_from_runs(POINTS)
    metrics, best = rollups(rows)
    assert best["run"] == "adam lr=0.1"
    assert metrics["sweep/best_held_out_error"] == pytest.approx(0.12)
    assert (metrics["sweep/points"], metrics["sweep/points_finished"],
            metrics["sweep/points_failed"]) == (4, 3, 1)
    assert metrics["dev_error"] == pytest.approx(0.12) and metrics["variance"] == pytest.approx(0.10)


def test_only_numeric_hyperparameters_that_vary_are_swept_keys():
    assert swept_numeric(POINTS) == ["optimizer.lr"]       # not out_dir, not the constant epochs


def test_error_series_one_line_per_other_choice():
    series = error_series(POINTS, rows_from_runs(POINTS), "optimizer.lr")
    assert series == {"gd": [(0.1, 0.22), (0.01, 0.31)], "adam": [(0.1, 0.12)]}


def test_artifacts_are_a_table_a_map_and_one_plot_per_swept_key(tmp_path):
    rows = rows_from_runs(POINTS)
    written = write_artifacts(POINTS, rows, tmp_path, *thresholds(POINTS))
    assert sorted(p.name for p in written) == ["bias_variance_map.png", "error_vs_optimizer_lr.png",
                                               "sweep_table.md"]
    for p in written:
        assert p.stat().st_size > 1000 if p.suffix == ".png" else "adam lr=0.1" in p.read_text()
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == PNG


def test_console_table_best_first_with_the_failed_point_and_the_best_line():
    text = console_table(POINTS)
    lines = text.splitlines()
    assert lines[-1] == "best: adam lr=0.1 (dev err 12.00%, high variance)"
    order = [name for name in ("adam lr=0.1", "gd lr=0.1", "gd lr=0.01", "adam lr=0.01")
             if any(line.startswith(name) for line in lines)]
    assert order == ["adam lr=0.1", "gd lr=0.1", "gd lr=0.01", "adam lr=0.01"], text
    assert "FAILED" in text
    assert max(len(line) for line in lines) <= 120


def test_a_sweep_without_dev_split_is_judged_on_test():
    runs = [point_run(0, "a", {"x": "1"}, _summary(0.01, math.nan, "high variance", 0.2, "test")),
            point_run(1, "b", {"x": "2"}, _summary(0.05, math.nan, "ok", 0.08, "test"))]
    assert console_table(runs).splitlines()[-1] == "best: b (test err 8.00%, ok (test))"


def test_map_labels_of_coincident_points_merge_and_near_ones_move_down():
    from ddl.runner.plots import label_places

    points = [("a", 0.106, -0.006), ("b", 0.119, -0.006), ("c", 0.32, 0.028), ("d", 0.32, 0.028),
              ("e", 0.119, 0.056)]
    places = label_places(points, span=(35.0, 11.0))
    assert [(label, row) for label, _, _, row in places] == [("e", 0), ("c, d", 0), ("a", 0), ("b", 1)]
    assert places[1][1:3] == (32.0, 2.8)                 # in %, as the axes are


@pytest.mark.parametrize("token, name", [
    ("optimizer.lr=0.07257005721594278", "lr=0.07257"),      # an Optuna trial's float
    ("optimizer.lr=0.01", "lr=0.01"), ("train.epochs=30000", "epochs=30000"),
    ("train.seed=123456789", "seed=123456789"), ("optimizer.lr=1e-4", "lr=1e-4"),
    ("model.hidden=[6]", "hidden=[6]"), ("optimizer=adam", "adam"), ("lr=0.07257", "lr=0.07257")])
def test_run_names_are_compact_with_long_floats_shortened(token, name):
    from ddl.runner.names import compact

    assert compact(token) == name and compact(name) == name          # idempotent


@pytest.mark.parametrize("points, failed, stored, expected, status", [
    (3, 0, ["FINISHED"] * 3, 3, "FINISHED"),
    (2, 1, ["FINISHED", "FAILED"], 3, "FAILED"),
    (1, 0, ["FINISHED", "KILLED"], 3, "KILLED"),          # Ctrl-C in the second point
    (1, 0, ["FINISHED"], 9, "KILLED"),                    # stopped before the others started
    (0, 0, [], None, "FAILED"),
])
def test_a_sweep_parent_is_finished_only_when_every_point_finished(points, failed, stored, expected,
                                                                  status):
    from ddl.runner.sweep_summary import sweep_status

    assert sweep_status(points, failed, stored, expected) == status


def test_a_sweep_parents_description_says_how_many_points_and_which_was_best():
    from ddl.runner.sweep_summary import description

    m = {"sweep/points": 3, "sweep/points_finished": 3}
    text = description(m, ("decay_rate=0.1", "dev err 20.00%", "high bias"), False)
    assert text.startswith("A sweep of 3 points, all finished. Best: **decay_rate=0.1** (dev err 20.00%), "
                           "high bias.") and "`sweep_table.md` ranks" in text
    m = {"sweep/points": 4, "sweep/points_finished": 2, "sweep/points_failed": 1, "sweep/points_pruned": 1}
    assert description(m, ("adam", "dev err 5.00% ± 0.50% over 2 seeds", "ok"), True).startswith(
        "A sweep of 4 points: 2 finished, 1 failed, 1 pruned. Best on the mean: **adam**")
    assert "No point finished with a held-out error" in description(
        {"sweep/points": 1, "sweep/points_finished": 0, "sweep/points_failed": 1}, None, False)
