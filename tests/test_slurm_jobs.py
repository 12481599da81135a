"""ddl's batch scripts on the real single-node SLURM (scripts/slurm_up.sh): a 2-task data-parallel
job, a 3-task array sweep under one MLflow parent, a sweep through Hydra's submitit launcher, and
a job signalled mid-training that
checkpoints, requeues itself, resumes and ends bit-identical (float64) to an uninterrupted run.
Skipped, with the reason printed, where `sbatch` is absent."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from mlflow import MlflowClient

from helpers import REPO, load_final
from slurm_util import cluster_up, finished, run, wait_until

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(shutil.which("sbatch") is None,
                       reason="sbatch not on PATH (run `bash scripts/slurm_up.sh` to get a SLURM)"),
]
QUICK = ["data=moons", "train.epochs=5", "train.progress=false"]


@pytest.fixture(scope="module", autouse=True)
def _cluster():
    cluster_up()


def sbatch(tmp_path, script: str, *args: str, opts=()) -> str:
    return run("sbatch", "--parsable", f"--chdir={tmp_path}", *opts, str(REPO / "slurm" / script),
               *args).strip().split(";")[0]


def test_train_sbatch_two_tasks_is_one_data_parallel_run(tmp_path):
    job = sbatch(tmp_path, "train.sbatch", *QUICK, opts=["--ntasks-per-node=2"])
    assert finished(job) == [{"JobState": "COMPLETED", "ExitCode": "0:0", "Restarts": "0"}]
    summary = json.loads((tmp_path / "runs" / f"slurm-{job}" / "summary.json").read_text())
    assert summary["world_size"] == 2
    run_ = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(summary["mlflow_run_id"])
    assert run_.info.status == "FINISHED" and run_.data.tags["ddl.world_size"] == "2"


def test_array_sweep_is_one_parent_with_three_children(tmp_path):
    out = subprocess.run(["bash", str(REPO / "slurm" / "submit_sweep.sh"), "optimizer=gd,momentum,adam",
                          *QUICK], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    job = out.stdout.split("array job ")[1].split()[0]
    parent = out.stdout.strip().split()[-1]
    assert all(r["JobState"] == "COMPLETED" for r in finished(job)), job
    client, children = closed_sweep(tmp_path, parent, job)
    assert sorted(r.data.params["optimizer.name"] for r in children) == ["adam", "gd", "momentum"]
    assert all(r.info.status == "FINISHED" for r in children)
    assert client.get_run(parent).info.status == "FINISHED"


def closed_sweep(tmp_path, parent: str, job: str):
    """(the client, the children of `parent`) once the array's end job has closed the parent."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ddl")
    wait_until(lambda: client.get_run(parent).info.status != "RUNNING", "parent closed", job, 60)
    return client, client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")


