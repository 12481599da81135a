"""Can the installed MLflow open this SQLite store? A store carries the schema revision of the MLflow
release that last wrote it; an older release cannot read a newer schema, and a newer one refuses an
older schema until it is upgraded. Checked before any work, so the user reads one paragraph naming
both releases and the fix instead of alembic's message in the middle of a run."""
from __future__ import annotations

import os
import sqlite3
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Optional

from ddl.atomic import write_text_atomic

CREATED = "created by mlflow "   # the lock file's first line once ddl has created a store


class SchemaError(RuntimeError):
    """The store's schema does not match the installed MLflow (store.py raises it as a TrackingError)."""


def installed_version() -> str:
    """The installed MLflow release (mlflow-skinny, or the full mlflow)."""
    for dist in ("mlflow-skinny", "mlflow"):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def creator_version(lock: Path) -> Optional[str]:
    """The MLflow release that created the store, as ddl recorded it in the lock file."""
    try:
        first = lock.read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    if not first.startswith(CREATED):
        return None                    # a store created before ddl recorded the release
    return first[len(CREATED):].strip() or None


def store_revision(db: Path) -> Optional[str]:
    """The alembic revision an SQLite store is at; None for a missing, empty or new file."""
    if not db.is_file() or db.stat().st_size == 0:
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            row = con.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            con.close()
    except sqlite3.DatabaseError as err:
        if "no such table" in str(err):
            return None
        raise SchemaError(f"{db} is not a readable SQLite database ({err}). Point tracking.uri at "
                          f"another file (e.g. tracking.uri=sqlite:///{db.parent}/mlflow-new.db), or "
                          f"train with tracking=off.") from None
    return row[0] if row else None


@lru_cache(maxsize=1)
def known_revisions() -> tuple[str, frozenset]:
    """(head, every revision) of the installed MLflow's database migrations; the head is cached
    on disk for `cached_head` (a later process checks a store without importing MLflow)."""
    import mlflow  # noqa: PLC0415
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    script = ScriptDirectory(str(Path(mlflow.__file__).parent / "store" / "db_migrations"))
    head = script.get_current_head()
    try:
        if cached_head() != head:
            write_text_atomic(_head_cache(), head + "\n")
    except OSError:                     # a read-only home: no cache, nothing else changes
        pass
    return head, frozenset(r.revision for r in script.walk_revisions())


def _head_cache() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ddl" / f"mlflow-{installed_version()}-schema-head"


def cached_head() -> Optional[str]:
    """The installed MLflow's schema head as a run of this release found it, or None."""
    try:
        return _head_cache().read_text().strip() or None
    except OSError:
        return None


def check_schema(uri: str, db: Path, lock: Path) -> None:
    """Raise SchemaError, in one paragraph, unless the installed MLflow can open `db` as it is."""
    revision = store_revision(db)
    if revision is None or revision == cached_head():      # the head this MLflow release found
        return
    head, known = known_revisions()
    if revision == head:
        return
    mine, creator = installed_version(), creator_version(lock)
    if revision not in known:
        by = f"MLflow {creator}" if creator and creator != mine else "a newer MLflow"
        raise SchemaError(
            f"the MLflow store {db} was written by {by} (schema revision {revision}), which the "
            f"MLflow installed here ({mine}) does not know: an older MLflow cannot open a newer "
            f"store, and `mlflow db upgrade` only moves a store forward. Nothing in it was "
            f"changed. Either open it with the release that wrote it (in another virtual "
            f"environment: pip install 'mlflow=={creator or '<that release>'}'), or point "
            f"tracking.uri at a new store, e.g. tracking.uri=sqlite:///{db.parent}/"
            f"mlflow-{mine}.db.")
    raise SchemaError(
        f"the MLflow store {db} was written by an older MLflow (schema revision {revision}; "
        f"MLflow {mine}, installed here, expects {head}). Nothing in it was changed. Back the "
        f"file up, then upgrade it with `mlflow db upgrade {uri}` (the "
        f"`mlflow` command comes with pip install 'mlflow=={mine}'), or point tracking.uri at a new store, "
        f"e.g. tracking.uri=sqlite:///{db.parent}/mlflow-{mine}.db.")
