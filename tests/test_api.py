"""The notebook API, `ddl.run` / `ddl.sweep`: the same overrides as `ddl-train`, a result object
back, in this process (and under mpiexec for ranks > 1), a real MLflow store."""
from __future__ import annotations

import json
import logging
import signal

import numpy as np
import pytest
from mlflow import MlflowClient

import ddl
from helpers import load_final

QUICK = ("data=moons", "data.m=200", "model.hidden=[6]", "train.epochs=6", "train.batch_size=32",
         "train.progress=false")


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)        # out_dir and the default store are relative, as for the CLI
    return tmp_path


def test_run_returns_the_runs_history_metrics_diagnosis_directory_and_mlflow_id(here):
    r = ddl.run(*QUICK, "train.log_every=1")
    summary = json.loads((r.run_dir / "summary.json").read_text())
    assert r.summary == summary and r.final["dev"] == summary["dev"]
    assert r.diagnosis == summary["diagnosis"] and r.diagnosis_split == "dev"
    assert [h["epoch"] for h in r.history] == list(range(6))
    assert r.history[-1]["dev_error"] == pytest.approx(summary["dev"]["error"], abs=1e-12)
    assert (r.run_dir / "config.yaml").read_text().count("epochs: 6") == 1
    run = MlflowClient(f"sqlite:///{here / 'mlflow.db'}").get_run(r.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.tags["ddl.overrides"] == " ".join(QUICK) + \
        " train.log_every=1"
    assert run.data.tags["mlflow.note.content"] == r.describe()
    png = r.plot()._repr_png_()                 # what a notebook shows inline
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert str(r).startswith(f"{r.run_dir}: done in ")


def test_two_runs_in_the_same_second_get_two_directories(here):
    a = ddl.run(*QUICK, "tracking=off", "out_dir=runs/same", quiet=True)
    b = ddl.run(*QUICK, "tracking=off", "out_dir=runs/same", quiet=True)
    assert a.run_dir != b.run_dir and b.run_dir.name.startswith("same-")
    same = ("train", "dev", "test", "diagnosis", "epochs_run", "network")   # one seed, one model
    assert {k: a.summary[k] for k in same} == {k: b.summary[k] for k in same}


def test_a_bad_override_fails_before_any_work(here):
    with pytest.raises(ValueError, match=r"bad config: .*train\.epochs=abc"):
        ddl.run("train.epochs=abc")
    with pytest.raises(ValueError, match=r"Could not override 'trian.epochs'"):
        ddl.sweep("trian.epochs=1,2")
    assert not any(here.iterdir())              # no directory, no store


def test_a_failing_run_raises_run_failed_naming_its_log_and_gives_back_the_signals(here):
    before = signal.getsignal(signal.SIGTERM)
    logger = logging.getLogger("ddl")
    handlers, propagate = list(logger.handlers), logger.propagate
    with pytest.raises(ddl.RunFailed, match="train.log"):
        ddl.run(*QUICK, "model.activation=nope", "tracking=off", quiet=True)
    assert signal.getsignal(signal.SIGTERM) is before
    assert (logger.handlers, logger.propagate) == (handlers, propagate)   # the caller's logging too
    log = next(here.glob("runs/*/*/train.log")).read_text()
    assert "unknown hidden activation 'nope'" in log


@pytest.mark.mpi
def test_two_ranks_from_python_give_the_one_rank_model(here):
    one = ddl.run(*QUICK, "tracking=off", "train.dtype=float64", "out_dir=one", quiet=True)
    two = ddl.run(*QUICK, "tracking=off", "train.dtype=float64", "out_dir=two", ranks=2, quiet=True)
    assert two.summary["world_size"] == 2 and one.summary["world_size"] == 1
    a, _ = load_final(one.run_dir)
    b, _ = load_final(two.run_dir)
    for key in a:                                  # float64, reduction order only: 1e-12
        np.testing.assert_allclose(b[key], a[key], rtol=1e-12, atol=1e-12, err_msg=key)


@pytest.mark.mpi
def test_sweep_returns_its_points_best_first_the_table_and_the_parent(here, capsys):
    s = ddl.sweep(*QUICK, "optimizer=gd,adam")
    printed = capsys.readouterr().out                # the sweep's console, streamed here
    assert "[1/2] optimizer=gd" in printed and "[2/2] optimizer=adam" in printed
    errors = [p.final["dev"]["error"] for p in s.points]
    assert len(s.points) == 2 and errors == sorted(errors) and s.failed == []
    assert s.best is s.points[0] and s.table.startswith("run ") and "\nbest: " in s.table
    assert str(s) == s.table and s.table in printed
    client = MlflowClient(f"sqlite:///{here / 'mlflow.db'}")
    parent = client.get_run(s.parent_run_id)
    assert parent.data.tags["ddl.sweep.best_run_id"] == s.best.mlflow_run_id
    assert parent.info.status == "FINISHED"
    assert ddl.sweep is ddl.api.sweep and ddl.run is ddl.api.run      # plain functions


def test_a_sweep_with_a_failing_point_returns_it_as_failed(here):
    s = ddl.sweep(*QUICK, "tracking=off", "model.activation=tanh,nope", quiet=True)
    assert [p.run_dir.name for p in s.points] == ["0"] and [d.name for d in s.failed] == ["1"]


def test_the_package_exposes_run_sweep_and_predict_on_first_use():
    import subprocess
    import sys

    code = ("import sys, ddl\n"
            "light = not any(m.split('.')[0] in ('hydra', 'mlflow', 'numpy') for m in sys.modules)\n"
            "print(light, callable(ddl.run), callable(ddl.sweep), callable(ddl.predict.load))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True"] * 4
