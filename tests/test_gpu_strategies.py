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


def test_the_pip_mpich_reports_no_cuda_support():
    from ddl.parallel import gpu   # imports mpi4py: MPI initializes in this process

    assert gpu.mpi_cuda_support() is False           # MPICH 5 exports both queries; answers 0
    if importlib.util.find_spec("cupy") is None:        # CI: no CuPy, so no NCCL either
        assert gpu.nccl_available() is False
