"""Preemption-safe training under real `mpiexec -n 2`: a SIGUSR1 (what SLURM's --signal sends)
makes every rank stop at the same step, rank 0 checkpoints atomically, the job exits 75; a rerun
with checkpoint.resume=auto ends bit-identical (float64) to the uninterrupted run, in the same
MLflow run with every epoch logged exactly once. `kill -9` mid-training, then a rerun, too."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from mlflow import MlflowClient

from helpers import clean_env, ddl_train, load_final, mpiexec

pytestmark = pytest.mark.mpi
EPOCHS = 40  # long enough (several seconds) that the signal lands mid-training
CFG = ["data=synthetic", "data.m=6000", "data.n_x=20", "data.classes=3", "model.hidden=[32,16]",
       "model.keep_prob=0.9", "model.batchnorm=true", "train.dtype=float64",
       f"train.epochs={EPOCHS}", "train.batch_size=50", "train.progress=false", "checkpoint.every=1",
       "checkpoint.keep=1000"]


def start(tmp_path, out, *extra):
    cmd = [mpiexec(), "-n", "2", sys.executable, "-m", "ddl", *CFG, *extra, f"out_dir={out}"]
    return subprocess.Popen(cmd, cwd=tmp_path, env=clean_env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_checkpoint(out, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list((out / "checkpoints").glob("ckpt-*.npz")):
            return
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("no checkpoint appeared")


def finish(proc, timeout=180):
    try:
        return proc.wait(timeout=timeout), proc.communicate()[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("training did not end")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    code, out, err = ddl_train(2, *CFG, "tracking=off", f"out_dir={tmp / 'run'}", cwd=tmp, timeout=300)
    assert code == 0, out + err
    return load_final(tmp / "run")[0]


def assert_identical(run_dir, reference):
    arrays, meta = load_final(run_dir)
    assert sorted(arrays) == sorted(reference)
    for k in reference:
        np.testing.assert_array_equal(arrays[k], reference[k], err_msg=k)
    assert [r["epoch"] for r in meta["history"]] == list(range(EPOCHS))


def test_signal_checkpoints_then_resume_is_bit_identical(tmp_path, reference):
    signal_then_resume(tmp_path, reference)


def test_signal_with_the_optimizer_sharded_checkpoints_then_resume_is_bit_identical(tmp_path):
    # the signal's checkpoint gathers every rank's block of the optimizer state; the resumed run
    # cuts it into blocks again: bit-identical to a sharded run that was never stopped
    sharded = "train.shard_optimizer=on"
    code, out, err = ddl_train(2, *CFG, sharded, "tracking=off", f"out_dir={tmp_path / 'ref'}",
                               cwd=tmp_path, timeout=300)
    assert code == 0, out + err
    signal_then_resume(tmp_path, load_final(tmp_path / "ref")[0], sharded)


def signal_then_resume(tmp_path, reference, *extra):
    out = tmp_path / "run"
    proc = start(tmp_path, out, *extra)
    wait_for_checkpoint(out, proc)
    os.killpg(proc.pid, signal.SIGUSR1)   # mpiexec forwards it to every rank
    code, text = finish(proc)
    assert code == 75, text
    assert "stopped by a signal" in text and "checkpoint.resume=auto" in text
    assert not (out / "final.npz").exists()
    code, so, se = ddl_train(2, *CFG, *extra, f"out_dir={out}", "checkpoint.resume=auto", cwd=tmp_path,
                             timeout=300)
    assert code == 0, so + se
    assert "resuming from" in so + se
    assert_identical(out, reference)
    summary = json.loads((out / "summary.json").read_text())
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1, "the resumed job reuses its run"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "cost/train")]
    assert sorted(steps) == list(range(EPOCHS)), steps   # no epoch missing, none twice


def test_kill_9_then_rerun_with_resume_auto_is_bit_identical(tmp_path, reference):
    out = tmp_path / "run"
    proc = start(tmp_path, out)
    wait_for_checkpoint(out, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    code, so, se = ddl_train(2, *CFG, f"out_dir={out}", "checkpoint.resume=auto", cwd=tmp_path, timeout=300)
    assert code == 0, so + se
    assert_identical(out, reference)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    summary = json.loads((out / "summary.json").read_text())
    steps = [m.step for m in client.get_metric_history(summary["mlflow_run_id"], "cost/train")]
    assert sorted(steps) == list(range(EPOCHS)), steps


def test_resume_with_a_changed_batch_size_is_refused(tmp_path):
    out = tmp_path / "run"
    short = [c if not c.startswith("train.epochs") else "train.epochs=2" for c in CFG]
    code, so, se = ddl_train(0, *short, "tracking=off", f"out_dir={out}", cwd=tmp_path, timeout=120)
    assert code == 0, so + se
    code, so, se = ddl_train(0, *short, "tracking=off", f"out_dir={out}", "checkpoint.resume=auto",
                             "train.batch_size=64", cwd=tmp_path, timeout=120)
    assert code != 0
    assert "cannot resume" in se and "batch_size: checkpoint 50, config 64" in se, se


def test_resume_auto_skips_a_damaged_newest_checkpoint_and_ends_bit_identical(tmp_path, reference):
    """The newest checkpoint cut short (a disk that filled), the one before it altered in place
    (unzips, fails its checksum): resume=auto names and skips both, resumes from the third."""
    out = tmp_path / "run"
    proc = start(tmp_path, out)
    deadline = time.monotonic() + 120
    while len(list((out / "checkpoints").glob("ckpt-*.npz"))) < 3 and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    from ddl.checkpoint import checkpoints_newest_first

    newest, second, third = checkpoints_newest_first(out)[:3]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with np.load(second, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta/json")))
    key = next(k for k in arrays if k.startswith("W"))
    arrays[key] = arrays[key] + 1.0                       # bit rot the checksum must catch
    payload = {**arrays, "meta/json": np.array(json.dumps(meta))}
    np.savez(second, **payload)
    code, so, se = ddl_train(2, *CFG, "tracking=off", f"out_dir={out}", "checkpoint.resume=auto",
                             cwd=tmp_path, timeout=300)
    assert code == 0, so + se
    text = so + se
    assert f"skipping checkpoint {newest.name}" in text and "not a readable .npz" in text, text
    assert f"skipping checkpoint {second.name}" in text and "checksum" in text, text
    assert f"resuming from {third}" in text, text
    assert_identical(out, reference)


def ctrl_c_when_checkpointed(tmp_path, out, *args):
    """A single-process ddl-train in its own process group, given Ctrl-C (SIGINT to the group,
    as a terminal sends it) once its first checkpoint exists; (exit code, output)."""
    cmd = [sys.executable, "-m", "ddl", *args]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=clean_env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_checkpoint(out, proc)
    os.killpg(proc.pid, signal.SIGINT)
    return finish(proc)


def test_ctrl_c_stops_at_a_step_with_a_checkpoint_and_exit_130_then_resumes(tmp_path, reference):
    out = tmp_path / "run"
    code, text = ctrl_c_when_checkpointed(tmp_path, out, *CFG, f"out_dir={out}")
    assert code == 130, text
    assert "stopped by Ctrl-C" in text and "checkpoint.resume=auto" in text, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("ddl").experiment_id])
    assert run.info.status == "KILLED"
    code, so, se = ddl_train(2, *CFG, f"out_dir={out}", "checkpoint.resume=auto", cwd=tmp_path,
                             timeout=300)
    assert code == 0, so + se
    arrays, meta = load_final(out)          # one rank, then two: the same model to reduction order
    for k in reference:
        np.testing.assert_allclose(arrays[k], reference[k], rtol=1e-9, atol=1e-12, err_msg=k)
    assert [r["epoch"] for r in meta["history"]] == list(range(EPOCHS))
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def test_ctrl_c_on_a_sweep_leaves_its_parent_killed_not_finished(tmp_path):
    sweep = tmp_path / "sweep"
    points = [c for c in CFG if not c.startswith("train.epochs")]
    code, text = ctrl_c_when_checkpointed(tmp_path, sweep / "1", "-m", "train.epochs=2,400,400",
                                          *points, f"hydra.sweep.dir={sweep}")
    assert code == 130 and "Traceback" not in text, text
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ddl").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("ddl.sweep") == "true"]
    assert parent.info.status == "KILLED", [(r.info.run_name, r.info.status) for r in runs]
    statuses = sorted(r.info.status for r in runs if r.info.run_id != parent.info.run_id)
    assert statuses == ["FINISHED", "KILLED"], statuses


def test_resume_auto_over_only_damaged_checkpoints_is_refused_and_skips_a_bad_meta(tmp_path):
    """A checkpoint whose meta/json holds other bytes is named and skipped like any damaged one;
    when none is intact, resume=auto refuses (starting afresh over them is the user's call); the
    temporary file of a write a killed job left is removed."""
    out = tmp_path / "run"
    quick = [c for c in CFG if not c.startswith("train.epochs=")] + ["train.epochs=3", "tracking=off"]
    code, so, se = ddl_train(1, *quick, f"out_dir={out}", cwd=tmp_path)
    assert code == 0, so + se
    from ddl.checkpoint import checkpoints_newest_first

    newest, *older = checkpoints_newest_first(out)
    with np.load(newest, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["meta/json"] = np.array("not json {")
    np.savez(newest, **arrays)
    for path in older:
        path.write_bytes(b"cut")
    stale = out / "checkpoints" / f".{newest.name}.x1y2.tmp"
    stale.write_bytes(b"half a checkpoint")
    (out / "summary.json").unlink()
    (out / "final.npz").unlink()
    code, so, se = ddl_train(1, *quick, f"out_dir={out}", "checkpoint.resume=auto", cwd=tmp_path)
    text = so + se
    assert f"skipping checkpoint {newest.name}" in text and "meta/json is not JSON" in text, text
    assert code == 1 and "none is intact" in text and "Traceback" not in se, text
    assert not stale.exists() and not (out / "final.npz").exists()
