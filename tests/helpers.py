"""Running real processes from tests: `mpiexec -n N ddl-train ...` with a timeout that kills the
whole process group (a hung rank never outlives its test)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS_DIR = Path(__file__).resolve().parent / "mpi_scripts"
LAUNCHER_VARS = ("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL", "HYDRA_", "MV2_", "SLURM_")


def clean_env(**extra) -> dict:
    """The environment minus launcher variables (pytest itself may run under mpiexec)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(LAUNCHER_VARS) and k != "DDL_RUN_SUFFIX"}   # each run its own
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    return env


def run_cmd(cmd, timeout: float = 120, cwd=None, env=None):
    """(returncode, stdout, stderr); fails the test if it runs past `timeout`."""
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env or clean_env(), cwd=cwd, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{cmd} did not end within {timeout} s\nstdout:\n{out}\nstderr:\n{err}")
    return proc.returncode, out, err


def mpiexec() -> str:
    path = shutil.which("mpiexec")
    assert path, "mpiexec is not on PATH; it is a dependency (pip install mpich)"
    return path


def ddl_train(n: int, *overrides, cwd, timeout: float = 120, env=None, module="ddl"):
    """`mpiexec -n n python -m ddl overrides...` (n=0: plain python, no launcher)."""
    cmd = [sys.executable, "-m", module, *overrides]
    if n:
        cmd = [mpiexec(), "-n", str(n), *cmd]
    return run_cmd(cmd, timeout=timeout, cwd=cwd, env=env)


def load_final(run_dir) -> tuple[dict, dict]:
    """(arrays, meta) of a run's final.npz."""
    with np.load(Path(run_dir) / "final.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads(str(arrays.pop("meta/json")))


def newest_run_status(db: Path):
    """The status of the newest run in the SQLite store `db`, read with sqlite3 (read-only: an
    MLflow client here would race a tracking worker still creating the store); None while the
    store is not created yet or holds no run."""
    import sqlite3

    lock = db.with_name(db.name + ".lock")
    if not (lock.exists() and lock.read_text().startswith("created")):
        return None
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = con.execute("SELECT status FROM runs ORDER BY start_time DESC LIMIT 1").fetchone()
    finally:
        con.close()
    return row[0] if row else None
