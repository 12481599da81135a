"""A real full disk: the run directory on a 24 MiB tmpfs (a private mount namespace), filled to a
chosen level before the run, so that it runs out at the start, at the first checkpoint, at a later
checkpoint during training, or while the final files are written. Every file left is whole (the
run directory is copied out of the namespace and read), the console has one paragraph and no
traceback, and the MLflow run (its store on another disk) ends FAILED. tests/test_atomic.py has
the ENOSPC stand-in of the same guarantees, at every write."""
from __future__ import annotations

import shlex
import sqlite3
import sys

import pytest

from helpers import clean_env, run_cmd
from test_faults import no_corrupt_file

MiB = 1 << 20
SIZE = 24 * MiB
# [400, 1024, 3] with Adam: final.npz ~1.6 MiB, a checkpoint (parameters, both moments) ~4.9 MiB
RUN = ["data=synthetic", "data.m=2000", "data.n_x=400", "data.classes=3", "model.hidden=[1024]",
       "optimizer=adam", "train.epochs=4", "train.progress=false"]


def on_tmpfs(tmp_path, free: int, *overrides: str):
    """Run ddl-train with out_dir on a tmpfs that has `free` bytes left; (exit code, stderr, the
    run directory copied out, the MLflow runs' statuses)."""
    mnt, copy, db = tmp_path / "mnt", tmp_path / "copy", tmp_path / "mlflow.db"
    mnt.mkdir()
    ddl = shlex.join([sys.executable, "-m", "ddl", *RUN, *overrides, f"tracking.uri=sqlite:///{db}",
                      f"out_dir={mnt / 'run'}"])
    script = (f"mount -t tmpfs -o size={SIZE} tmpfs {mnt} && fallocate -l {SIZE - free} {mnt}/filler && "
              f"{{ {ddl}; code=$?; }}; df -k {mnt} | tail -1 >&2; "
              f"if [ -d {mnt}/run ]; then cp -a {mnt}/run {copy}; fi; exit $code")
    code, out, err = run_cmd(["unshare", "-m", "sh", "-c", script], timeout=300, cwd=tmp_path, env=clean_env())
    statuses = []
    if db.exists():
        with sqlite3.connect(db) as c:
            statuses = [s for (s,) in c.execute("select status from runs")]
    print(f"free {free / MiB:.2f} MiB: exit {code}; {err.strip().splitlines()[-1]}")
    return code, out + err, copy, statuses


def whole(copy) -> None:
    """Every file the run left is whole: nothing half-written, no temporary file."""
    no_corrupt_file(copy)
    assert not [p for p in copy.rglob("*") if ".tmp" in p.name], sorted(copy.rglob("*"))
    log = copy / "train.log"
    assert log.stat().st_size > 0, "an empty train.log"


@pytest.mark.parametrize("free", [0, MiB // 2])
def test_a_disk_full_at_the_start_is_refused_before_anything_is_made(tmp_path, free):
    code, text, copy, statuses = on_tmpfs(tmp_path, free)
    assert code == 1 and text.count("ddl: error:") == 1, text
    assert "a run needs 1 MiB to start" in text and "Traceback" not in text, text
    assert not copy.exists() and statuses == []


@pytest.mark.parametrize("free, fails_at", [
    (3 * MiB, "ckpt-e000001"),           # the first checkpoint does not fit
    (7 * MiB, "ckpt-e000002"),           # the first fits; the disk fills during training
])
def test_a_disk_that_fills_at_a_checkpoint_fails_the_run_and_leaves_every_file_whole(tmp_path, free, fails_at):
    code, text, copy, statuses = on_tmpfs(tmp_path, free, "checkpoint.every=1")
    assert code == 1 and "No space left on device" in text and fails_at in text, text
    assert "Traceback" not in text and "Logging error" not in text, text
    whole(copy)
    assert statuses == ["FAILED"]


def test_a_disk_that_fills_with_the_final_files_fails_the_run_and_leaves_every_file_whole(tmp_path):
    code, text, copy, statuses = on_tmpfs(tmp_path, int(1.2 * MiB), "checkpoint.every=0")
    assert code == 1 and "cannot write" in text and "final.npz: No space left on device" in text, text
    assert "Traceback" not in text and "Logging error" not in text, text
    whole(copy)
    assert not (copy / "final.npz").exists() and statuses == ["FAILED"]


def test_a_log_that_cannot_be_written_costs_the_log_not_the_run(tmp_path, capsys):
    """/dev/full: every write is ENOSPC. One warning, no "--- Logging error ---", no error at close."""
    import logging

    from ddl.runner.logs import attach_file_log

    (tmp_path / "train.log").symlink_to("/dev/full")
    handler = attach_file_log(tmp_path)
    log = logging.getLogger("ddl")
    try:
        for i in range(3):
            log.warning("line %d", i)
    finally:
        log.removeHandler(handler)
        handler.close()
    err = capsys.readouterr().err
    assert err.count("train.log cannot be written (No space left on device)") == 1, err
    assert "Logging error" not in err
