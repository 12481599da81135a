"""Tracking beside training (ddl/tracking/worker.py, link.py), the one route of every run: a
sweep's point is recorded as the same single run is; the store is checked without MLflow
(store.precheck); a run whose process is killed, or whose worker dies, still ends right."""
from __future__ import annotations

import importlib.util
import os
import sqlite3
import signal
import subprocess
import sys
import time

import psutil
import pytest
from mlflow import MlflowClient

from helpers import clean_env, ddl_train, newest_run_status, run_cmd
from ddl.tracking import TrackingError, ensure_store, precheck, schema

MOONS = ["data=moons", "data.m=200", "train.epochs=12", "train.progress=false"]


def _runs(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ddl")
    return client, client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def _record(client, run):
    metrics = {k: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, k),
                                                      key=lambda m: m.step)]
               for k in run.data.metrics if not k.startswith("perf/")}   # timings differ
    tags = {k: v for k, v in run.data.tags.items()
            if not k.startswith("mlflow.") and k not in ("ddl.job", "ddl.heartbeat")}
    files = sorted(f.path for f in client.list_artifacts(run.info.run_id))
    params = {k: v for k, v in run.data.params.items() if k != "out_dir"}
    return run.info.status, metrics, tags, files, params


def test_a_sweep_points_run_equals_the_single_run(tmp_path):
    """One tracking route: the same config as a single run and as a sweep's point is recorded
    alike (metrics, tags, artifacts, params), but for what names the point and nests it."""
    code, _, err = ddl_train(0, *MOONS, cwd=tmp_path)
    assert code == 0, err
    code, _, err = ddl_train(0, "-m", *MOONS, "optimizer.lr=0.01", cwd=tmp_path)
    assert code == 0, err
    client, runs = _runs(tmp_path)
    single, point = (next(r for r in runs if ("mlflow.parentRunId" in r.data.tags) is nested)
                     for nested in (False, True))
    parent = client.get_run(point.data.tags["mlflow.parentRunId"])
    assert parent.data.tags["ddl.sweep"] == "true" and parent.info.status == "FINISHED"

    def record(run):
        status, metrics, tags, files, params = _record(client, run)
        tags = {k: v for k, v in tags.items() if k != "ddl.overrides"}           # the sweep's own
        return status, metrics, tags, files, {k: v for k, v in params.items() if k != "tracking.run_name"}
    assert record(point) == record(single)
    assert record(single)[0] == "FINISHED"


