"""Data-parallel communication: the only package that imports mpi4py.

    comm = get_comm("auto")                   # the process's: MPIComm under MPI, else SerialComm
    run = comm.for_run(backend, "host", StallPolicy(120, "wait"))   # a run's, built once
    run.allreduce_sum(grads.buf, tag="grad")  # one in-place sum of the flat gradient buffer
"""
from __future__ import annotations

import os
import warnings

from ddl.parallel.comm import MODES, Comm, SerialComm, StalledError, StallPolicy, check_mode
from ddl.parallel.abort import install_abort_handler

KINDS = ("auto", "mpi", "serial")
# Set by MPICH/Intel MPI (Hydra), Open MPI and MVAPICH launchers for every rank they start.
_LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")

__all__ = ["KINDS", "MODES", "Comm", "MPIUnavailable", "SerialComm", "shared_memory_problem", "StallPolicy", "StalledError", "get_comm",
           "install_abort_handler", "launcher_size"]


def get_comm(kind: str = "auto", backend=None, allreduce: str = "auto", stall=None) -> Comm:
    """Build the process's communicator.

    kind: "auto" = MPI when mpi4py imports (world size 1 is fine), else serial with a warning;
    "mpi" = MPI or an error; "serial" = SerialComm. `backend` (a ddl.backend.Backend; None: NumPy)
    and `allreduce` ("auto" | "host" | "cuda_aware" | "nccl": how CuPy arrays are reduced) fix the transport
    of its collectives; `stall` its StallPolicy. The usual order is this comm first (for
    `local_rank`), then `get_backend(name, comm.local_rank)`, then `comm.for_run(backend, ...)`.
    """
    if kind not in KINDS:
        raise ValueError(f"comm kind must be one of {KINDS}, got {kind!r}")
    check_mode(allreduce)
    if kind == "serial":
        return SerialComm(stall)
    try:
        from mpi4py import MPI  # noqa: F401, PLC0415 - importing is the availability check
    except (ImportError, RuntimeError, OSError) as err:   # RuntimeError: mpi4py found no libmpi
        why = " ".join(str(err).split()) or type(err).__name__
        if kind == "mpi" or launcher_size() > 1:
            # Several ranks each training alone would silently give wrong results.
            raise MPIUnavailable(
                f"MPI is needed here ({launcher_size()} ranks were launched{', kind=mpi' if kind == 'mpi' else ''}) "
                f"but it does not load: {why}. mpi4py loads the MPI library of the mpich wheel that "
                "ddl depends on (pip install mpich), or the one MPI4PY_LIBMPI names; launch with "
                "that install's mpiexec, or run without mpiexec as one process.") from None
        warnings.warn(f"MPI is not available here (mpi4py: {why}); running as one process (SerialComm)",
                      RuntimeWarning, stacklevel=2)
        return SerialComm(stall)
    from ddl.parallel.mpi import MPIComm  # noqa: PLC0415 - imports mpi4py, which initializes MPI

    return MPIComm(backend=backend, allreduce=allreduce, stall=stall)


# MPICH keeps its ranks' mailboxes and collective buffers in the node's /dev/shm, and with too
# little there it dies of SIGBUS or SIGSEGV, or hangs, before ddl could say anything. Measured here
# (1 MiB to 32 MiB, 2 to 4 ranks): erratic up to 24 MiB, sound from 32 MiB; ddl asks for 32 MiB, and
# 8 MiB a rank beyond 4 ranks.
SHM_MIN, SHM_PER_RANK = 32 << 20, 8 << 20
_LOCAL_SIZE_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE")


def shared_memory_problem(environ=os.environ, shm: str = "/dev/shm") -> str:
    """Before MPI starts: why the node's shared memory cannot hold MPI's ranks here ('' if it
    can, or when this process is not one of several ranks on a node)."""
    local = next((int(environ[v]) for v in _LOCAL_SIZE_VARS if environ.get(v, "").isdigit()), None)
    local = local if local is not None else launcher_size(environ)
    if local <= 1:
        return ""
    try:
        st = os.statvfs(shm)
    except OSError:
        return ""                 # no /dev/shm: MPI does not use one here
    free, need = st.f_bavail * st.f_frsize, max(SHM_MIN, SHM_PER_RANK * local)
    if free >= need:
        return ""
    return (f"the node's shared memory ({shm}) has {free / 2**20:.0f} MiB free, and MPI needs about "
            f"{need >> 20} MiB for the {local} ranks started on this node (with less it dies at "
            "start-up, of SIGBUS or SIGSEGV, or hangs). Give it more (a container: --shm-size=256m; a tmpfs: a larger "
            "size=), or start fewer ranks on a node.")


class MPIUnavailable(RuntimeError):
    """Ranks were launched, or MPI was asked for, and the MPI library does not load."""


def launcher_size(environ=os.environ) -> int:
    """World size announced by an MPI launcher's environment (1 when not launched by one)."""
    for var in _LAUNCHER_SIZE_VARS:
        if environ.get(var, "").isdigit():
            return int(environ[var])
    return 1
