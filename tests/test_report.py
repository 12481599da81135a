"""ddl-report's pure helpers, its command line on a real SQLite store, and the PNG plots."""
import csv
import io
import math
import subprocess
import sys

import pytest

from ddl import tracking
from ddl.config import TrackingConfig
from ddl.runner import plots
from ddl.runner.report import format_table, main, rows_from_runs, to_csv, to_markdown

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(name, train=None, dev=None, tags=None, **params):
    metrics = {k: v for k, v in (("train_error", train), ("dev_error", dev)) if v is not None}
    if train is not None and dev is not None:
        metrics.update(avoidable_bias=train, variance=dev - train)
    return {"run_id": f"{name}-id-0123456789", "name": name, "status": "FINISHED",
            "params": params, "metrics": metrics, "tags": tags or {}}


RUNS = [
    _run("adam", 0.01, 0.11, {"diagnosis": "high variance"}, **{"optimizer.name": "adam",
         "optimizer.lr": "0.001", "schedule.name": "inverse_time", "schedule.decay_rate": "0.5"}),
    _run("sgd", 0.15, 0.16, **{"optimizer.name": "sgd", "optimizer.lr": "0.1"}),
    _run("train-only", 0.005),
    _run("momentum", 0.005, 0.01, **{"optimizer.name": "momentum"}),
    _run("sweep parent", tags={"ddl.sweep": "true"}),
    _run("crashed"),
    _run("nan dev", 0.02, math.nan),
]


def test_rows_best_first_without_sweep_parents():
    rows = rows_from_runs(RUNS)
    assert [r["run"] for r in rows] == ["momentum", "adam", "sgd", "train-only", "nan dev", "crashed"]
    adam = rows[1]
    assert (adam["optimizer"], adam["schedule"], adam["lr0"], adam["decay"]) == (
        "adam", "inverse_time", 0.001, 0.5)
    assert adam["diagnosis"] == "high variance"  # from the run's tag
    assert rows[2]["diagnosis"] == "high bias"  # no tag: diagnosed from the final errors
    assert rows[3]["diagnosis"] == "ok" and rows[3]["variance"] is None
    assert rows[5]["diagnosis"] is None and rows[5]["train_error"] is None


def test_format_table_aligns_and_marks_missing():
    lines = format_table(rows_from_runs(RUNS)).splitlines()
    assert lines[0].split() == ["run", "optimizer", "schedule", "α₀", "decay", "train", "err", "dev",
                                "err", "avoid.", "bias", "variance", "diagnosis", "status"]
    assert len(lines) == 2 + 6
    assert lines[2].startswith("momentum") and "0.50%" in lines[2] and "1.00%" in lines[2]
    assert "11.00%" in lines[3] and "high variance" in lines[3] and "0.001" in lines[3]
    assert lines[-1].split()[1:] == ["-"] * 9 + ["FINISHED"]


def test_csv_has_raw_fractions_and_run_ids():
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows_from_runs(RUNS)))))
    assert [r["run"] for r in parsed][:2] == ["momentum", "adam"]
    assert float(parsed[1]["dev_error"]) == pytest.approx(0.11, abs=1e-12)
    assert parsed[1]["run_id"] == "adam-id-0123456789"
    assert parsed[-1]["train_error"] == "" and parsed[-1]["status"] == "FINISHED"


def test_markdown_is_a_pipe_table():
    lines = to_markdown(rows_from_runs(RUNS)).splitlines()
    assert lines[0].startswith("| run | data | hidden | optimizer |") and lines[1].startswith("| --- |")
    assert len(lines) == 2 + 6 and all(line.count("|") == 16 for line in lines)


LONG = [_run(f"optimizer=adam optimizer.lr={lr} schedule=inverse_time schedule.decay_rate={d} "
             f"model.hidden=[64,32] train.batch_size=128", 0.02 + d / 10, 0.05 + d / 10,
             **{"data.name": "moons", "model.hidden": "[64, 32]", "optimizer.name": "adam",
                "optimizer.lr": str(lr), "schedule.name": "inverse_time",
                "schedule.decay_rate": str(d)})
        for lr in (0.001, 0.01) for d in (0.0, 0.3)]


