"""parallel/gpu.py without a GPU: the NCCL and CUDA-aware strategies are refused on every rank,
in one paragraph, before any collective (real mpiexec, real MPICH; a stand-in CuPy for NCCL)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from helpers import clean_env, mpiexec, run_cmd

SCRIPT = Path(__file__).resolve().parent / "mpi_scripts" / "refuse_strategies.py"


def launch(n: int, mode: str, **env):
    return run_cmd([mpiexec(), "-n", n, sys.executable, SCRIPT, mode], timeout=60,
                   env=clean_env(**env))


@pytest.mark.mpi
@pytest.mark.parametrize("n", [2, 3])
def test_nccl_missing_on_one_rank_is_refused_on_every_rank(n):
    code, out, err = launch(n, "nccl")
    assert code == 0, err
    lines = sorted(line for line in out.splitlines() if line.startswith("REFUSED"))
    assert [line.split(":")[0] for line in lines] == [f"REFUSED rank {r}" for r in range(n)]
    assert all("no NCCL library" in line and "rank(s) 1)" in line and "nvidia-nccl-cu" in line
               for line in lines)


@pytest.mark.mpi
def test_cuda_aware_is_refused_on_an_mpi_without_cuda_support():
    code, out, err = launch(2, "cuda_aware")
    assert code == 0, err
    lines = [line for line in out.splitlines() if line.startswith("REFUSED")]
    assert len(lines) == 2 and all("does not report CUDA support" in line and "MPICH" in line
                                   and "DDL_CUDA_AWARE_MPI=1" in line for line in lines)


@pytest.mark.mpi
def test_cuda_aware_opt_in_is_honoured():
    code, out, err = launch(2, "cuda_aware", DDL_CUDA_AWARE_MPI="1")
    assert code == 0, err
    assert out.count("BUILT") == 2 and "CudaAware" in out


@pytest.mark.mpi
@pytest.mark.parametrize("n", [1, 2])
def test_auto_is_nccl_where_every_rank_has_its_own_gpu_else_host_staging(n):
    code, out, err = run_cmd([mpiexec(), "-n", n, sys.executable, SCRIPT.with_name("auto_transport.py")],
                             timeout=60, env=clean_env())
    assert code == 0, out + err
    assert out.count(f"of {n} auto") == n, out


def test_the_pip_mpich_reports_no_cuda_support():
    from ddl.parallel import gpu   # imports mpi4py: MPI initializes in this process

    assert gpu.mpi_cuda_support() is False           # MPICH 5 exports both queries; answers 0
    if importlib.util.find_spec("cupy") is None:        # CI: no CuPy, so no NCCL either
        assert gpu.nccl_available() is False


# ---- the host's waits for the device in one training step (the budget of the GPU issue) ----------

STEP_WAITS = Path(__file__).resolve().parent / "mpi_scripts" / "step_waits.py"


def step_waits(n: int, mode: str, bn: bool) -> dict:
    """Per-step counts from a real training step on the counting twin of a GPU."""
    import json

    cmd = [sys.executable, STEP_WAITS, mode, int(bn)]
    if n:
        cmd = [mpiexec(), "-n", n, *cmd, "--mpi"]
    code, out, err = run_cmd(cmd, timeout=90, env=clean_env(DDL_CUDA_AWARE_MPI="1"))
    assert code == 0, out + err
    return json.loads(out.split("WAITS ", 1)[1].splitlines()[0])


@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("n", [0, 1])       # 0: no launcher (SerialComm); 1: MPI, world of one
def test_one_process_waits_once_per_step_and_calls_no_collective(n, bn):
    got = step_waits(n, "host", bn)
    assert got["waits_per_step"] == 1 and got["kinds"] == {"to_numpy": 6}, got   # the tail read
    assert got["collectives_per_step"] == 0 and got["routed"] == {}, got
    assert sum(got["eval_waits"].values()) == got["eval_chunks"] == 3, got   # 41 rows, chunks of 16


@pytest.mark.mpi
@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("mode", ["host", "cuda_aware", "nccl"])
def test_two_ranks_wait_once_per_step_plus_once_per_collective_not_on_the_stream(mode, bn):
    got = step_waits(2, mode, bn)
    collectives = 1 + (3 * 2 if bn else 0)    # the gradient; 3 per batch-norm layer (2 layers)
    assert got["collectives_per_step"] == collectives, got
    # NCCL is queued on the stream: only the tail read waits. Host staging and CUDA-aware MPI
    # wait once per collective (MPI knows nothing of streams), plus the tail read.
    budget = 1 if mode == "nccl" else 1 + collectives
    assert got["waits_per_step"] == budget, got
    assert not any(k.endswith("()") for k in got["kinds"]), f"an implicit host read: {got}"
    assert sum(got["eval_waits"].values()) == got["eval_chunks"] == 2, got   # ~20 rows per rank
