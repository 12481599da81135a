"""Files are whole or absent (ddl/atomic.py): a write that fails half-way (a full disk) leaves the
previous file as it was, no temporary file behind, and an error that names the path."""
from __future__ import annotations

import errno
import json

import numpy as np
import pytest

from ddl.atomic import WriteError, write_atomic, write_text_atomic


def full_disk_after(n: int):
    def write(f):
        f.write(b"x" * n)
        raise OSError(errno.ENOSPC, "No space left on device")
    return write


def test_a_failed_write_keeps_the_old_file_and_names_the_path(tmp_path):
    path = tmp_path / "summary.json"
    write_text_atomic(path, json.dumps({"ok": 1}))
    with pytest.raises(WriteError, match=rf"cannot write {path}: No space left on device") as err:
        write_atomic(path, full_disk_after(4096))
    assert err.value.errno == errno.ENOSPC
    assert json.loads(path.read_text()) == {"ok": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]     # no temp left


def test_a_failed_first_write_leaves_no_file(tmp_path):
    with pytest.raises(WriteError):
        write_atomic(tmp_path / "learning_curves.png", full_disk_after(10))
    assert list(tmp_path.iterdir()) == []


def test_an_unusable_directory_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(WriteError, match=rf"cannot write {blocker / 'x.json'}"):
        write_text_atomic(blocker / "x.json", "{}")


def test_every_writer_of_a_run_goes_through_it(tmp_path, monkeypatch):
    """summary.json, config.yaml, the plots, the sweep table, ddl-report's files, checkpoints:
    each one a failed write away from being absent rather than half-written."""
    from ddl import checkpoint
    from ddl.runner import plots

    calls = []
    real = write_atomic

    def spy(path, write):
        calls.append(path.name if hasattr(path, "name") else str(path))
        return real(path, write)

    monkeypatch.setattr(checkpoint, "write_atomic", spy)
    monkeypatch.setattr(plots, "write_atomic", spy)
    checkpoint.save_npz(tmp_path / "final.npz", {"W1": np.ones((2, 2))}, {})
    plots.schedule_png([0.1, 0.05], tmp_path / "lr_schedule.png")
    assert calls == ["final.npz", "lr_schedule.png"]
    with open(tmp_path / "lr_schedule.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_full_disk_in_the_final_phase_fails_the_run_with_the_path(tmp_path, monkeypatch):
    """summary.json cannot be written: the run ends with an error naming it, its MLflow run is
    FAILED with that error (not RUNNING), and no half-written summary.json is left."""
    import ddl
    from mlflow import MlflowClient

    from ddl.runner import summary

    def full(path, text):
        raise WriteError(errno.ENOSPC, f"cannot write {path}: No space left on device")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(summary, "write_text_atomic", full)
    with pytest.raises(ddl.RunFailed):
        ddl.run("data=moons", "data.m=100", "train.epochs=2", "train.progress=false", quiet=True)
    (run_dir,) = tmp_path.glob("runs/*/*")
    assert not (run_dir / "summary.json").exists()
    assert "summary.json: No space left on device" in (run_dir / "train.log").read_text()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("ddl").experiment_id])
    assert run.info.status == "FAILED" and "No space left" in run.data.tags["ddl.error"]


def test_files_get_the_permissions_an_open_would_give_them(tmp_path):
    import os
    import stat

    old = os.umask(0o027)
    try:
        write_text_atomic(tmp_path / "summary.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "summary.json").stat().st_mode) == 0o640   # not mkstemp's 0600
