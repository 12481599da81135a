"""Seeds as a dimension (ddl/runner/seeds.py): configurations by their mean ± std over seeds, the
best on the mean; and a real tracked sweep of 2 learning rates x 3 seeds whose parent, console,
`ddl-report --parent` and map say so."""
from __future__ import annotations

import statistics

import pytest
from mlflow import MlflowClient

from ddl.runner import seeds
from helpers import ddl_train


def run(i: int, lr: str, seed: str, train: float, dev: float, status="FINISHED") -> dict:
    return {"run_id": f"r{i}", "name": f"lr={lr} seed={seed}", "status": status,
            "params": {"optimizer.lr": lr, "train.seed": seed, "tracking.uri": "x", "out_dir": f"d{i}"},
            "metrics": {"error/train": train, "error/dev": dev, "bias/avoidable": train,
                        "bias/variance": dev - train}}


def test_configurations_are_grouped_over_their_seeds_and_the_best_is_chosen_on_the_mean():
    runs = [run(0, "0.1", "0", 0.10, 0.10), run(1, "0.1", "1", 0.10, 0.30),   # mean 0.20, one lucky
            run(2, "0.01", "0", 0.10, 0.15), run(3, "0.01", "1", 0.10, 0.17),
            run(4, "0.01", "2", 0.10, 0.9, status="FAILED")]                     # not counted
    configs = seeds.configurations(runs)
    assert [c["label"] for c in configs] == ["lr=0.01", "lr=0.1"]            # the best point is lr=0.1's
    best = configs[0]
    assert best["seeds"] == 2 and best["runs"] == ["r2", "r3"]
    assert best["mean"]["held_out"] == pytest.approx(0.16)
    assert best["std"]["held_out"] == pytest.approx(statistics.stdev([0.15, 0.17]))
    assert configs[1]["std"]["variance"] == pytest.approx(statistics.stdev([0.0, 0.2]))
    assert "lr=0.01 (dev err 16.00% ± 1.41% over 2 seeds" in seeds.best_line(configs)
    assert [p[0] for p in seeds.map_points(configs)] == ["lr=0.01", "lr=0.1"]
    assert "16.00% ± 1.41%" in seeds.table(configs) and seeds.markdown(configs).count("\n") == 4


def test_without_seeds_or_with_one_seed_a_configuration_there_is_nothing_to_group():
    assert seeds.configurations([run(0, "0.1", "0", 0.1, 0.2), run(1, "0.01", "0", 0.1, 0.2)]) == []
    assert seeds.configurations([run(0, "0.1", "0", 0.1, 0.2), run(1, "0.01", "1", 0.1, 0.2)]) == []


def test_a_sweep_of_two_rates_times_three_seeds_reports_two_configurations_with_their_spread(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, so, se = ddl_train(0, "-m", "optimizer.lr=0.01,0.1", "train.seed=0,1,2", "data=moons",
                             "train.epochs=10", "train.progress=false", f"tracking.uri={uri}",
                             cwd=tmp_path, timeout=300)
    text = so + se
    assert code == 0, text
    assert "by configuration, mean ± std over its seeds, best first:" in text, text
    assert "best (on the mean): lr=" in text and "over 3 seeds" in text, text
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("ddl").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("ddl.sweep") == "true"]
    assert parent.data.tags["ddl.sweep.configs"] == "2" and parent.data.tags["ddl.sweep.seeds"] == "3"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    best = [r for r in children if r.data.tags["mlflow.runName"].startswith(parent.data.tags["ddl.sweep.best_config"] + " ")]
    devs = [r.data.metrics["error/dev"] for r in best]
    assert len(devs) == 3
    assert parent.data.metrics["sweep/best_held_out_error"] == pytest.approx(statistics.fmean(devs))
    assert parent.data.metrics["sweep/best_held_out_std"] == pytest.approx(statistics.stdev(devs))
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"seeds_table.md", "bias_variance_map.png"}
    assert "error_vs_train_seed.png" not in {a.path for a in client.list_artifacts(parent.info.run_id)}
    from ddl import tracking
    from ddl.config import TrackingConfig

    stored = tracking.fetch_runs(TrackingConfig(uri=uri), parent=parent.info.run_id)
    points = seeds.map_points(seeds.configurations(stored))
    assert len(points) == 2 and all(len(p) == 5 for p in points)           # 2 points, each with its spread
