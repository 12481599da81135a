"""The reliability suite: faults injected into real `mpiexec -n 3` runs through DDL_FAULT
(the failpoints of ddl/failpoints.py). Each case: the job ends within its bound, its exit status, a message naming the
cause and the rank, no corrupt file in the run directory, the MLflow run's final status."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
from mlflow import MlflowClient

from ddl.failpoints import Fault, from_env
from helpers import clean_env, ddl_train, newest_run_status

pytestmark = pytest.mark.mpi
CFG = ["data=synthetic", "data.m=3000", "data.n_x=20", "data.classes=3", "model.hidden=[32,16]",
       "train.epochs=20", "train.batch_size=50", "train.progress=false", "checkpoint.every=2"]


def no_corrupt_file(run_dir) -> None:
    for path in run_dir.rglob("*"):
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                [z[k] for k in z.files]
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path


def the_run(uri: str, settle: float = 30.0):
    """The one MLflow run of the store, waited for (up to `settle` seconds) until it is no longer
    RUNNING: the job's tracking worker ends a run its job could not end just after the job (and a
    job that died within seconds of its start may leave the worker still creating the store: it
    is read with an MLflow client once the worker has)."""
    from pathlib import Path

    deadline = time.monotonic() + settle
    while newest_run_status(Path(uri[len("sqlite:///"):])) in (None, "RUNNING") and time.monotonic() < deadline:
        time.sleep(0.3)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("ddl").experiment_id])
    return run


def run_with(tmp_path, fault: str, timeout: float = 120, settle: float = 30.0):
    out, uri = tmp_path / "run", f"sqlite:///{tmp_path / 'mlflow.db'}"
    started = time.monotonic()
    code, so, se = ddl_train(3, *CFG, f"tracking.uri={uri}", f"out_dir={out}", cwd=tmp_path,
                             timeout=timeout, env=clean_env(DDL_FAULT=fault))
    seconds = time.monotonic() - started
    run = the_run(uri, settle)
    no_corrupt_file(out)
    print(f"{fault}: exit {code} after {seconds:.1f} s, MLflow {run.info.status}")
    return code, so + se, run, out


def test_an_exception_on_rank_1_mid_epoch_names_it_and_fails_the_mlflow_run(tmp_path):
    code, text, run, out = run_with(tmp_path, "raise@rank=1,step=70")
    assert code != 0 and "[rank 1] RuntimeError: injected fault" in text, text
    assert "application called MPI_Abort" not in text, text       # ddl's paragraph says it all
    assert "train.rank1.log" in text and "injected fault" in (out / "train.rank1.log").read_text()
    assert run.info.status == "FAILED" and "[rank 1]" in run.data.tags["ddl.error"]


def test_a_nan_on_rank_2_stops_every_rank_at_that_step(tmp_path):
    code, text, run, out = run_with(tmp_path, "nan@rank=2,step=30")
    assert code == 1 and text.count("became NaN/Inf") == 1, text
    assert run.info.status == "FAILED"


@pytest.mark.parametrize("fault, rank", [("raise@rank=1,step=0", 1),     # at start-up: the first step
                                         ("raise@rank=2,eval=3", 2),     # during an evaluation
                                         ("raise@rank=1,checkpoint=4", 1)])   # while rank 0 writes
def test_an_exception_on_one_rank_anywhere_names_it_and_fails_the_run(tmp_path, fault, rank):
    code, text, run, out = run_with(tmp_path, fault)
    assert code != 0 and f"[rank {rank}] RuntimeError: injected fault" in text, text
    assert run.info.status == "FAILED" and f"[rank {rank}]" in run.data.tags["ddl.error"]


def test_an_exception_while_rank_0_writes_a_checkpoint_leaves_no_part_of_it(tmp_path):
    code, text, run, out = run_with(tmp_path, "raise@rank=0,checkpoint=4")
    assert code == 1 and "RuntimeError: injected fault" in text, text
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["ckpt-e000002-s000000.npz"], names     # the one before: whole; no temporary
    assert run.info.status == "FAILED" and "injected fault" in run.data.tags["ddl.error"]


def test_a_rank_that_dies_ends_the_job_and_its_run(tmp_path):
    code, text, run, out = run_with(tmp_path, "exit@rank=2,step=30", settle=30)
    assert code != 0                                  # within the timeout: no hang
    assert run.info.status == "FAILED", run.info      # by the tracking worker: rank 0 died with it
    assert "a rank was killed" in run.data.tags["ddl.error"] and "checkpoint.resume=auto" in \
        run.data.tags["ddl.error"]


def start_job(tmp_path, n: int = 3, *extra):
    """A tracked n-rank job in the background, and its ranks' pids once every one has started."""
    import subprocess
    import sys

    from helpers import mpiexec

    out = tmp_path / "run"
    cmd = [mpiexec(), "-n", str(n), sys.executable, "-m", "ddl", *CFG, "train.epochs=400",
           f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}", f"out_dir={out}", *extra]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not list((out / "checkpoints").glob("ckpt-*.npz")) if (out / "checkpoints").exists() else True:
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[0]
        time.sleep(0.1)
    pids = rank_pids(out)
    assert sorted(pids) == list(range(n)), pids
    return proc, pids, out


