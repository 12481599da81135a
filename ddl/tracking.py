"""MLflow tracking, rank 0 only: the only module that imports mlflow (mlflow-skinny suffices).

Everything goes through `mlflow.MlflowClient` with explicit run ids, never the fluent global-state
API, so nothing leaks between runs or sweep points in one process. Metric names are fixed (the
report relies on them): train_cost, dev_cost, train_error, dev_error, train_accuracy, dev_accuracy,
lr, samples_per_s, allreduce_share, avoidable_bias, variance; test_cost, test_error at the end.
"""
from __future__ import annotations

import fcntl
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from ddl.diagnosis import diagnose

MAX_PARAMS_PER_BATCH = 100  # MLflow's limits for one log_batch call and one param value
MAX_PARAM_VALUE = 6000
# Fail fast on an unreachable server instead of MLflow's default 7 retries x 120 s timeout.
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable server, missing store or experiment)."""


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: Optional[str] = None  # None: sqlite:///<cwd>/mlflow.db
    experiment: str = "ddl"
    run_name: Optional[str] = None
    parent_run_id: Optional[str] = None  # join an existing parent (SLURM arrays, other processes)
    bayes_error: float = 0.0
    bias_threshold: float = 0.05
    variance_threshold: float = 0.05
    log_every: int = 1  # epochs


def default_uri() -> str:
    """The embedded local store: `sqlite:///<abs cwd>/mlflow.db`."""
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def flatten_config(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"optimizer": {"lr": 0.1}} -> {"optimizer.lr": "0.1"}; lists become their string."""
    flat: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, prefix=f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def _client(uri: str):
    from mlflow import MlflowClient

    if uri.startswith(("http://", "https://")):
        for name, value in _HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
    return MlflowClient(tracking_uri=uri)


def _sqlite_path(uri: str) -> Path:
    path = uri[len("sqlite:///"):].split("?")[0] if uri.startswith("sqlite:///") else ""
    if not path or path == ":memory:":
        raise ValueError(f"tracking.uri must name an SQLite file (sqlite:///path/to.db), got {uri!r}")
    return Path(path).resolve()


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the handle is closed, error or not
        yield


def _create_sqlite_once(uri: str, db: Path, lock: Path) -> None:
    """Create tables and run migrations in the first process only; "created" in the lock file
    lets later processes skip the lock (opening an existing store is safe in parallel)."""
    def created() -> bool:
        return db.is_file() and lock.is_file() and lock.read_text().startswith("created")

    if created():
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(lock):
        if not created():
            _client(uri).search_experiments(max_results=1)  # the first query builds the schema
            lock.write_text("created\n")


def _unreachable(uri: str, err: BaseException) -> TrackingError:
    return TrackingError(f"Cannot use the MLflow tracking store at {uri}: {type(err).__name__}: {err}. "
                         "Start the server (e.g. `mlflow server --host 127.0.0.1 --port 5000`), fix "
                         "the URI (tracking.uri, ddl-report --uri), or train with tracking.enabled=false.")


def ensure_store(uri: str, experiment: str) -> str:
    """Get or create `experiment` (and, for SQLite, the database) once; returns its id. SQLite
    creation runs under an flock on "<db>.lock": sweeps and SLURM arrays start all at once."""
    if uri.startswith("sqlite:"):
        db = _sqlite_path(uri)
        _create_sqlite_once(uri, db, db.with_name(db.name + ".lock"))
        return _get_or_create(_client(uri), experiment, (db.parent / "mlartifacts").as_uri())
    try:
        return _get_or_create(_client(uri), experiment, None)
    except TrackingError:
        raise
    except Exception as err:  # MLflow wraps connection errors in several exception types
        raise _unreachable(uri, err) from err


def _get_or_create(client, name: str, artifact_location: Optional[str]) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException as err:  # another process created it between get and create
            found = client.get_experiment_by_name(name)
            if found is None:
                raise err
    if found.lifecycle_stage == "deleted":
        raise TrackingError(f"MLflow experiment {name!r} is deleted; restore it or pick another name")
    return found.experiment_id


