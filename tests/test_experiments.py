"""End to end: `ddl-train` under real `mpiexec`, tracked in a real MLflow store (a real
`mlflow server` on loopback, or the embedded SQLite file), sweeps and `ddl-report`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from helpers import clean_env, ddl_train, run_cmd

pytestmark = pytest.mark.mpi
QUICK = ["data=moons", "data.m=200", "model.hidden=[6]", "train.epochs=5", "train.batch_size=32",
         "train.progress=false"]


def test_two_ranks_log_to_a_real_mlflow_server(tmp_path, mlflow_server):
    out = tmp_path / "run"
    code, so, se = ddl_train(2, *QUICK, "tracking=server", f"tracking.uri={mlflow_server}",
                             "tracking.experiment=e2e", f"out_dir={out}", cwd=tmp_path, timeout=180)
    assert code == 0, so + se
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["mlflow_run_id"]
    client = MlflowClient(mlflow_server)
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["optimizer.name"] == "adam" and run.data.params["train.epochs"] == "5"
    for key in ("cost/train", "cost/dev", "error/train", "error/dev", "lr", "perf/samples_per_s",
                "bias/avoidable", "bias/variance", "perf/allreduce_share"):
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
        assert steps == [0, 1, 2, 3, 4], (key, steps)
    assert run.data.tags["diagnosis"] in ("high bias", "high variance", "high bias + high variance", "ok")
    assert run.data.tags["ddl.world_size"] == "2"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "summary.json", "final.npz", "learning_curves.png",
            "lr_schedule.png"} <= artifacts, artifacts


def test_sweep_under_two_ranks_is_one_parent_with_four_children(tmp_path):
    code, so, se = ddl_train(2, "-m", *QUICK, "optimizer=gd,adam", "schedule=inverse_time",
                             "schedule.decay_rate=0,1", cwd=tmp_path, timeout=300)
    assert code == 0, so + se
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("ddl")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("ddl.sweep") == "true"]
    assert len(parents) == 1, [r.data.tags for r in runs]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    points = {(r.data.params["optimizer.name"], r.data.params["schedule.decay_rate"]) for r in children}
    assert points == {("gd", "0.0"), ("gd", "1.0"), ("adam", "0.0"), ("adam", "1.0")}
    assert all(r.data.tags["ddl.world_size"] == "2" for r in children)
    code, table, err = run_cmd([sys.executable, "-m", "ddl.runner.report", "--uri", uri,
                                "--experiment", "ddl"], timeout=60)
    assert code == 0, err
    from ddl.runner.names import distinct_names

    shown = distinct_names([r.info.run_name for r in children])   # only what tells them apart
    assert sorted(shown) == ["adam decay_rate=0", "adam decay_rate=1", "gd decay_rate=0",
                             "gd decay_rate=1"], shown
    assert sum(name in table for name in shown) == 4, table
    names = sorted(r.info.run_name for r in children)      # short and distinct when they start
    assert names == ["adam decay_rate=0", "adam decay_rate=1", "gd decay_rate=0",
                     "gd decay_rate=1"], names
    assert all("optimizer=" in r.data.tags["ddl.overrides"] for r in children)
    assert all(r.data.tags["mlflow.note.content"].startswith(r.data.tags["diagnosis"].capitalize())
               and "Next step" in r.data.tags["mlflow.note.content"] for r in children)
    assert all("error/dev" in r.data.metrics and "perf/samples_per_s" in r.data.metrics
               for r in children)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "bias/avoidable" in exp.tags["mlflow.note.content"]
    check_parent(client, parents[0], children)
    text = so + se                         # the console: a line per point, the table, one hint
    assert [f"[{i}/4]" in text for i in range(1, 5)] == [True] * 4, text
    assert "sweep results, best first" in text and "\nbest: " in text, text
    assert text.count("mlflow ui --backend-store-uri") == 1, text
    link = f"/#/experiments/{exp.experiment_id}/runs?viewStateShareKey=ddl&workflowType=machine_learning"
    assert text.count(link) == 1, text                   # the link opens ddl's view, once
    from ddl.tracking.dashboard import VIEW_TAG, decode_view

    view = decode_view(exp.tags[VIEW_TAG])               # the UI's Share format, readable back
    assert view["orderByKey"] == "metrics.`error/dev`" and view["orderByAsc"] is True
    assert {"metrics.`error/train`", "metrics.`bias/variance`", "tags.`diagnosis`"} <= set(
        view["selectedColumns"])


def check_parent(client, parent, children):
    """A sweep parent answers the sweep: counts, the best point and its figures, the map."""
    m, tags = parent.data.metrics, parent.data.tags
    assert (m["sweep/points"], m["sweep/points_finished"], m["sweep/points_failed"]) == (4, 4, 0)
    best = min(children, key=lambda r: r.data.metrics["error/dev"])
    assert m["sweep/best_held_out_error"] == best.data.metrics["error/dev"] == m["error/dev"]
    assert tags["ddl.sweep.best_run_id"] == best.info.run_id and parent.info.status == "FINISHED"
    assert tags["diagnosis"] == f"best point: {best.data.tags['diagnosis']}"   # set last, kept
    assert parent.info.run_name.startswith("sweep optimizer × decay_rate"), parent.info.run_name
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"bias_variance_map.png", "sweep_table.md", "error_vs_schedule_decay_rate.png"} <= artifacts
    png = client.download_artifacts(parent.info.run_id, "bias_variance_map.png")
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_readme_first_command_default_run(tmp_path):
    """The README's quick start: the default experiment, local store, useful accuracy. (Its
    duration, about 10 s here, is reported by the benchmarks, not asserted: the timeout only
    guards against a hang.)"""
    code, so, se = ddl_train(0, cwd=tmp_path, timeout=120)
    assert code == 0, so + se
    summary = json.loads(next(tmp_path.glob("runs/*/*/summary.json")).read_text())
    assert summary["train"]["accuracy"] >= 0.85 and summary["dev"]["accuracy"] >= 0.8, summary
    text = so + se
    assert "run directory" in text and "mlflow ui --backend-store-uri sqlite:///" in text
    assert (tmp_path / "mlflow.db").exists()


def test_a_failing_sweep_point_is_reported_and_the_sweep_goes_on(tmp_path):
    code, so, se = ddl_train(0, "-m", "model.activation=tanh,nope,relu", "train.epochs=2",
                             "data=moons", "train.progress=false", "tracking=off", cwd=tmp_path,
                             timeout=120)
    assert code == 1
    assert "unknown hidden activation 'nope'" in se, se
    assert "1 sweep point(s) failed: model.activation=nope" in se, se     # named by its override
    assert "[2/3] failed" in se and "sweep results, best first" in se, se
    done = sorted(p.parent.name for p in tmp_path.glob("multirun/*/*/*/summary.json"))
    assert done == ["0", "2"], done


def test_a_run_without_dev_split_is_diagnosed_on_test_everywhere(tmp_path, capsys):
    """The course's cat classifier overfits (train 99 %, test 70 %): high variance, and
    every place that shows it says it was judged on test."""
    from test_data_course import CAT, need

    from ddl.runner.report import main as report

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "cat"
    code, so, se = ddl_train(0, "experiment=cat_logistic", f"data.path={need(CAT)}",
                             "train.eval_every=400", f"tracking.uri={uri}",
                             "tracking.experiment=cat", f"out_dir={out}", cwd=tmp_path, timeout=180)
    assert code == 0, so + se
    assert "(high variance, judged on test: no dev split)" in so + se
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["diagnosis"], summary["diagnosis_split"]) == ("high variance", "test")
    assert summary["variance"] == summary["test"]["error"] - summary["train"]["error"]
    client = MlflowClient(uri)
    run = client.get_run(summary["mlflow_run_id"])
    assert run.data.tags["diagnosis"] == "high variance"
    assert run.data.tags["diagnosis.split"] == "test"
    assert abs(run.data.metrics["bias/variance"] - summary["variance"]) < 1e-12
    assert len(client.get_metric_history(run.info.run_id, "error/test")) == 5   # a held-out curve
    assert report(["--uri", uri, "--experiment", "cat"]) == 0
    table = capsys.readouterr().out
    assert "high variance (test)" in table and "test err" in table, table


def test_a_tracked_run_that_fails_is_failed_with_its_error_and_log(tmp_path):
    """Training raises on its 3rd batch: the MLflow run ends FAILED (never RUNNING), carries the
    error as tags and its train.log (traceback included) as an artifact."""
    from helpers import SCRIPTS_DIR

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, so, se = run_cmd([sys.executable, SCRIPTS_DIR / "faulty_train.py", 0, 3, "raise", *QUICK,
                            f"tracking.uri={uri}", f"out_dir={tmp_path / 'run'}"], cwd=tmp_path,
                           timeout=120)
    assert code == 1 and "injected fault" in se, so + se
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("ddl").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["ddl.error"] == "RuntimeError: injected fault"
    assert "injected fault" in run.data.tags["mlflow.note.content"]
    log = client.download_artifacts(run.info.run_id, "train.log", str(tmp_path))
    with open(log) as f:
        text = f.read()
    assert "Traceback" in text and text.count("RuntimeError: injected fault") == 1, text


def test_runs_and_sweeps_started_together_never_share_a_directory(tmp_path):
    """Two identical sweeps and two identical single runs, each pair started in the same instant:
    two sweep directories and two parents with their own children, two run directories; then a
    run into a directory that holds one is refused and the files stay as they were."""
    import subprocess

    from helpers import clean_env

    def together(*args):
        cmd = [sys.executable, "-m", "ddl", *args, *QUICK]
        procs = [subprocess.Popen(cmd, cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _ in range(2)]
        for p in procs:
            out = p.communicate(timeout=300)[0]
            assert p.returncode == 0, out

    together("-m", "optimizer=gd,adam")
    together("tracking=off")
    sweeps = sorted(tmp_path.glob("multirun/*/*"))
    assert len(sweeps) == 2 and all(len(list(d.glob("*/summary.json"))) == 2 for d in sweeps), sweeps
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ddl").experiment_id])
    parents = [r.info.run_id for r in runs if r.data.tags.get("ddl.sweep") == "true"]
    children = [r.data.tags.get("mlflow.parentRunId") for r in runs if r.info.run_id not in parents]
    assert len(parents) == 2 and sorted(children) == sorted(parents * 2), (parents, children)
    singles = sorted(tmp_path.glob("runs/*/*/summary.json"))
    assert len(singles) == 2, singles
    before = {p.name: p.read_bytes() for p in singles[0].parent.iterdir() if p.is_file()}
    code, so, se = ddl_train(0, *QUICK, "tracking=off", f"out_dir={singles[0].parent}", cwd=tmp_path)
    assert code == 1 and "already holds another run" in se and "checkpoint.resume=auto" in se, se
    assert {p.name: p.read_bytes() for p in singles[0].parent.iterdir() if p.is_file()} == before


def test_a_password_in_the_tracking_uri_is_written_and_logged_nowhere(tmp_path, mlflow_server):
    uri = mlflow_server.replace("http://", "http://student:s3cret-pw@")
    out = tmp_path / "run"
    code, so, se = ddl_train(2, *QUICK, "tracking=server", f"tracking.uri={uri}",
                             "tracking.experiment=secret", f"out_dir={out}", cwd=tmp_path, timeout=180)
    assert code == 0, so + se
    assert "s3cret" not in so + se and "student:***@" in so + se, so + se
    for path in out.rglob("*"):                      # config.yaml, .hydra/*, train.log, summary ...
        if path.is_file():
            assert b"s3cret" not in path.read_bytes(), path
    summary = json.loads((out / "summary.json").read_text())
    client = MlflowClient(mlflow_server)
    run = client.get_run(summary["mlflow_run_id"])
    stored = [run.info.run_name, *run.data.params.values(), *run.data.tags.values()]
    assert not [v for v in stored if "s3cret" in v], stored
    assert run.data.params["tracking.uri"] == mlflow_server.replace("http://", "http://student:***@")
    config = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    assert "s3cret" not in open(config).read()


def test_divergence_without_nan_is_said_tagged_and_stops_as_a_nan_would(tmp_path):
    """optimizer.lr=1e6 on a tanh/Adam net: costs near 1e5 and no NaN. Default: every rank stops
    with one message, the MLflow run FAILED and tagged; train.on_nonfinite=skip: a warning,
    the run goes on, summary.json and the tag say diverged."""
    wild = ["data=moons", "model.hidden=[20,7]", "model.activation=tanh", "optimizer=adam",
            "optimizer.lr=1e6", "train.epochs=30", "train.progress=false"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, so, se = ddl_train(2, *wild, f"tracking.uri={uri}", f"out_dir={tmp_path / 'stop'}",
                             cwd=tmp_path, timeout=180)
    assert code == 1 and se.count("diverging (the train cost has stayed above 1000") == 1, se
    code, so, se = ddl_train(2, *wild, f"tracking.uri={uri}", "train.on_nonfinite=skip",
                             f"out_dir={tmp_path / 'skip'}", cwd=tmp_path, timeout=180)
    assert code == 0 and "diverging at epoch 4" in so + se, so + se
    assert json.loads((tmp_path / "skip" / "summary.json").read_text())["diverged"] is True
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("ddl")
    runs = {r.info.status: r.data.tags for r in client.search_runs([exp.experiment_id])}
    assert runs["FAILED"]["ddl.diverged"] == "true" and "diverging" in runs["FAILED"]["ddl.error"]
    assert runs["FINISHED"]["ddl.diverged"] == "true"


def test_a_refused_launch_leaves_nothing_that_blocks_the_corrected_one(tmp_path):
    out = tmp_path / "run"
    code, so, se = ddl_train(0, *QUICK, "backend=cupy", "tracking=off", f"out_dir={out}", cwd=tmp_path)
    assert code == 1 and "backend=cupy" in se and (out / "REFUSED").is_file(), se   # no GPU here
    code, so, se = ddl_train(0, *QUICK, "tracking=off", f"out_dir={out}", cwd=tmp_path)
    assert code == 0, se
    assert (out / "final.npz").is_file() and not (out / "REFUSED").exists()
    code, so, se = ddl_train(0, *QUICK, "tracking=off", f"out_dir={out}", cwd=tmp_path)
    assert code == 1 and "already holds another run" in se            # a run that trained: its own


@pytest.mark.parametrize("args", [["out_dir=/proc/ddl-no-such/run"], ["-m", "train.epochs=1,2",
                                                                       "hydra.sweep.dir=/proc/ddl-no-such"]])
def test_a_run_directory_that_cannot_be_made_is_one_paragraph_before_hydra(tmp_path, args):
    code, so, se = ddl_train(0, *QUICK, "tracking=off", *args, cwd=tmp_path)
    assert code == 1 and "ddl: error:" in se and "no folder can be made in /proc" in se, se
    assert "Traceback" not in se and not list(tmp_path.iterdir())


@pytest.mark.parametrize("where", ["out_dir", "runs/ in the working directory"])
def test_a_read_only_filesystem_for_the_run_directory_is_one_paragraph_before_hydra(tmp_path, where):
    """A read-only mount (root may write anywhere else, so a chmod would prove nothing)."""
    import shlex

    ro = tmp_path / "ro"
    ro.mkdir()
    args = [*QUICK, "tracking=off"] + ([f"out_dir={ro / 'run'}"] if where == "out_dir" else [])
    ddl = shlex.join([sys.executable, "-m", "ddl", *args])
    script = f"mount -t tmpfs -o ro,size=1m tmpfs {ro} && cd {ro} && exec {ddl}"
    code, so, se = run_cmd(["unshare", "-m", "sh", "-c", script], cwd=tmp_path, timeout=120, env=clean_env())
    assert code == 1 and se.count("ddl: error:") == 1, so + se
    assert f"no folder can be made in {ro}" in se and "Read-only file system" in se, se
    assert "Traceback" not in so + se


def test_a_tracked_sweep_point_that_fails_is_failed_before_the_next_point_starts(tmp_path):
    """The point's run is ended FAILED by the invocation's tracking worker, which has MLflow loaded
    already: the failure path imports nothing heavy, so the point is FAILED before the next one
    starts. The delay from its last metric to its end is printed (measured: about 0.1 s)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # the failpoint raises before global step 5: only the point with small batches gets there
    code, so, se = ddl_train(0, "-m", "train.batch_size=512,64,256", "data=moons", "train.epochs=2",
                             "train.progress=false", f"tracking.uri={uri}", cwd=tmp_path, timeout=180,
                             env=clean_env(DDL_FAULT="raise@rank=0,step=5"))
    assert code == 1 and "1 sweep point(s) failed: train.batch_size=64" in se, so + se
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("ddl").experiment_id],
                              order_by=["start_time ASC"])
    points = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert [p.info.status for p in points] == ["FINISHED", "FAILED", "FINISHED"], [p.info.status for p in points]
    failed, after = points[1], points[2]
    last_metric = max(m.timestamp for key in failed.data.metrics
                      for m in client.get_metric_history(failed.info.run_id, key))
    print(f"failed point: FAILED {(failed.info.end_time - last_metric) / 1e3:.2f} s after its last "
          f"metric; the next point started {(after.info.start_time - failed.info.end_time) / 1e3:.2f} s later")
    assert failed.info.end_time <= after.info.start_time


