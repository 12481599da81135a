"""A sweep resumed in its own directory (`hydra.sweep.dir` of the sweep that stopped): the points
that finished are taken as they ended, the one that was stopped resumes from its checkpoint in its
own MLflow run, the rest run; one parent, one FINISHED child per point. A directory holding
another sweep's points is refused, point by point."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

from mlflow import MlflowClient

from helpers import clean_env

GRID = ["-m", "optimizer.lr=0.01,0.02,0.03,0.04,0.05,0.06", "data=moons", "train.epochs=300",
        "checkpoint.every=20", "train.progress=false"]


def sweep(tmp_path, *extra):
    cmd = [sys.executable, "-m", "ddl", *GRID, f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
           f"hydra.sweep.dir={tmp_path / 'sweep'}", *extra]
    return subprocess.Popen(cmd, cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_a_grid_sweep_stopped_after_three_points_resumes_with_the_rest_only(tmp_path):
    first = sweep(tmp_path)
    fourth = tmp_path / "sweep" / "3" / "checkpoints"
    deadline = time.monotonic() + 120
    while not (fourth.is_dir() and len(list(fourth.glob("ckpt-*"))) >= 2):
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()[0]
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGINT)                # Ctrl-C in a terminal, during the 4th point
    said = first.communicate(timeout=60)[0]
    assert first.returncode == 130, said
    assert f"hydra.sweep.dir={tmp_path / 'sweep'}" in said.split("ddl: to train the points that did not finish")[1], said
    assert "checkpoint.resume=auto to continue" not in said, said      # the sweep's command, not a point's
    deadline = time.monotonic() + 30
    while newest_parent_status(tmp_path) == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert newest_parent_status(tmp_path) == "KILLED"                # not RUNNING, not FINISHED
    finished = {i: (tmp_path / "sweep" / str(i) / "summary.json").stat().st_mtime_ns for i in range(3)}
    assert not (tmp_path / "sweep" / "3" / "summary.json").exists()

    again = sweep(tmp_path)
    said = again.communicate(timeout=300)[0]
    assert again.returncode == 0, said
    assert said.count("finished in an earlier invocation") == 3, said
    assert f"resuming from {fourth}" in said, said
    assert {i: (tmp_path / "sweep" / str(i) / "summary.json").stat().st_mtime_ns for i in range(3)} == finished
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ddl").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("ddl.sweep") == "true"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.params["optimizer.lr"] for r in children) == ["0.01", "0.02", "0.03", "0.04", "0.05", "0.06"]
    assert all(r.info.status == "FINISHED" for r in children) and parent.info.status == "FINISHED"
    assert parent.data.metrics["sweep/points_finished"] == 6


def test_a_sweep_directory_of_another_grid_is_refused_point_by_point(tmp_path):
    first = sweep(tmp_path, "train.epochs=5")
    assert first.wait(timeout=120) == 0, first.communicate()[0]
    again = sweep(tmp_path, "train.epochs=6")
    said = again.communicate(timeout=120)[0]
    assert again.returncode == 1 and said.count("holds a point of another sweep (train.epochs: 5 -> 6)") == 6, said
    assert "Traceback" not in said


def newest_parent_status(tmp_path) -> str:
    with sqlite3.connect(tmp_path / "mlflow.db") as c:
        (status,) = c.execute("select status from runs where name like 'sweep %'").fetchone()
    return status