class Tracker:
    """One MLflow run, created or resumed; steps already logged are never logged twice."""

    FLUSH_METRICS, FLUSH_SECONDS = 900, 3.0  # one log_batch holds at most 1000 metrics

    def __init__(self, client, run_id: str, cfg: TrackingConfig, last_steps: dict[str, int]):
        self._client, self.run_id, self.cfg = client, run_id, cfg
        self._last = dict(last_steps)  # metric key -> largest step already in the store
        self._pending, self._label, self._flushed = [], None, time.monotonic()

    @classmethod
    def start(cls, cfg: TrackingConfig, params: Mapping[str, Any], tags: Mapping[str, str] = {},
              run_id: Optional[str] = None, nested_in: Optional[str] = None) -> "Tracker":
        """Create a run (child of nested_in or cfg.parent_run_id) or resume `run_id`."""
        uri = cfg.uri or default_uri()
        experiment_id = ensure_store(uri, cfg.experiment)
        client = _client(uri)
        if run_id is None:
            parent = nested_in or cfg.parent_run_id
            run_tags = {**tags, **({"mlflow.parentRunId": parent} if parent else {})}
            run = client.create_run(experiment_id, tags=run_tags, run_name=cfg.run_name)
            tracker = cls(client, run.info.run_id, cfg, {})
        else:
            run = _get_run(client, uri, run_id)
            tracker = cls(client, run_id, cfg, _last_steps(client, run))
            if run.info.status != "RUNNING":
                client.update_run(run_id, status="RUNNING")
            tracker.set_tags(tags)
        tracker._log_params(params, already=run.data.params)
        return tracker

    def _log_params(self, params: Mapping[str, Any], already: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        # A resumed run keeps its params: MLflow refuses to change a logged value.
        todo = [Param(k, str(v)[:MAX_PARAM_VALUE]) for k, v in params.items() if k not in already]
        for i in range(0, len(todo), MAX_PARAMS_PER_BATCH):
            self._client.log_batch(self.run_id, params=todo[i:i + MAX_PARAMS_PER_BATCH])

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Log one epoch (step=epoch) in one log_batch call, skipping keys whose step is already
        stored. Given train_error, avoidable_bias and variance are added (unless given) and the
        "diagnosis" tag is set. The caller applies cfg.log_every (it knows the last epoch)."""
        from mlflow.entities import Metric

        derived, label = self._diagnosis(metrics)
        fresh = {k: float(v) for k, v in {**derived, **metrics}.items()
                 if epoch > self._last.get(k, -1)}
        if not fresh:  # a resumed job replaying epochs that are already in the store
            return
        ts = int(time.time() * 1000)
        self._pending += [Metric(k, v, ts, epoch) for k, v in fresh.items()]
        self._label = label or self._label
        self._last.update(dict.fromkeys(fresh, epoch))
        if (len(self._pending) >= self.FLUSH_METRICS
                or time.monotonic() - self._flushed >= self.FLUSH_SECONDS):
            self.flush()

    def flush(self) -> None:
        """Send buffered epochs: a store round trip per epoch would slow short epochs down."""
        from mlflow.entities import RunTag

        tags = [RunTag("diagnosis", self._label)] if self._label else []
        while self._pending or tags:
            batch, self._pending = self._pending[:self.FLUSH_METRICS], self._pending[self.FLUSH_METRICS:]
            self._client.log_batch(self.run_id, metrics=batch, tags=tags)
            tags = []
        self._label, self._flushed = None, time.monotonic()

    def _diagnosis(self, metrics: Mapping[str, float]) -> tuple[dict[str, float], Optional[str]]:
        train, dev = metrics.get("train_error"), metrics.get("dev_error")
        if train is None or not 0.0 <= train <= 1.0:  # absent, NaN or not a fraction
            return {}, None
        dev = dev if dev is not None and 0.0 <= dev <= 1.0 else None
        cfg = self.cfg
        d = diagnose(train, dev, cfg.bayes_error, cfg.bias_threshold, cfg.variance_threshold)
        variance = {} if math.isnan(d.variance) else {"variance": d.variance}
        return {"avoidable_bias": d.avoidable_bias, **variance}, d.label

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        self.flush()
        if tags:
            self._client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | os.PathLike, artifact_path: Optional[str] = None) -> None:
        self.flush()
        self._client.log_artifact(self.run_id, os.fspath(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        self.flush()
        self._client.log_text(self.run_id, text, name)

    def end(self, status: str = "FINISHED") -> None:
        self.flush()
        self._client.set_terminated(self.run_id, status)


def _get_run(client, uri: str, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as err:
        raise TrackingError(f"cannot resume MLflow run {run_id!r} from {uri}: {err}") from err


def _last_steps(client, run) -> dict[str, int]:
    """Per metric key, the largest step already logged in `run`."""
    return {
        key: max(m.step for m in client.get_metric_history(run.info.run_id, key))
        for key in run.data.metrics
    }


class NullTracker:
    """tracking.enabled=false: the Tracker interface, doing nothing."""

    run_id: Optional[str] = None

    def _nothing(self, *args: Any, **kwargs: Any) -> None:
        """Accept any Tracker call and drop it."""

    log_epoch = set_tags = log_artifact = log_text = end = flush = _nothing


def open_tracker(cfg: TrackingConfig, params: Mapping[str, Any], tags: Mapping[str, str] = {},
                 run_id: Optional[str] = None, nested_in: Optional[str] = None):
    """A started `Tracker`, or a `NullTracker` when cfg.enabled is false."""
    if not cfg.enabled:
        return NullTracker()
    return Tracker.start(cfg, params, tags, run_id=run_id, nested_in=nested_in)


def start_parent(cfg: TrackingConfig, name: str, params: Mapping[str, Any],
                 tags: Mapping[str, str] = {}) -> str:
    """Create a sweep's parent run (tag ddl.sweep=true); children join it via nested_in."""
    uri = cfg.uri or default_uri()
    experiment_id = ensure_store(uri, cfg.experiment)
    client = _client(uri)
    run = client.create_run(experiment_id, tags={**tags, "ddl.sweep": "true"}, run_name=name)
    Tracker(client, run.info.run_id, cfg, {})._log_params(params, already={})
    return run.info.run_id


def end_run(cfg: TrackingConfig, run_id: str, status: str = "FINISHED") -> None:
    _client(cfg.uri or default_uri()).set_terminated(run_id, status)


def fetch_runs(uri: str, experiment: str, parent: Optional[str] = None) -> list[dict[str, Any]]:
    """Runs of `experiment` (or of one parent) as plain dicts: run_id, name, status, start_time,
    params, metrics (latest values), tags. Never creates a store or an experiment."""
    if uri.startswith("sqlite:") and not _sqlite_path(uri).is_file():
        raise TrackingError(f"no MLflow store at {_sqlite_path(uri)} (from {uri})")
    client = _client(uri)
    try:
        found = client.get_experiment_by_name(experiment)
    except Exception as err:  # unreachable server, unreadable database
        raise _unreachable(uri, err) from err
    if found is None:
        raise TrackingError(f"no experiment named {experiment!r} in {uri}")
    where = f"tags.mlflow.parentRunId = '{parent}'" if parent else ""
    return [_as_dict(run) for run in _search_all(client, found.experiment_id, where)]


def _search_all(client, experiment_id: str, where: str) -> Iterator[Any]:
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
