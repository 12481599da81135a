"""A store written by another MLflow release is refused before any work, in one paragraph that
names both releases and the fix; the store is left untouched."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ddl.config import TrackingConfig
from ddl.tracking import TrackingError, ensure_store, fetch_runs, schema
from helpers import ddl_train

FUTURE = "ffffffffffff"   # a revision no MLflow migration has


@pytest.fixture(scope="module")
def made_store(tmp_path_factory) -> Path:
    """A real store made by the installed MLflow through ddl (with one experiment)."""
    db = tmp_path_factory.mktemp("store") / "mlflow.db"
    ensure_store(f"sqlite:///{db}", "ddl")
    return db


def copy_at(src: Path, dst: Path, revision: str) -> Path:
    dst.write_bytes(src.read_bytes())
    with sqlite3.connect(dst) as con:
        con.execute("UPDATE alembic_version SET version_num = ?", (revision,))
    return dst


def test_ddl_records_the_release_that_created_a_store(made_store):
    lock = made_store.with_name(made_store.name + ".lock")
    assert schema.creator_version(lock) == schema.installed_version() != "unknown"
    head, known = schema.known_revisions()
    assert schema.store_revision(made_store) == head and head in known


def test_a_newer_store_is_refused_before_training(made_store, tmp_path):
    db = copy_at(made_store, tmp_path / "future.db", FUTURE)
    before = db.read_bytes()
    code, out, err = ddl_train(0, "train.epochs=50", f"tracking.uri=sqlite:///{db}",
                               f"out_dir={tmp_path / 'run'}", cwd=tmp_path)
    assert code != 0
    paragraph = err.strip().splitlines()[0]
    assert "newer MLflow" in paragraph and FUTURE in paragraph
    assert schema.installed_version() in paragraph and "tracking.uri=" in paragraph
    assert "Traceback" not in err and "alembic" not in err.lower()
    assert not (tmp_path / "run" / "final.npz").exists()
    assert "epoch" not in out + err                 # refused before the first epoch
    assert db.read_bytes() == before


def test_the_creating_release_is_named_when_ddl_recorded_it(made_store, tmp_path):
    db = copy_at(made_store, tmp_path / "m.db", FUTURE)
    db.with_name(db.name + ".lock").write_text(f"{schema.CREATED}9.9.9\n")
    with pytest.raises(TrackingError, match=r"written by MLflow 9\.9\.9 .*mlflow==9\.9\.9"):
        fetch_runs(TrackingConfig(uri=f"sqlite:///{db}"))


def test_an_older_store_gets_the_upgrade_command(made_store, tmp_path):
    head, known = schema.known_revisions()
    older = sorted(known - {head})[0]
    db = copy_at(made_store, tmp_path / "old.db", older)
    with pytest.raises(TrackingError, match=r"older MLflow .*mlflow db upgrade sqlite:///"):
        ensure_store(f"sqlite:///{db}", "ddl")


def test_a_file_that_is_not_a_database_is_named(tmp_path):
    db = tmp_path / "junk.db"
    db.write_text("not a database, just text that is long enough to be read\n" * 20)
    with pytest.raises(TrackingError, match=r"junk\.db is not a readable SQLite database"):
        ensure_store(f"sqlite:///{db}", "ddl")


def test_a_new_or_empty_file_is_a_fresh_store(tmp_path):
    (tmp_path / "empty.db").touch()
    assert schema.store_revision(tmp_path / "empty.db") is None
    assert schema.store_revision(tmp_path / "absent.db") is None
