"""ddl.parallel: SerialComm in process, MPIComm under real `mpiexec -n 1/2/3` runs of tests/mpi_scripts.

The MPI scripts assert values computed from the world size (they hold at any size) and print one
"OK rank R of N" line per rank; a failed assert aborts the job with a non-zero status.
"""
import io
import logging
import os
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from ddl.backend import gpu_count
from ddl.parallel import SerialComm, get_comm
from ddl.runner.logs import setup_logging
from helpers import clean_env, mpiexec, run_cmd

SCRIPTS = Path(__file__).parent / "mpi_scripts"
TIMEOUT = 30.0


def run(cmd, timeout=TIMEOUT):
    """(returncode, stdout, stderr) of `cmd` in its own process group, killed on timeout."""
    return run_cmd(cmd, timeout=timeout)


def mpirun(n, script, *args, timeout=TIMEOUT, env=None):
    return run_cmd([mpiexec(), "-n", str(n), sys.executable, str(SCRIPTS / script), *args],
                   timeout=timeout, env=clean_env(**(env or {})))


# ---- SerialComm ------------------------------------------------------------------------------

def test_serial_collectives_are_identity_and_count():
    comm = get_comm("serial")
    assert isinstance(comm, SerialComm)
    assert (comm.rank, comm.size, comm.local_rank, comm.local_size) == (0, 1, 0, 1)
    buf = np.arange(4.0)
    assert comm.allreduce_sum(buf) is buf
    np.testing.assert_array_equal(buf, np.arange(4.0))
    comm.allreduce_sum(buf, tag="grad")
    a, b = comm.reduce_list([np.ones((2, 1)), np.full(3, 2.0)])
    assert a.shape == (2, 1) and b.shape == (3,)
    np.testing.assert_array_equal(b, np.full(3, 2.0))
    assert comm.allreduce_count == 3 and comm.counts == {"grad": 2, "bn": 1}
    assert comm.allreduce_time > 0.0
    assert comm.bcast({"lr": 0.1}) == {"lr": 0.1} and comm.allreduce_obj(7, op="max") == 7
    assert comm.bcast_array(buf) is buf
    comm.barrier()
    comm.reset_counters()
    assert comm.allreduce_count == 0 and comm.counts == {} and comm.allreduce_time == 0.0


def test_serial_reduce_list_keeps_strict_arrays():
    import array_api_strict as xp

    out = SerialComm().reduce_list([xp.ones((2, 1)), xp.zeros((1,))])
    assert all(type(o).__module__.startswith("array_api_strict") for o in out)
    assert out[0].shape == (2, 1) and out[1].shape == (1,)


@pytest.mark.parametrize("call, message", [
    (lambda c: c.allreduce_sum(np.ones((2, 2))), "flat 1-D"),
    (lambda c: c.bcast({}, root=1), "root must be"),
    (lambda c: c.allreduce_obj(1, op="prod"), "op must be"),
    (lambda c: get_comm("tcp"), "kind must be"),
    (lambda c: get_comm("serial", allreduce="gloo"), "allreduce must be"),
])
def test_bad_arguments_raise_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call(SerialComm())