def test_a_tracked_run_logs_its_best_held_out_error_and_its_epoch(tmp_path, capsys):
    """error/dev_best is the lowest dev error of the epochs so far, epoch/dev_best after how many
    epochs (the console's count), and ddl-report shows them beside the final values."""
    from ddl.runner.report import main as report

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, so, se = ddl_train(0, "data=moons", "train.epochs=12", "optimizer.lr=0.3", "train.progress=false",
                             f"tracking.uri={uri}", f"out_dir={tmp_path / 'run'}", cwd=tmp_path, timeout=120)
    assert code == 0, so + se
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("ddl").experiment_id])
    history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, "error/dev"))
    lowest = min(v for _, v in history)
    first = next(step for step, v in history if v == lowest)
    assert run.data.metrics["error/dev_best"] == lowest
    assert run.data.metrics["epoch/dev_best"] == first + 1
    capsys.readouterr()
    assert report(["--uri", uri, "--wide"]) == 0      # in 120 columns the column gives way first
    table = capsys.readouterr().out
    assert "best (epoch)" in table and f"{100 * lowest:.2f}% ({first + 1})" in table, table



def test_a_long_run_logs_at_most_max_points_per_curve_and_always_its_last_epoch(tmp_path):
    """tracking.max_points caps each metric's history (the store of a session of long runs reached
    74 MB): 400 epochs with a cap of 50 log every 8th epoch and the last; a short run every epoch."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for epochs, cap in ((400, 50), (30, 50)):
        code, so, se = ddl_train(0, "data=moons", f"train.epochs={epochs}", "train.progress=false",
                                 f"tracking.max_points={cap}", f"tracking.uri={uri}",
                                 f"tracking.run_name=e{epochs}", cwd=tmp_path, timeout=120)
        assert code == 0, so + se
    client = MlflowClient(uri)
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("ddl").experiment_id])}
    steps = sorted(m.step for m in client.get_metric_history(runs["e400"].info.run_id, "error/dev"))
    assert steps == list(range(0, 400, 8)) + [399], steps
    steps = sorted(m.step for m in client.get_metric_history(runs["e30"].info.run_id, "error/dev"))
    assert steps == list(range(30)), steps


def test_a_tracked_sweep_leaves_nothing_that_git_would_show(tmp_path):
    """Every file a run or sweep makes in the working directory is under the run directories or the
    store, and the repository's .gitignore covers them all (mlflow.sweeps.lock was missed)."""
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("no git")
    repo = Path(__file__).resolve().parents[1]
    shutil.copy(repo / ".gitignore", tmp_path / ".gitignore")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    code, so, se = ddl_train(0, "-m", "optimizer=gd,adam", "data=moons", "train.epochs=2", "train.progress=false",
                             cwd=tmp_path, timeout=300)
    assert code == 0, so + se
    assert (tmp_path / "mlflow.db").is_file() and (tmp_path / "multirun").is_dir()
    shown = subprocess.run(["git", "status", "--porcelain"], cwd=tmp_path, capture_output=True, text=True,
                           check=True).stdout.split("\n")
    assert [line for line in shown if line and not line.endswith(".gitignore")] == [], shown