def test_hydras_slurm_launcher_runs_each_point_as_a_job_under_one_parent(tmp_path):
    """`ddl-train -m hydra/launcher=slurm`: submitit pickles the task to each job's process, which
    builds a session of its own there; the launching process closes the parent from the store."""
    import sys

    out = subprocess.run([sys.executable, "-m", "ddl", "-m", "hydra/launcher=slurm", "optimizer=gd,adam",
                          *QUICK, "hydra.launcher.tasks_per_node=1", "hydra.launcher.timeout_min=5"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ddl").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("ddl.sweep") == "true"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.data.params["optimizer.name"] for r in children) == ["adam", "gd"]
    assert all(r.info.status == "FINISHED" for r in children) and parent.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"bias_variance_map.png",
                                                                          "sweep_table.md"}
    said = out.stdout + out.stderr
    # the sweep's table at the end, as a sweep run here prints it; submitit's warnings once each
    # (it configures two handlers of its own, and repeats the sacct one on every poll)
    assert "sweep of 2 points" in said and "best: " in said and "FINISHED" in said, said
    assert "Bypassing sacct error" not in said and said.count("SLURM's accounting (sacct)") <= 1, said
    assert "findfont" not in said and "Traceback" not in said, said


CKPT = ["data=synthetic", "data.m=6000", "data.n_x=20", "data.classes=3", "model.hidden=[32,16]",
        "model.batchnorm=true", "model.keep_prob=0.9", "train.dtype=float64", "train.epochs=40",
        "train.batch_size=50", "train.progress=false", "checkpoint.every=1",
       "checkpoint.keep=1000"]


def test_signalled_job_checkpoints_requeues_and_ends_bit_identical(tmp_path):
    ref = tmp_path / "ref"
    ref.mkdir()
    job = sbatch(ref, "train.sbatch", *CKPT, "tracking=off", opts=["--ntasks-per-node=2"])
    assert finished(job)[0]["JobState"] == "COMPLETED"
    reference, _ = load_final(ref / "runs" / f"slurm-{job}")

    job = sbatch(tmp_path, "train.sbatch", *CKPT, opts=["--ntasks-per-node=2"])
    ckpts = tmp_path / "runs" / f"slurm-{job}" / "checkpoints"
    wait_until(lambda: ckpts.is_dir() and any(ckpts.glob("ckpt-*")), "a checkpoint", job)
    run("scancel", "--signal=USR1", job)           # what --signal=USR1@N sends before the limit
    records = finished(job)
    assert records[0]["JobState"] == "COMPLETED" and records[0]["Restarts"] == "1", records
    out = (tmp_path / f"slurm-ddl-train-{job}.out").read_text()
    assert "requeueing" in out and "resuming from" in out, out
    arrays, meta = load_final(tmp_path / "runs" / f"slurm-{job}")
    for k in reference:
        np.testing.assert_array_equal(arrays[k], reference[k], err_msg=k)
    assert [r["epoch"] for r in meta["history"]] == list(range(40))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    steps = [m.step for m in client.get_metric_history(meta["run_id"], "cost/train")]
    assert sorted(steps) == list(range(40)), steps     # no epoch missing, none twice
    assert client.get_run(meta["run_id"]).info.status == "FINISHED"


def array_tasks(job: str) -> list[dict[str, str]]:
    """JobId, ArrayTaskId, JobState and Restarts of each task of array `job`."""
    records = run("scontrol", "-o", "show", "job", job).strip().splitlines()
    return [dict(re.findall(r"\b(JobId|ArrayTaskId|JobState|Restarts)=(\S+)", rec)) for rec in records]


def test_a_requeued_array_task_leaves_the_other_tasks_alone(tmp_path):
    """SLURM gives the array's own job id to one of its tasks (the last to start). That task is
    signalled mid-training: it checkpoints and requeues itself by `<array id>_<task>`, resumes and
    finishes; `scontrol requeue $SLURM_JOB_ID` would have requeued the whole array, finished
    tasks included (Lightning #15022)."""
    out = subprocess.run(["bash", str(REPO / "slurm" / "submit_sweep.sh"), "train.seed=0,1,2", *CKPT],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    job = out.stdout.split("array job ")[1].split()[0]
    parent = out.stdout.strip().split()[-1]
    holder = {}

    def running_with_the_arrays_id() -> bool:
        for task in array_tasks(job):
            if task.get("JobId") == job and task.get("JobState") == "RUNNING":
                holder["task"] = task["ArrayTaskId"]
        return "task" in holder
    wait_until(running_with_the_arrays_id, "the task holding the array's id running", job)
    ckpts = tmp_path / "runs" / f"sweep-{job}" / holder["task"] / "checkpoints"
    wait_until(lambda: ckpts.is_dir() and any(ckpts.glob("ckpt-*")), "a checkpoint", job)
    run("scancel", "--signal=USR1", f"{job}_{holder['task']}")
    finished(job)
    restarts = {t["ArrayTaskId"]: t["Restarts"] for t in array_tasks(job)}
    assert restarts == {t: "1" if t == holder["task"] else "0" for t in ("0", "1", "2")}, restarts
    log = (tmp_path / f"slurm-ddl-sweep-{job}_{holder['task']}.out").read_text()
    assert f"requeueing array task {job}_{holder['task']}" in log and "resuming from" in log, log
    _, children = closed_sweep(tmp_path, parent, job)
    assert sorted(r.data.params["train.seed"] for r in children) == ["0", "1", "2"]
    assert all(r.info.status == "FINISHED" for r in children)


def test_a_search_array_shares_one_study_and_one_parent(tmp_path):
    """slurm/search.sbatch as an array of 2 tasks: 4 trials in all, none twice, one parent."""
    pytest.importorskip("optuna")
    import optuna

    from ddl.search.study import storage

    job = sbatch(tmp_path, "search.sbatch", "hydra/sweeper=lr_search", "hydra.sweeper.n_trials=4",
                 "hydra.sweeper.pruner=none", *QUICK, opts=["--array=0-1"])
    assert all(r["JobState"] == "COMPLETED" for r in finished(job)), job
    sweep = tmp_path / "multirun" / f"search-{job}"
    study = optuna.load_study(study_name=sweep.name, storage=storage(str(sweep / "study.journal")))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4 and len({t.number for t in done}) == 4
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ddl").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("ddl.sweep") == "true"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4 and all(r.info.status == "FINISHED" for r in children)
    assert parent.info.status == "FINISHED"
