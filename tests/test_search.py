"""ddl's search (ddl/search/, the optuna extra): real `ddl-train -m hydra/sweeper=…` processes.
A pruned search against the same search unpruned (the random sampler draws the same trials in
both), two processes sharing one study, one of them SIGKILLed mid-trial, and the search space."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow import MlflowClient

from helpers import clean_env

optuna = pytest.importorskip("optuna", reason="ddl's search needs the optuna extra (pip install -e '.[test]')")
SEARCH = ["-m", "hydra/sweeper=lr_search", "hydra.sweeper.sampler=random", "data=moons",
          "train.progress=false"]


def search(tmp_path, name: str, *extra: str, **popen):
    cmd = [sys.executable, "-m", "ddl", *SEARCH, f"hydra.sweep.dir={tmp_path / name}", *extra]
    return subprocess.Popen(cmd, cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **popen)


def study(tmp_path, name: str):
    from ddl.search.study import storage

    return optuna.load_study(study_name=name, storage=storage(str(tmp_path / name / "study.journal")))


def test_a_pruned_search_stops_trials_that_would_end_worse_and_finds_the_same_best(tmp_path):
    runs, seconds = {}, {}
    for pruner in ("none", "hyperband"):
        started = time.monotonic()
        proc = search(tmp_path, pruner, "hydra.sweeper.n_trials=12", f"hydra.sweeper.pruner={pruner}",
                      "hydra.sweeper.warmup_epochs=10", "train.epochs=300", "tracking=off")
        said = proc.communicate(timeout=600)[0]
        seconds[pruner] = time.monotonic() - started
        assert proc.returncode == 0, said
        runs[pruner] = study(tmp_path, pruner)
    full, pruned = runs["none"], runs["hyperband"]
    epochs = {k: sum(len(t.intermediate_values) for t in s.trials) for k, s in runs.items()}
    print(f"12 trials x 300 epochs on moons: unpruned {seconds['none']:.1f} s ({epochs['none']} epochs), "
          f"hyperband {seconds['hyperband']:.1f} s ({epochs['hyperband']} epochs)")
    assert [t.params for t in full.trials] == [t.params for t in pruned.trials]   # the same draws
    stopped = [t.number for t in pruned.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert stopped, "nothing was pruned"
    assert pruned.best_trial.params == full.best_trial.params
    assert all(full.trials[n].value > full.best_value for n in stopped)    # each would have ended worse
    assert epochs["hyperband"] < epochs["none"]
    assert said.count("] pruned after epoch") == len(stopped), said


def test_pruned_trials_are_their_own_state_in_mlflow_and_the_console(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = search(tmp_path, "s", "hydra.sweeper.n_trials=8", "hydra.sweeper.pruner=hyperband",
                  "hydra.sweeper.warmup_epochs=5", "train.epochs=100", f"tracking.uri={uri}")
    said = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, said
    stopped = {t.number for t in study(tmp_path, "s").trials if t.state == optuna.trial.TrialState.PRUNED}
    assert stopped, said
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("ddl").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("ddl.sweep") == "true"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    killed = [r for r in children if r.info.status == "KILLED"]
    assert len(killed) == len(stopped) and all(r.data.tags["ddl.stopped"] == "pruned" for r in killed)
    assert {int(r.data.params["search.trial"]) for r in killed} == stopped
    assert all(r.info.status == "FINISHED" for r in children if r not in killed)
    assert parent.info.status == "FINISHED" and parent.data.metrics["sweep/points_pruned"] == len(stopped)
    assert parent.data.metrics["sweep/points_failed"] == 0
    table = said[said.index("sweep results, best first"):]
    assert table.count("PRUNED") == len(stopped), table
    assert len(client.get_metric_history(killed[0].info.run_id, "error/dev")) >= 1   # its curve so far


@pytest.mark.parametrize("kill", [False, True])
def test_two_processes_share_one_study_and_a_killed_ones_trial_is_failed_not_lost(tmp_path, kill):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    common = ["hydra.sweeper.n_trials=6", "hydra.sweeper.pruner=none", "train.epochs=400",
              f"tracking.uri={uri}"]
    a = search(tmp_path, "shared", *common)
    b = search(tmp_path, "shared", *common, start_new_session=True)
    try:
        if kill:                             # SIGKILL b (and its tracking worker) mid-trial
            deadline = time.monotonic() + 120
            while not mine_running(tmp_path, b.pid):
                assert time.monotonic() < deadline and b.poll() is None, b.communicate()[0]
                time.sleep(0.1)
            os.killpg(b.pid, signal.SIGKILL)
        said_a = a.communicate(timeout=600)[0]
        said_b = b.communicate(timeout=600)[0]
    finally:
        for p in (a, b):
            if p.poll() is None:
                p.kill()
    assert a.returncode == 0, said_a
    assert b.returncode == (-signal.SIGKILL if kill else 0), said_b
    trials = study(tmp_path, "shared").trials
    state = optuna.trial.TrialState
    done = [t for t in trials if t.state == state.COMPLETE]
    assert len(done) == 6 and len({t.number for t in done}) == 6
    assert len({t.user_attrs["ddl.pid"] for t in trials}) == 2           # both processes drew trials
    failed = [t for t in trials if t.state == state.FAIL]
    assert [t.user_attrs["ddl.pid"] for t in failed] == ([b.pid] if kill else [])
    for t in done:                            # each ran once, in its own directory
        assert (tmp_path / "shared" / str(t.number) / "summary.json").is_file()
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("ddl").experiment_id])
    parents = [r for r in runs if r.data.tags.get("ddl.sweep") == "true"]
    assert len(parents) == 1
    finished = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id
                and r.info.status == "FINISHED"]
    assert len(finished) == 6


def mine_running(tmp_path, pid: int) -> bool:
    try:
        trials = study(tmp_path, "shared").trials
    except Exception:  # noqa: BLE001 - the study is not created yet
        return False
    return any(t.state == optuna.trial.TrialState.RUNNING and t.user_attrs.get("ddl.pid") == pid
               and len(t.intermediate_values) > 5 for t in trials)


def test_the_search_space_is_hydras_sweep_syntax():
    from ddl.search.sweeper import search_space

    space, fixed = search_space({"optimizer.lr": "tag(log, interval(1e-4, 1))"},
                                ["model.hidden=choice([4],[16,8])", "train.batch_size=range(32,129,step=32)",
                                 "model.keep_prob=interval(0.5, 1.0)", "data=moons"])
    D = optuna.distributions
    assert space["optimizer.lr"] == D.FloatDistribution(1e-4, 1.0, log=True)
    assert space["model.keep_prob"] == D.FloatDistribution(0.5, 1.0)
    assert space["train.batch_size"] == D.IntDistribution(32, 128, step=32)
    assert space["model.hidden"] == D.CategoricalDistribution(["[4]", "[16,8]"])
    assert fixed == ["data=moons"]