@pytest.mark.parametrize("rank", [0, 1])
def test_sigkill_of_a_rank_ends_the_job_at_once_and_its_run_failed(tmp_path, rank):
    import os
    import signal

    proc, pids, out = start_job(tmp_path)
    killed = time.monotonic()
    os.kill(pids[rank], signal.SIGKILL)
    text = proc.communicate(timeout=60)[0]
    seconds = time.monotonic() - killed
    run = the_run(f"sqlite:///{tmp_path / 'mlflow.db'}", settle=30)
    ended = time.monotonic() - killed
    print(f"SIGKILL rank {rank}: exit {proc.returncode} after {seconds:.1f} s, MLflow {run.info.status} "
          f"after {ended:.1f} s")
    assert proc.returncode != 0 and seconds < 10, text
    assert run.info.status == "FAILED" and "a rank was killed" in run.data.tags["ddl.error"], run.info
    assert "marked FAILED" in (out / "train.log").read_text()
    no_corrupt_file(out)


def test_sigterm_to_one_rank_stops_every_rank_at_one_step_with_a_checkpoint(tmp_path):
    import os
    import signal

    proc, pids, out = start_job(tmp_path)
    signalled = time.monotonic()
    os.kill(pids[2], signal.SIGTERM)
    text = proc.communicate(timeout=60)[0]
    seconds = time.monotonic() - signalled
    print(f"SIGTERM rank 2: exit {proc.returncode} after {seconds:.1f} s")
    assert proc.returncode == 75 and seconds < 10, text
    assert "stopped by a signal" in text and "checkpoint.resume=auto" in text, text
    (stop,) = [p for p in (out / "checkpoints").glob("ckpt-*.npz") if "-s000000" not in p.name]
    no_corrupt_file(out)
    assert the_run(f"sqlite:///{tmp_path / 'mlflow.db'}").info.status == "KILLED"


@pytest.mark.parametrize("value, fault", [
    ("raise@rank=1,step=70", Fault("raise", 1, 70)), ("stall=2.5@rank=0,step=3", Fault("stall", 0, 3, 2.5)),
    ("", None)])
def test_the_fault_variable_parses(monkeypatch, value, fault):
    monkeypatch.setenv("DDL_FAULT", value)
    assert from_env() == fault


def test_a_bad_fault_variable_is_refused(monkeypatch):
    monkeypatch.setenv("DDL_FAULT", "explode@rank=1")
    with pytest.raises(ValueError, match="DDL_FAULT='explode@rank=1'"):
        from_env()


def rank_pids(out) -> dict:
    """{rank: pid} of the ranks of the job writing `out` (their command line names it)."""
    import os
    from pathlib import Path

    found = {}
    for proc in Path("/proc").iterdir():
        try:
            if str(out) in (proc / "cmdline").read_bytes().decode(errors="replace"):
                env = dict(kv.split("=", 1) for kv in (proc / "environ").read_bytes().decode(
                    errors="replace").split("\0") if "=" in kv)
                if "PMI_RANK" in env:
                    found[int(env["PMI_RANK"])] = int(proc.name)
        except (OSError, ValueError):
            continue
    assert os.getpid() not in found.values()
    return found


