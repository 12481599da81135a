"""Sweep parents and run listings in the MLflow store (used by the CLI, ddl.sweep, ddl-report)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Optional

from ddl.config import TrackingConfig, redact
from ddl.tracking.store import MAX_PARAM_VALUE, MAX_PARAMS_PER_BATCH, Store, TrackingError, ensure_store, file_lock


def start_parent(cfg: TrackingConfig, name: str, params: Mapping[str, Any],
                 tags: Mapping[str, str] = {}) -> str:
    """Create a sweep's parent run (tag ddl.sweep=true); children join it via nested_in."""
    store = Store(cfg.uri)
    experiment_id = ensure_store(store, cfg.experiment)
    client = store.client()
    run = client.create_run(experiment_id, tags={**tags, "ddl.sweep": "true"}, run_name=redact(name))
    log_params(client, run.info.run_id, params)
    return run.info.run_id


def log_params(client, run_id: str, params: Mapping[str, Any], already: Mapping[str, str] = {}) -> None:
    """Params in batches within MLflow's limits; a resumed run keeps the ones it has (MLflow
    refuses to change a logged value)."""
    from mlflow.entities import Param  # noqa: PLC0415

    todo = [Param(k, redact(str(v))[:MAX_PARAM_VALUE]) for k, v in params.items() if k not in already]
    for i in range(0, len(todo), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=todo[i:i + MAX_PARAMS_PER_BATCH])


def parent_for_key(cfg: TrackingConfig, name: str, key: str) -> str:
    """Get or create the parent run tagged ddl.sweep_key=key: jobs of one sweep that start in
    separate processes (a launcher, an array) find the same parent. Serialized by a file lock
    for a local store; against a server two jobs starting in the same instant could race."""
    store = Store(cfg.uri)
    lock = store.path.with_suffix(".sweeps.lock") if store.sqlite else None
    with (file_lock(lock) if lock else _no_lock()):
        return find_parent(cfg, key) or start_parent(cfg, name, {"sweep": name},
                                                       {"ddl.sweep_key": key})


@contextmanager
def _no_lock() -> Iterator[None]:
    yield


def find_parent(cfg: TrackingConfig, key: str) -> Optional[str]:
    """The parent run tagged ddl.sweep_key=key, if any (never creates one)."""
    store = Store(cfg.uri)
    found = list(search_all(store.client(), ensure_store(store, cfg.experiment),
                             f"tags.`ddl.sweep_key` = '{key}'"))
    return found[0].info.run_id if found else None


def fetch_runs(cfg: TrackingConfig, parent: Optional[str] = None) -> list[dict[str, Any]]:
    """Runs of `cfg.experiment` (or of one parent) as plain dicts: run_id, name, status,
    start_time, params, metrics (latest values), tags. Never creates a store or an experiment."""
    store, experiment = Store(cfg.uri), cfg.experiment
    if store.sqlite and not store.path.is_file():
        raise TrackingError(f"no MLflow store at {store.path} (from {store.uri})")
    client = store.client()
    try:
        found = client.get_experiment_by_name(experiment)
    except Exception as err:  # unreachable server, unreadable database
        raise store.unreachable(err) from err
    if found is None:
        raise TrackingError(f"no experiment named {experiment!r} in {store.uri}")
    where = f"tags.mlflow.parentRunId = '{parent}'" if parent else ""
    return [_as_dict(run) for run in search_all(client, found.experiment_id, where)]


def search_all(client, experiment_id: str, where: str) -> Iterator[Any]:
    token = None
    while True:
        page = client.search_runs([experiment_id], where, max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _as_dict(run) -> dict[str, Any]:
    info, data = run.info, run.data
    return {"run_id": info.run_id, "name": info.run_name, "status": info.status,
            "start_time": info.start_time, "params": dict(data.params),
            "metrics": dict(data.metrics), "tags": dict(data.tags)}
