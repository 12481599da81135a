"""The MLflow store: where it is (`./mlflow.db` by default), checking it, and creating it once safely.
Part of the tracking edge: only the tracking package imports mlflow.

A store is one value, `Store(uri)`, from the config to the client: it knows its SQLite file and
lock, the URI as ddl shows it (a password redacted), and makes the MLflow client.
"""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from ddl.config import redact
from ddl.tracking import schema
from ddl.tracking.dashboard import experiment_tags, stale_tags

MAX_PARAMS_PER_BATCH = 100  # MLflow's limits for one log_batch call and one param value
MAX_PARAM_VALUE = 6000
# Fail fast on an unreachable server instead of MLflow's default 7 retries x 120 s timeout.
# MLflow's own "View run <url>" line would print the URI with its password; ddl prints a link.
HTTP_DEFAULTS = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
                 "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable server, missing store or experiment)."""


@dataclass(frozen=True)
class Store:
    """A tracking store, by its URI: an SQLite file (sqlite:///path/to.db) or a server."""

    uri: str

    @classmethod
    def of(cls, uri: "str | Store") -> "Store":
        return uri if isinstance(uri, Store) else cls(uri)

    @property
    def sqlite(self) -> bool:
        return self.uri.startswith("sqlite:")

    @property
    def shown(self) -> str:
        """The URI as ddl writes and logs it (a password hidden)."""
        return redact(self.uri)

    @property
    def path(self) -> Path:
        """The SQLite file (a ValueError for an SQLite URI that names none)."""
        path = self.uri[len("sqlite:///"):].split("?")[0] if self.uri.startswith("sqlite:///") else ""
        if not path or path == ":memory:":
            raise ValueError(f"tracking.uri must name an SQLite file (sqlite:///path/to.db), got {self.uri!r}")
        return Path(path).resolve()

    @property
    def lock(self) -> Path:
        """The lock file beside the SQLite file (its first line: which MLflow created it)."""
        return self.path.with_name(self.path.name + ".lock")

    def place_problem(self) -> Optional[str]:
        """What makes an SQLite store's place unusable, found at once (MLflow would retry for
        minutes): a directory where the file should be, or a file where a folder should be."""
        if not self.sqlite:
            return None
        try:
            db = self.path
        except ValueError as err:
            return str(err)
        if db.is_dir():
            return f"tracking.uri={self.uri} names a directory, not an SQLite file (e.g. sqlite:///{db / 'mlflow.db'})"
        folder = next((p for p in db.parents if p.exists()), None)
        if folder is not None and not folder.is_dir():
            return f"tracking.uri={self.uri}: {folder} is a file, not a folder"
        return None

    def client(self):
        """The MLflow client (an SQLite store of another MLflow release is refused first)."""
        from mlflow import MlflowClient  # noqa: PLC0415

        if not self.sqlite:
            for name, value in HTTP_DEFAULTS.items():
                os.environ.setdefault(name, value)
        elif self not in _CHECKED:
            self.check_schema()
        return MlflowClient(tracking_uri=self.uri)

    def check_schema(self) -> None:
        """Before MLflow opens the file: a store of another MLflow release is refused in one
        paragraph (MLflow itself would fail mid-run with alembic's message)."""
        try:
            schema.check_schema(self.uri, self.path, self.lock)
        except schema.SchemaError as err:
            raise TrackingError(str(err)) from None
        if self.path.is_file():
            _CHECKED.add(self)

    def unreachable(self, err: BaseException) -> TrackingError:
        return TrackingError(f"Cannot use the MLflow tracking store at {self.uri}: {type(err).__name__}: "
                             f"{err}. Start the server (e.g. `mlflow server --host 127.0.0.1 --port 5000`), "
                             "fix the URI (tracking.uri, ddl-report --uri), or train with tracking.enabled=false.")


_CHECKED: set[Store] = set()  # SQLite stores whose schema this process has found usable


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


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the handle is closed, error or not
        yield


def _create_sqlite_once(store: Store) -> None:
    """Create tables and run migrations in the first process only; "created" in the lock file
    lets later processes skip the lock (opening an existing store is safe in parallel)."""
    db, lock = store.path, store.lock

    def created() -> bool:
        return db.is_file() and lock.is_file() and lock.read_text().startswith("created")

    if created():
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(lock):
        if not created():
            store.client().search_experiments(max_results=1)  # the first query builds the schema
            lock.write_text(f"{schema.CREATED}{schema.installed_version()}\n")


def existing_client(uri: "str | Store"):
    """The client of a store that exists already, once a creation another process has begun is
    done (None for an SQLite file not made yet: opening it unlocked would race that creation)."""
    store = Store.of(uri)
    if store.sqlite:
        if not store.path.is_file():
            return None
        _create_sqlite_once(store)
    return store.client()


def ensure_store(uri: "str | Store", experiment: str) -> str:
    """Get or create `experiment` (and, for SQLite, the database) once; returns its id. SQLite
    creation runs under an flock on "<db>.lock": sweeps and SLURM arrays start all at once."""
    store = Store.of(uri)
    if store.sqlite:
        store.path                # an SQLite URI that names no file: a ValueError
        _check_place(store)
        _create_sqlite_once(store)
        return _get_or_create(store.client(), experiment, (store.path.parent / "mlartifacts").as_uri())
    try:
        return _get_or_create(store.client(), experiment, None)
    except TrackingError:
        raise
    except Exception as err:  # MLflow wraps connection errors in several exception types
        raise store.unreachable(err) from err


def precheck(uri: "str | Store", experiment: str) -> bool:
    """Whether the store is known usable without importing MLflow (a run may then start training
    before its tracking worker has opened the run); False where only MLflow can tell. Raises
    TrackingError for what is wrong at once. An SQLite store is read with sqlite3: a schema at the
    installed MLflow's head (cached by an earlier run) and the experiment not deleted."""
    store = Store.of(uri)
    if not store.sqlite:
        return False              # a server: its answer to the worker is awaited before training
    db = store.path
    _check_place(store)
    _check_writable(store)
    try:
        revision = schema.store_revision(db)
    except schema.SchemaError:
        return False              # MLflow's own check words it
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


def _check_writable(store: Store) -> None:
    """The SQLite file can be written, or made (its folder is made now: the worker would make it
    anyway), or a TrackingError before any training (MLflow would fail in the worker, after it)."""
    db = store.path
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TrackingError(f"cannot make the MLflow store's folder {db.parent} (tracking.uri="
                            f"{store.shown}): {err.strerror or err}. Point tracking.uri at a folder "
                            "you can write, or train with tracking=off.") from None
    if not os.access(db if db.exists() else db.parent, os.W_OK):
        raise TrackingError(f"cannot write the MLflow store {db} (tracking.uri={store.shown}): "
                            "no write permission, or a read-only filesystem. Point tracking.uri "
                            "at a folder you can write, or train with tracking=off.")


def _check_place(store: Store) -> None:
    problem = store.place_problem()
    if problem:
        raise TrackingError(problem)


def _get_or_create(client, name: str, artifact_location: Optional[str]) -> str:
    """The experiment's id, creating it with the dashboard's tags; an experiment made by an older
    ddl (or by hand) gets the tags it lacks, and a description the user wrote is kept."""
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

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