def cpu_seconds(pid: int) -> float:
    import os
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize("step", ["train.shard_optimizer=off", "train.shard_optimizer=on"])
def test_a_stalled_rank_is_named_and_the_others_wait_without_spinning(tmp_path, step):
    """Rank 1 stalls 8 s at step 30 (stall_timeout 2 s): rank 0 names it, the waiting rank uses
    well under a core, and when it comes back the run finishes as usual. Two ranks: on this
    2-core machine three would be more ranks than cores, where ddl keeps the blocking allreduce.
    Sharded, the ranks wait in the shared-memory step's tail allreduce and barrier instead."""
    import subprocess
    import sys

    from helpers import mpiexec

    out = tmp_path / "run"
    cmd = [mpiexec(), "-n", "2", sys.executable, "-m", "ddl", *CFG, "tracking=off",
           "train.stall_timeout=2", step, f"out_dir={out}"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=clean_env(DDL_FAULT="stall=8@rank=1,step=30"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while len(pids := rank_pids(out)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    log = out / "train.log"
    while not (log.exists() and "stalled:" in log.read_text()):    # until rank 0 names the stall
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[0]
        time.sleep(0.1)
    before = {r: cpu_seconds(p) for r, p in pids.items() if r != 1}
    time.sleep(3.0)
    used = {r: (cpu_seconds(p) - before[r]) / 3.0 for r, p in pids.items() if r != 1}
    text = proc.communicate(timeout=120)[0]
    print(f"CPU share of the waiting ranks during the stall: {used}")
    assert proc.returncode == 0, text
    assert "rank(s) [1] have not arrived" in text and "train.on_stall=wait" in text, text
    assert all(share < 0.3 for share in used.values()), used        # a spinning rank shows ~1.0
    assert ("through the node's shared memory" in text) == step.endswith("on"), text
    assert json.loads((out / "summary.json").read_text())["epochs_run"] == 20


def test_on_stall_abort_checkpoints_the_last_consistent_state_and_ends_the_job(tmp_path):
    started = time.monotonic()
    code, so, se = ddl_train(2, *CFG, f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
                             "train.stall_timeout=2", "train.on_stall=abort",
                             f"out_dir={tmp_path / 'run'}", cwd=tmp_path, timeout=120,
                             env=clean_env(DDL_FAULT="stall=60@rank=1,step=30"))
    seconds = time.monotonic() - started
    text = so + se
    print(f"on_stall=abort: exit {code} after {seconds:.1f} s")
    assert code != 0 and seconds < 50, text                      # not the 60 s of the stall
    assert "StalledError" in text and "rank(s) [1] did not arrive" in text, text
    stall = list((tmp_path / "run" / "checkpoints").glob("ckpt-*.npz"))
    assert any("s000030" in p.name or "e000001" in p.name for p in stall), stall
    no_corrupt_file(tmp_path / "run")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("ddl").experiment_id])
    assert run.info.status == "FAILED" and "StalledError" in run.data.tags["ddl.error"]


def test_sigkill_of_a_sweep_leaves_neither_its_parent_nor_its_point_running(tmp_path):
    import signal
    import subprocess
    import sys

    sweep, uri = tmp_path / "sweep", f"sqlite:///{tmp_path / 'mlflow.db'}"
    points = [c for c in CFG if not c.startswith("train.epochs")]
    proc = subprocess.Popen([sys.executable, "-m", "ddl", "-m", "train.epochs=2,400", *points,
                             f"tracking.uri={uri}", f"hydra.sweep.dir={sweep}"], cwd=tmp_path,
                            env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 90
    while not list(sweep.glob("1/checkpoints/ckpt-*.npz")):      # the second point is training
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[0]
        time.sleep(0.1)
    killed = time.monotonic()
    proc.kill()
    proc.communicate(timeout=30)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("ddl").experiment_id
    while any(r.info.status == "RUNNING" for r in client.search_runs([experiment])) \
            and time.monotonic() < killed + 30:
        time.sleep(0.5)
    runs = {r.info.run_name: r.info.status for r in client.search_runs([experiment])}
    print(f"SIGKILL of a sweep: every run ended after {time.monotonic() - killed:.1f} s: {runs}")
    assert sorted(runs.values()) == ["FAILED", "FAILED", "FINISHED"], runs   # parent, point 2, point 1
    assert proc.returncode == -signal.SIGKILL


def test_sigterm_to_every_process_of_the_job_leaves_the_run_killed_with_its_metrics(tmp_path):
    # what a plain scancel does: every process of the job, the tracking worker included, gets
    # SIGTERM; the ranks stop at one step with a checkpoint, the worker delivers the end
    import os
    import signal

    import psutil

    proc, pids, out = start_job(tmp_path, 2)
    workers = [c.pid for c in psutil.Process(pids[0]).children() if "ddl.tracking.worker" in " ".join(c.cmdline())]
    assert len(workers) == 1, workers
    for pid in [*pids.values(), *workers]:
        os.kill(pid, signal.SIGTERM)
    text = proc.communicate(timeout=60)[0]
    assert proc.returncode == 75, text
    run = the_run(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert run.info.status == "KILLED", run.info
    assert MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_metric_history(run.info.run_id, "cost/train")
