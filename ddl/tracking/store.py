"""The MLflow store: where it is (`./mlflow.db` by default) and creating it once safely.
Part of the tracking edge: only the tracking package imports mlflow."""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from ddl.tracking import schema
from ddl.tracking.dashboard import experiment_tags, stale_tags

MAX_PARAMS_PER_BATCH = 100  # MLflow's limits for one log_batch call and one param value
MAX_PARAM_VALUE = 6000
# Fail fast on an unreachable server instead of MLflow's default 7 retries x 120 s timeout.
# MLflow's own "View run <url>" line would print the URI with its password; ddl prints a link.
_HTTP_DEFAULTS = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
                  "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable server, missing store or experiment)."""


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
    elif uri.startswith("sqlite:") and uri not in _CHECKED:
        _check_sqlite_schema(uri)
    return MlflowClient(tracking_uri=uri)


_CHECKED: set[str] = set()  # SQLite URIs whose schema this process has found usable


def _check_sqlite_schema(uri: str) -> None:
    """Before MLflow opens the file: a store of another MLflow release is refused in one paragraph
    (MLflow itself would fail mid-run with alembic's message, or suggest an impossible upgrade)."""
    db = _sqlite_path(uri)
    try:
        schema.check_schema(uri, db, _lock_path(db))
    except schema.SchemaError as err:
        raise TrackingError(str(err)) from None
    if db.is_file():
        _CHECKED.add(uri)


def _lock_path(db: Path) -> Path:
    return db.with_name(db.name + ".lock")


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
            lock.write_text(f"{schema.CREATED}{schema.installed_version()}\n")


def _unreachable(uri: str, err: BaseException) -> TrackingError:
    return TrackingError(f"Cannot use the MLflow tracking store at {uri}: {type(err).__name__}: {err}. "
                         "Start the server (e.g. `mlflow server --host 127.0.0.1 --port 5000`), fix "
                         "the URI (tracking.uri, ddl-report --uri), or train with tracking.enabled=false.")


def ensure_store(uri: str, experiment: str) -> str:
    """Get or create `experiment` (and, for SQLite, the database) once; returns its id. SQLite
    creation runs under an flock on "<db>.lock": sweeps and SLURM arrays start all at once."""
    if uri.startswith("sqlite:"):
        db = _sqlite_path(uri)
        _check_sqlite_place(uri, db)
        _create_sqlite_once(uri, db, _lock_path(db))
        return _get_or_create(_client(uri), experiment, (db.parent / "mlartifacts").as_uri())
    try:
        return _get_or_create(_client(uri), experiment, None)
    except TrackingError:
        raise
    except Exception as err:  # MLflow wraps connection errors in several exception types
        raise _unreachable(uri, err) from err


def precheck(uri: str, experiment: str) -> bool:
    """Whether the store is known usable without importing MLflow (a run may then start training
    before its tracking worker has opened the run); False where only MLflow can tell. Raises
    TrackingError for what is wrong at once. An SQLite store is read with sqlite3: a schema at the
    installed MLflow's head (cached by an earlier run) and the experiment not deleted."""
    if not uri.startswith("sqlite:"):
        return False              # a server: its answer to the worker is awaited before training
    db = _sqlite_path(uri)
    _check_sqlite_place(uri, db)
    try:
        revision = schema.store_revision(db)
    except schema.SchemaError:
        return False              # the in-process check words it
    if revision is None:
        return not db.exists()    # a new store (the worker creates it); an empty file: MLflow
    if revision != schema.cached_head():
        return False
    import sqlite3  # noqa: PLC0415

    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute("SELECT lifecycle_stage FROM experiments WHERE name = ?",
                              (experiment,)).fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return False
    if row is not None and row[0] == "deleted":
        raise deleted(experiment)
    return True


def sqlite_place_problem(uri: str) -> Optional[str]:
    """What makes an SQLite tracking.uri unusable, found at once (MLflow would retry for minutes):
    a directory where the file should be, or a file where a folder should be. None: usable."""
    if not uri.startswith("sqlite:"):
        return None
    try:
        db = _sqlite_path(uri)
    except ValueError as err:
        return str(err)
    if db.is_dir():
        return (f"tracking.uri={uri} names a directory, not an SQLite file (e.g. "
                f"sqlite:///{db / 'mlflow.db'})")
    folder = next((p for p in db.parents if p.exists()), None)
    if folder is not None and not folder.is_dir():
        return f"tracking.uri={uri}: {folder} is a file, not a folder"
    return None


def _check_sqlite_place(uri: str, db: Path) -> None:
    problem = sqlite_place_problem(uri)
    if problem:
        raise TrackingError(problem)


def _get_or_create(client, name: str, artifact_location: Optional[str]) -> str:
    """The experiment's id, creating it with the dashboard's tags; an experiment made by an older
    ddl (or by hand) gets the tags it lacks, and a description the user wrote is kept."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location,
                                            tags=experiment_tags(_now_ms()))
        except MlflowException as err:  # another process created it between get and create
            found = client.get_experiment_by_name(name)
            if found is None:
                raise err
    if found.lifecycle_stage == "deleted":
        raise deleted(name)
    for key, value in stale_tags(found.tags, _now_ms()).items():
        client.set_experiment_tag(found.experiment_id, key, value)
    return found.experiment_id


def deleted(name: str) -> TrackingError:
    return TrackingError(f"MLflow experiment {name!r} is deleted; restore it or pick another name")


def _now_ms() -> int:
    return int(time.time() * 1000)


