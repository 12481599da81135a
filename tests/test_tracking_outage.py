"""The tracking server is a side service: a real `mlflow server` killed while a real 3-rank job
trains. Training finishes and saves its model; what could not be sent is said once, kept in the
run directory and reported at the end with the replay command; replayed into the restarted
server, the run is complete (every epoch, FINISHED)."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from mlflow import MlflowClient

from helpers import clean_env, mpiexec
from mlflow_server import run_mlflow_server

pytestmark = pytest.mark.mpi
EPOCHS = 60
# Rank 0 pauses 10 s in epoch 3 (96 steps an epoch), before anything but the run's creation and
# params reached the store: the test stops the server meanwhile, so the outage falls mid-run
# however fast the machine trains (60 epochs take 2-12 s here).
PAUSE = "stall=10@rank=0,step=300"
CFG = ["data=synthetic", "data.m=6000", "data.n_x=20", "data.classes=3", "model.hidden=[32,16]",
       f"train.epochs={EPOCHS}", "train.batch_size=50", "train.progress=false", "tracking=server",
       "tracking.experiment=outage"]


def test_a_server_that_dies_mid_run_loses_nothing(tmp_path):
    root = tmp_path / "server"
    root.mkdir()
    out = tmp_path / "run"
    with run_mlflow_server(root) as url:
        port = int(url.rsplit(":", 1)[1])
        proc = subprocess.Popen([mpiexec(), "-n", "3", sys.executable, "-m", "ddl", *CFG,
                                 f"tracking.uri={url}", f"out_dir={out}"], cwd=tmp_path,
                                env=clean_env(DDL_FAULT=PAUSE), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        client = MlflowClient(url)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:                  # until the run is in the store
            exp = client.get_experiment_by_name("outage")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            if runs and runs[0].data.params:
                break
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.2)
        run_id = runs[0].info.run_id
    t_down = time.monotonic()                               # the server is gone now
    text = proc.communicate(timeout=300)[0]
    print(f"job ended {time.monotonic() - t_down:.1f} s after the server stopped")
    assert proc.returncode == 0, text
    assert text.count("is unreachable") == 1, text
    assert "did not answer by the end of the run" in text and "python -m ddl.tracking.replay" in text
    summary = json.loads((out / "summary.json").read_text())
    with np.load(out / "final.npz", allow_pickle=False) as z:
        assert "W1" in z.files
    assert (out / "unsent.jsonl").is_file() and summary["epochs_run"] == EPOCHS

    with run_mlflow_server(root, port=port) as url:          # the same store, back
        done = subprocess.run([sys.executable, "-m", "ddl.tracking.replay", str(out)], cwd=tmp_path,
                              env=clean_env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "delivered to run" in done.stdout and "the run's end (FINISHED)" in done.stdout
        assert not (out / "unsent.jsonl").exists()
        client = MlflowClient(url)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.tags["diagnosis"] == summary["diagnosis"]
        steps = sorted(m.step for m in client.get_metric_history(run_id, "error/train"))
        assert steps == list(range(EPOCHS))                   # every epoch, each once
        assert {"summary.json", "final.npz", "train.log"} <= {a.path for a in client.list_artifacts(run_id)}


def test_a_server_down_at_the_start_is_refused_unless_the_user_says_continue(tmp_path):
    from helpers import ddl_train
    from mlflow_server import free_port

    dead = f"http://127.0.0.1:{free_port()}"            # nothing listens there
    quick = [c for c in CFG if not c.startswith("train.epochs")] + ["train.epochs=2",
                                                                   f"tracking.uri={dead}"]
    code, so, se = ddl_train(2, *quick, f"out_dir={tmp_path / 'refused'}", cwd=tmp_path, timeout=120)
    assert code == 1 and dead in se and not (tmp_path / "refused" / "summary.json").exists(), se
    code, so, se = ddl_train(2, *quick, "tracking.on_error=continue", f"out_dir={tmp_path / 'on'}",
                             cwd=tmp_path, timeout=120)
    assert code == 0, so + se
    assert "training goes on untracked (tracking.on_error=continue)" in so + se
    assert json.loads((tmp_path / "on" / "summary.json").read_text())["mlflow_run_id"] is None
