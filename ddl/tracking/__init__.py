"""MLflow, the experiment-tracking edge: the only package that imports mlflow (mlflow-skinny suffices).

store    where the store is, creating it once safely, connection errors as one paragraph
runs     sweep parents and run listings
tracker  one run's params, buffered per-epoch metrics with the diagnosis, artifacts
report   `ddl-report`, a best-first table of an experiment's runs
"""
from ddl.tracking.runs import (close_parent, end_run, fetch_runs, find_parent, log_params,
                               parent_for_key, start_parent)
from ddl.tracking.store import (MAX_PARAM_VALUE, MAX_PARAMS_PER_BATCH, TrackingError, ensure_store,
                                flatten_config, precheck)
from ddl.tracking.tracker import NullTracker, Tracker, open_tracker

__all__ = [
    "MAX_PARAMS_PER_BATCH", "MAX_PARAM_VALUE", "NullTracker", "Tracker", "TrackingError",
    "close_parent", "end_run", "ensure_store", "fetch_runs",
    "find_parent", "flatten_config", "log_params", "open_tracker", "parent_for_key", "precheck",
    "start_parent",
]
