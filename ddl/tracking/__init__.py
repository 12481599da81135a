"""MLflow, the experiment-tracking edge: the only package that imports mlflow (mlflow-skinny suffices),
and only when a run is recorded or read: importing the package loads no MLflow.

store    where the store is (`Store`), checking it, creating it once safely
runs     sweep parents and run listings
tracker  one run's params, buffered per-epoch metrics with the diagnosis, artifacts, its end
worker   the invocation's runs recorded in a process beside training; link: rank 0's end of it
outbox   what a run sends, delivered in order or kept (replay: python -m ddl.tracking.replay)
"""
from ddl.tracking.runs import fetch_runs, find_parent, log_params, parent_for_key, start_parent
from ddl.tracking.store import (MAX_PARAM_VALUE, MAX_PARAMS_PER_BATCH, Store, TrackingError, ensure_store,
                                flatten_config, precheck)
from ddl.tracking.tracker import NullTracker, Tracker, open_tracker

__all__ = [
    "MAX_PARAMS_PER_BATCH", "MAX_PARAM_VALUE", "NullTracker", "Store", "Tracker", "TrackingError",
    "ensure_store", "fetch_runs", "find_parent", "flatten_config", "log_params", "open_tracker",
    "parent_for_key", "precheck", "start_parent",
]