def test_precheck_reads_the_store_without_mlflow(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    schema.known_revisions.cache_clear()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert precheck(uri, "ddl")                        # a new store: the worker creates it
    assert not precheck("http://127.0.0.1:9", "ddl")   # a server: only MLflow can tell
    ensure_store(uri, "ddl")                           # computes the head: cached from now on
    assert schema.cached_head() and precheck(uri, "ddl")
    con = sqlite3.connect(tmp_path / "mlflow.db")
    con.execute("UPDATE experiments SET lifecycle_stage = 'deleted' WHERE name = 'ddl'")
    con.commit()
    with pytest.raises(TrackingError, match="'ddl' is deleted"):
        precheck(uri, "ddl")
    con.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    con.commit()
    con.close()
    assert not precheck(uri, "ddl")                    # another schema: MLflow's own check words it
    for f in (tmp_path / "cache" / "ddl").iterdir():
        f.unlink()
    assert schema.cached_head() is None and not precheck(uri, "ddl")


def _start(tmp_path, *overrides):
    return subprocess.Popen([sys.executable, "-m", "ddl", *MOONS[:2], "train.progress=false", *overrides],
                            cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _worker_of(proc, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(proc.pid).children():
            if "ddl.tracking.worker" in " ".join(child.cmdline()):
                return child
        time.sleep(0.1)
    pytest.fail("no tracking worker was started")


def _wait_status(tmp_path, wanted, timeout=60):
    """The newest run once it has status `wanted`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if newest_run_status(tmp_path / "mlflow.db") == wanted:
            return _runs(tmp_path)[1][-1]
        time.sleep(0.3)
    pytest.fail(f"the run did not become {wanted} within {timeout} s")


def test_a_killed_single_process_run_is_ended_by_its_worker(tmp_path):
    proc = _start(tmp_path, "train.epochs=100000")
    worker = _worker_of(proc)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("runs/*/*/train.log")) or "epoch" not in \
            next(tmp_path.glob("runs/*/*/train.log")).read_text():
        assert time.monotonic() < deadline and proc.poll() is None, "training did not start"
        time.sleep(0.2)
    time.sleep(3)                                          # the run is open in the store by now
    # the worker loaded MLflow without pandas (installed here, by the test extra's mlflow)
    assert importlib.util.find_spec("pandas") is not None
    assert not [m.path for m in worker.memory_maps() if f"{os.sep}pandas{os.sep}" in m.path]
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    t0 = time.monotonic()
    run = _wait_status(tmp_path, "FAILED")
    print(f"marked FAILED {time.monotonic() - t0:.1f} s after the kill")
    assert run.data.tags["ddl.stopped"] == "killed" and "SIGKILL" in run.data.tags["ddl.error"]
    client, _ = _runs(tmp_path)
    assert client.get_metric_history(run.info.run_id, "cost/train")    # what it had sent arrived


def test_a_dead_worker_leaves_training_untracked_and_its_run_ended(tmp_path):
    proc = _start(tmp_path, "train.epochs=20000")    # ~10 s: the kill comes mid-run
    worker = _worker_of(proc)
    _wait_status(tmp_path, "RUNNING")
    worker.kill()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "tracking worker is gone" in err and "untracked" in err, err
    (run_dir,) = tmp_path.glob("runs/*/*")
    assert (run_dir / "final.npz").is_file() and (run_dir / "summary.json").is_file()
    run = _wait_status(tmp_path, "FAILED", timeout=5)
    assert "tracking worker" in run.data.tags["ddl.error"]


def test_a_store_that_cannot_be_made_is_refused_before_training(tmp_path):
    code, out, err = ddl_train(0, *MOONS, "tracking.uri=sqlite:////proc/ddl-no-such/m.db",
                               f"out_dir={tmp_path / 'run'}", cwd=tmp_path)
    assert code == 1 and "cannot make the MLflow store's folder /proc/ddl-no-such" in err, err
    assert not (tmp_path / "run" / "final.npz").exists() and "epoch 1/" not in out + err


def _kill_everything(proc):
    """The job and its tracking worker at once, by SIGKILL: what a cgroup's end does."""
    worker = _worker_of(proc)
    os.kill(proc.pid, signal.SIGKILL)
    worker.kill()
    proc.communicate()


def test_a_run_whose_job_vanished_with_its_worker_is_ended_at_the_next_touch(tmp_path):
    beat = {"DDL_HEARTBEAT_S": "1"}                       # stale after 5 s instead of 5 minutes

    def vanish(name: str, *extra):
        proc = subprocess.Popen([sys.executable, "-m", "ddl", *MOONS[:2], "train.progress=false",
                                 "train.epochs=100000", f"out_dir={tmp_path / name}", *extra], cwd=tmp_path,
                                env=clean_env(**beat), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        _wait_status(tmp_path, "RUNNING")
        time.sleep(2)                                     # a beat or two, a checkpoint
        _kill_everything(proc)
        time.sleep(6)                                     # older than five beats now
        assert newest_run_status(tmp_path / "mlflow.db") == "RUNNING"     # nobody left to end it

    vanish("resumed", "checkpoint.every=1")
    # its resume is a new job of the same run: ended by nobody, though its last beat is stale
    code, out, err = ddl_train(0, *MOONS, f"out_dir={tmp_path / 'resumed'}", "checkpoint.resume=auto",
                               cwd=tmp_path, env=clean_env(**beat))
    client, runs = _runs(tmp_path)
    assert code == 0 and "resuming from" in err and [r.info.status for r in runs] == ["FINISHED"], err
    vanish("gone")
    code, out, err = ddl_train(0, *MOONS, cwd=tmp_path, env=clean_env(**beat))   # the next run ends it
    assert code == 0, err
    vanish("lost")
    code, out, err = run_cmd([sys.executable, "-c", "from ddl.runner.report import main; main()",
                              "--uri", f"sqlite:///{tmp_path / 'mlflow.db'}"], env=clean_env(**beat))
    assert code == 0 and "RUNNING" not in out, out + err                # so does ddl-report
    client, runs = _runs(tmp_path)
    for name in ("gone", "lost"):
        run = next(r for r in runs if r.data.params.get("out_dir") == str(tmp_path / name))
        assert run.info.status == "FAILED" and run.data.tags["ddl.stopped"] == "lost", name
        assert "stopped without a word" in run.data.tags["ddl.error"]
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED", "FINISHED", "FINISHED"]
