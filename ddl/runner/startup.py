"""What a ddl process knows before MPI starts: whether the launcher made it the first rank, and
that a stop signal while it is still starting ends it with one line. Imports nothing heavy:
ddl/__main__.py installs this first, before Hydra, NumPy and mpi4py load."""
from __future__ import annotations

import os
import signal

RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")


def first_rank(environ=os.environ) -> bool:
    """Whether the launcher (mpiexec, srun) made this process rank 0, or none did."""
    return all(environ.get(v, "0") == "0" for v in RANK_VARIABLES)


def _stopped_early(signum, _frame) -> None:
    """One line (from the first rank) and 128 + the signal, not a process killed mid-import."""
    if first_rank():
        print(f"ddl: stopped by {signal.Signals(signum).name} before training started; nothing to "
              "resume", flush=True)
    raise SystemExit(128 + signum)


def install_startup_handlers() -> None:
    """Until training starts (ddl.parallel.signals then takes over), SIGTERM/SIGUSR1 end the
    process with one line, not silently and not with a launcher's crash report."""
    for s in (signal.SIGUSR1, signal.SIGTERM):
        signal.signal(s, _stopped_early)