def test_missing_mpi4py_falls_back_to_serial_with_warning(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.warns(RuntimeWarning, match="mpi4py"):
        assert isinstance(get_comm("auto"), SerialComm)
    with pytest.raises(RuntimeError, match="mpi4py"):
        get_comm("mpi")
    monkeypatch.setenv("PMI_SIZE", "3")  # launched as 3 ranks: running alone would be wrong
    with pytest.raises(RuntimeError, match="3 ranks were launched"):
        get_comm("auto")


# ---- logging and abort (in process / plain python) -------------------------------------------

@pytest.fixture
def ddl_logger():
    """Restore the "ddl" logger afterwards, so other test files see it untouched."""
    logger = logging.getLogger("ddl")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield logger
    logger.handlers[:], logger.level, logger.propagate = saved


def test_logging_rank0_info_others_warning_with_prefix(ddl_logger):
    s0, s1 = io.StringIO(), io.StringIO()
    setup_logging(SimpleNamespace(rank=0, size=3), "INFO", stream=s0)
    logging.getLogger("ddl.x").info("hello")
    setup_logging(SimpleNamespace(rank=1, size=3), "INFO", stream=s1)
    log = logging.getLogger("ddl.x")
    log.info("hidden")
    log.warning("careful")
    assert s0.getvalue().startswith("[rank 0] ") and "INFO ddl.x: hello" in s0.getvalue()
    assert "hidden" not in s1.getvalue() and "hello" not in s1.getvalue()
    assert s1.getvalue().startswith("[rank 1] ") and "WARNING ddl.x: careful" in s1.getvalue()
    s2 = io.StringIO()
    setup_logging(SimpleNamespace(rank=0, size=1), "DEBUG", stream=s2)
    log.debug("solo")
    assert s2.getvalue().split(" ", 1)[1] == "DEBUG ddl.x: solo\n"  # no prefix at size 1
    with pytest.raises(ValueError, match="log level"):
        setup_logging(SerialComm(), "LOUD")


def test_serial_abort_handler_and_abort_exit_codes():
    code = ("from ddl.parallel import SerialComm, install_abort_handler\n"
            "install_abort_handler(SerialComm())\nraise KeyError('no such layer')\n")
    rc, _, err = run([sys.executable, "-c", code])
    assert rc == 1 and "[rank 0] KeyError: 'no such layer'" in err and "Traceback" in err
    rc, out, _ = run([sys.executable, "-c", "from ddl.parallel import SerialComm\n"
                      "print('before', flush=True)\nSerialComm().abort(3)\nprint('after')"])
    assert rc == 3 and out == "before\n"


# ---- real MPI --------------------------------------------------------------------------------

def test_auto_without_launcher_is_mpi_singleton():
    rc, out, err = run([sys.executable, str(SCRIPTS / "collectives.py")])
    assert rc == 0, err
    assert out.split() == ["OK", "rank", "0", "of", "1", "MPIComm"]


@pytest.mark.mpi
@pytest.mark.parametrize("n", [1, 2, 3])
def test_collectives_under_mpiexec(n):
    rc, out, err = mpirun(n, "collectives.py")
    assert rc == 0, f"stdout:\n{out}\nstderr:\n{err}"
    # Ranks share one pipe, so lines may interleave: match the records, not whole lines.
    ok = sorted(re.findall(r"OK rank (\d+) of (\d+) MPIComm", out))
    assert ok == [(str(r), str(n)) for r in range(n)], out


@pytest.mark.mpi
def test_exception_on_one_rank_aborts_all_quickly():
    start = time.monotonic()
    rc, out, err = mpirun(3, "abort_rank1.py")
    elapsed = time.monotonic() - start
    assert rc != 0 and elapsed < TIMEOUT, (rc, elapsed)
    assert "[rank 1] RuntimeError: deliberate failure on rank 1" in err, err
    assert "passed the allreduce" not in out


@pytest.mark.mpi
def test_logging_under_mpiexec():
    rc, _, err = mpirun(2, "log_ranks.py")
    assert rc == 0, err
    lines = err.replace("[rank", "\n[rank").splitlines()
    assert any(x.startswith("[rank 0]") and "INFO ddl.test: info from 0" in x for x in lines), err
    assert any(x.startswith("[rank 1]") and "WARNING ddl.test: warning from 1" in x for x in lines)
    assert "info from 1" not in err


@pytest.mark.mpi
@pytest.mark.parametrize("mode", ["host", "cuda_aware", "nccl"])
def test_gpu_strategies_on_a_counting_twin_of_the_device(mode):
    rc, out, err = mpirun(2, "fake_device.py", mode, env={"DDL_CUDA_AWARE_MPI": "1"})
    assert rc == 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert out.count(f"fake-device {mode}") == 2, out


def _gpu_skip(mode):
    if mode == "cuda_aware" and os.environ.get("DDL_CUDA_AWARE_MPI") != "1":
        return "needs a CUDA-aware MPI (pip wheels are not); set DDL_CUDA_AWARE_MPI=1 to run"
    if mode == "nccl":
        from cupy.cuda import nccl

        if not nccl.available or gpu_count() < 2:
            return "NCCL needs cupy built with NCCL and one GPU per rank (2 GPUs)"
    return None


@pytest.mark.gpu
@pytest.mark.mpi
@pytest.mark.skipif(gpu_count() == 0, reason="no CUDA GPU visible (CuPy missing or no device)")
@pytest.mark.parametrize("mode", ["host", "cuda_aware", "nccl"])
def test_gpu_allreduce_under_mpiexec(mode):
    reason = _gpu_skip(mode)
    if reason:
        pytest.skip(reason)
    rc, out, err = mpirun(2, "gpu_allreduce.py", mode)
    assert rc == 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert out.count("OK rank") == 2 and f"of 2 {mode}" in out, out



@pytest.mark.mpi
def test_an_mpi_library_that_does_not_load_is_one_paragraph_under_mpiexec_and_no_obstacle_alone(tmp_path):
    env = clean_env(MPI4PY_LIBMPI=str(tmp_path / "nonexistent" / "libmpi.so.12"))
    code, out, err = run_cmd([mpiexec(), "-n", 2, sys.executable, "-m", "ddl", "train.epochs=2", "tracking=off",
                              f"out_dir={tmp_path / 'two'}"], env=env, cwd=tmp_path, timeout=60)
    assert code == 1, out + err
    assert err.count("ddl: error: MPI is needed here (2 ranks were launched)") == 1, err
    assert "MPI4PY_LIBMPI" in err and "Traceback" not in err and not (tmp_path / "two").exists(), err
    code, out, err = run_cmd([sys.executable, "-m", "ddl", "train.epochs=2", "tracking=off",
                              f"out_dir={tmp_path / 'one'}"], env=env, cwd=tmp_path, timeout=120)
    assert code == 0, err
    assert err.startswith("ddl: warning: MPI is not available here") and "Traceback" not in err, err
    assert (tmp_path / "one" / "final.npz").is_file()


@pytest.mark.mpi
def test_a_node_whose_shared_memory_mpi_cannot_start_in_is_one_paragraph(tmp_path):
    # a private mount namespace with a 4 MiB /dev/shm: MPICH would die of SIGBUS at start-up
    script = (f"mount -t tmpfs -o size=4m tmpfs /dev/shm && exec {mpiexec()} -n 2 {sys.executable} -m ddl "
              f"train.epochs=1 tracking=off out_dir={tmp_path / 'run'}")
    code, out, err = run_cmd(["unshare", "-m", "sh", "-c", script], timeout=60, env=clean_env())
    assert code == 1, out + err
    assert err.count("ddl: error: the node's shared memory (/dev/shm) has 4 MiB free") == 1, err
    assert "--shm-size" in err and "signal" not in out + err and not (tmp_path / "run").exists()


def test_the_shared_memory_asked_for_grows_with_the_ranks_on_a_node(tmp_path):
    from ddl.parallel import shared_memory_problem

    assert shared_memory_problem({}) == ""                                        # not launched
    assert shared_memory_problem({"PMI_SIZE": "2", "MPI_LOCALNRANKS": "1"}) == ""  # alone on its node
    assert shared_memory_problem({"MPI_LOCALNRANKS": "2"}, shm=str(tmp_path / "none")) == ""
    assert "needs about 32 MiB for the 2 ranks" in shared_memory_problem({"MPI_LOCALNRANKS": "2"}, shm="/proc")
    assert "needs about 64 MiB for the 8 ranks" in shared_memory_problem({"PMI_SIZE": "8"}, shm="/proc")
    assert shared_memory_problem({"MPI_LOCALNRANKS": "8"}, shm=str(tmp_path)) == ""   # a disk with room
