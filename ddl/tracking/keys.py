"""The names ddl's metrics have in MLflow, grouped so the dashboard's sections read as the course
does: `error/…`, `cost/…`, `accuracy/…`, `bias/…` (the diagnosis), `lr`, `perf/…`, and on a sweep
parent `sweep/…`. These names are stable; runs logged before them (flat names such as
`dev_error`) are still read (`read_metric`).

Inside ddl an epoch record keeps the flat names (`train_error`, `avoidable_bias`, …): the mapping
happens once, when a metric goes to the store.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

METRIC_KEYS = {
    "train_error": "error/train", "dev_error": "error/dev", "test_error": "error/test",
    "train_cost": "cost/train", "dev_cost": "cost/dev", "test_cost": "cost/test",
    "train_accuracy": "accuracy/train", "dev_accuracy": "accuracy/dev",
    "test_accuracy": "accuracy/test",
    "avoidable_bias": "bias/avoidable", "variance": "bias/variance", "cost_rise": "bias/cost_rise",
    "lr": "lr",
    "samples_per_s": "perf/samples_per_s", "allreduce_share": "perf/allreduce_share",
    # the best held-out error so far and after how many epochs (counted as the console counts:
    # 8 is the line "epoch 8/N", the charts' step 7); with early stopping or a decaying rate the
    # last epoch's error is not the configuration's
    "dev_best_error": "error/dev_best", "dev_best_epoch": "epoch/dev_best",
    "test_best_error": "error/test_best", "test_best_epoch": "epoch/test_best",
}
# a sweep parent's rollups
SWEEP_KEYS = {
    "best_held_out_error": "sweep/best_held_out_error", "best_held_out_std": "sweep/best_held_out_std",
    "points": "sweep/points",
    "finished": "sweep/points_finished", "failed": "sweep/points_failed", "pruned": "sweep/points_pruned",
}


def mlflow_key(name: str) -> str:
    """The store's name for a record's metric ('dev_error' -> 'error/dev'); others as they are."""
    return METRIC_KEYS.get(name, name)


def read_metric(metrics: Mapping[str, Any], name: str) -> Optional[float]:
    """A run's metric by its record name, under its grouped key or (an older run) its flat one;
    None when absent or NaN."""
    value = metrics.get(mlflow_key(name), metrics.get(name))
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number