def test_the_table_fits_120_columns_and_keeps_both_ends_of_long_names():
    text = format_table(rows_from_runs(LONG))
    assert max(len(line) for line in text.splitlines()) <= 120, text
    lines = text.splitlines()
    assert lines[0].startswith("all runs: data moons, hidden [64, 32], optimizer adam"), text
    names = [line.split("  ")[0] for line in lines[3:]]    # only the overrides that differ
    assert names == ["lr=0.001 decay_rate=0.0", "lr=0.01 decay_rate=0.0",
                     "lr=0.001 decay_rate=0.3", "lr=0.01 decay_rate=0.3"], text
    wide = format_table(rows_from_runs(LONG), wide=True)
    assert LONG[0]["name"] in wide and "schedule" in wide.splitlines()[0]


def test_a_run_without_dev_split_ranks_and_is_diagnosed_on_test():
    cat = _run("cat", 0.0144, None, **{"data.name": "catvnoncat", "model.hidden": "[20, 7, 5]"})
    cat["metrics"]["test_error"] = 0.20
    rows = rows_from_runs([cat, RUNS[1]])
    assert rows[0]["run"] == "sgd" and rows[1]["diagnosis"] == "high variance (test)", rows
    tagged = {**cat, "tags": {"diagnosis": "high variance", "diagnosis.split": "test"}}
    assert rows_from_runs([tagged])[0]["diagnosis"] == "high variance (test)"
    line = next(x for x in format_table(rows).splitlines() if x.startswith("cat "))
    assert "catvnoncat" in line and "20.00%" in line and "[20, 7, 5]" in line


def test_group_by_data_prints_one_table_per_dataset(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for name, data in (("a", "moons"), ("b", "flower"), ("c", "moons")):
        cfg = TrackingConfig(uri=uri, experiment="G", run_name=name)
        tracker = tracking.Tracker.start(cfg, {"data.name": data})
        tracker.log_epoch(0, {"train_error": 0.1, "dev_error": 0.2})
        tracker.end()
    assert main(["--uri", uri, "--experiment", "G", "--group-by", "data"]) == 0
    out = capsys.readouterr().out
    assert "data moons: 2 run(s)" in out and "data flower: 1 run(s)" in out


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "ddl.runner.report", *args], capture_output=True,
                          text=True, timeout=120, cwd=cwd)


def test_cli_on_a_store_with_two_runs(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for name, (train, dev) in {"worse": (0.15, 0.30), "better": (0.01, 0.02)}.items():
        cfg = TrackingConfig(uri=uri, experiment="X", run_name=name)
        tracker = tracking.Tracker.start(cfg, {"optimizer.name": "adam", "optimizer.lr": 0.01})
        tracker.log_epoch(0, {"train_error": train, "dev_error": dev})
        tracker.end()
    md, out_csv = tmp_path / "r.md", tmp_path / "r.csv"
    done = _cli("--uri", uri, "--experiment", "X", "--markdown", str(md), "--csv", str(out_csv))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[2].startswith("better") and "ok" in lines[2]
    assert lines[3].startswith("worse") and "high bias + high variance" in lines[3]
    assert md.read_text().count("\n") == 4 and out_csv.read_text().count("\n") == 3
    assert main(["--uri", uri, "--experiment", "X", "--limit", "1"]) == 0  # in-process: faster
    shown = capsys.readouterr().out.splitlines()
    assert len(shown) == 3 and shown[2].split() == lines[2].split()
    assert main(["--uri", uri, "--experiment", "nope"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"ddl-report: error: no experiment named 'nope' in {uri}"]


def test_cli_without_a_store_says_so_in_one_line(tmp_path):
    done = _cli(cwd=tmp_path)  # default URI: ./mlflow.db, which does not exist
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "no MLflow store at" in done.stderr
    assert not (tmp_path / "mlflow.db").exists()


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG_SIGNATURE)


def test_learning_curves_png(tmp_path):
    history = [{"epoch": e, "train_cost": 1 / (e + 1), "dev_cost": 1.2 / (e + 1),
                "train_error": 0.3 / (e + 1), "dev_error": math.nan if e == 2 else 0.4 / (e + 1)}
               for e in range(5)]
    plots.learning_curves_png(history, tmp_path / "curves.png", title="high variance")
    plots.learning_curves_png([{"train_cost": 1.0}], tmp_path / "tiny.png")
    assert _is_png(tmp_path / "curves.png") and _is_png(tmp_path / "tiny.png")


def test_schedule_png(tmp_path):
    plots.schedule_png([0.1 / (1 + 0.5 * e) for e in range(10)], tmp_path / "lr.png", "inverse time")
    assert _is_png(tmp_path / "lr.png")


def test_decay_rate_is_blank_for_schedules_that_ignore_it():
    from ddl.runner.report import rows_from_runs

    runs = [{"run_id": "a" * 8, "name": "c", "status": "FINISHED", "tags": {},
             "params": {"schedule.name": "constant", "schedule.decay_rate": "1.0"},
             "metrics": {"train_error": 0.1}},
            {"run_id": "b" * 8, "name": "i", "status": "FINISHED", "tags": {},
             "params": {"schedule.name": "inverse_time", "schedule.decay_rate": "0.3"},
             "metrics": {"train_error": 0.2}}]
    rows = {r["run"]: r for r in rows_from_runs(runs)}
    assert rows["c"]["decay"] is None and rows["i"]["decay"] == 0.3


def test_grouped_metric_names_and_older_flat_ones_read_alike():
    from ddl.tracking.keys import mlflow_key, read_metric

    assert mlflow_key("dev_error") == "error/dev" and mlflow_key("lr") == "lr"
    grouped = {**_run("new"), "metrics": {"error/train": 0.01, "error/dev": 0.11,
                                          "bias/avoidable": 0.01, "bias/variance": 0.10}}
    new, old = rows_from_runs([grouped]), rows_from_runs([_run("old", 0.01, 0.11)])
    keys = ("train_error", "dev_error", "avoidable_bias", "variance", "diagnosis")
    assert [new[0][k] for k in keys] == [old[0][k] for k in keys] == [0.01, 0.11, 0.01,
                                                                      pytest.approx(0.10), "high variance"]
    assert read_metric({"error/dev": float("nan"), "dev_error": 0.2}, "dev_error") is None


def test_the_best_held_out_error_is_the_lowest_so_far_with_its_epoch_counted_from_one():
    from ddl.runner.hooks import Best
    from ddl.runner.report import best_held_out

    best = Best()
    assert best.metrics() == {}
    for epoch, dev in enumerate([0.30, 0.20, 0.25, 0.20, float("nan")]):
        best.see({"epoch": epoch, "dev_error": dev})
    assert best.metrics() == {"dev_best_error": 0.20, "dev_best_epoch": 2}     # the first of the ties
    no_dev = Best()
    no_dev.see({"epoch": 0, "dev_error": float("nan"), "test_error": 0.4})
    assert no_dev.metrics() == {"test_best_error": 0.4, "test_best_epoch": 1}
    assert best_held_out({"error/dev_best": 0.125, "epoch/dev_best": 8.0}) == "12.50% (8)"
    assert best_held_out({"error/test_best": 0.3, "epoch/test_best": 2.0}) == "30.00% (2)"
    assert best_held_out({"error/dev": 0.1}) is None


def test_an_eighteen_point_sweep_fits_in_120_columns_without_cutting_names_its_columns_show():
    from itertools import product

    from ddl.runner.report import format_table

    runs = []
    for i, (opt, sched, decay) in enumerate(product(["gd", "momentum", "adam"], ["inverse_time", "scheduled"],
                                                     ["0", "0.3", "1"])):
        runs.append(_run(f"optimizer={opt} schedule={sched} schedule.decay_rate={decay}", 0.1 + i / 100,
                         0.2 + i / 100, {"diagnosis": "high bias + high variance"},
                         **{"optimizer.name": opt, "optimizer.lr": "0.01", "schedule.name": sched,
                            "schedule.decay_rate": decay, "data.name": "moons", "model.hidden": "[4]"}))
    text = format_table(rows_from_runs(runs))
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 120, text
    assert "…" not in text, text                       # no name cut in the middle
    assert lines[1].startswith("optimizer  schedule"), text     # the names said nothing more: no run column
    body = [line.split()[:3] for line in lines[3:]]     # optimizer, schedule, decay: every row apart
    assert len({tuple(b) for b in body}) == 18, text
