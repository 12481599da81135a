"""`ddl-train` and `python -m ddl [overrides]`: a tracked run's MLflow worker first, then everything else.

The tracking worker (ddl/tracking/worker.py) needs ~1.5 s to import MLflow and open its store,
and a short tracked run ends when it has; importing Hydra, NumPy, mpi4py and ddl's runner takes
~0.25 s more before `ddl.cli.main` could start it. So this module, which imports next to nothing,
starts it first, on rank 0 only (as far as the launcher's environment says: the MPI rank is not
known before MPI starts), and hands it to `ddl.cli.main`, which starts it otherwise, once it knows
the rank.
"""
from __future__ import annotations

import os
import signal
import sys


def _stopped_early(signum, _frame) -> None:
    """A stop signal while ddl-train is still starting (before ddl.cli installs its own handlers):
    one line (from the first rank) and 128 + the signal, not a process killed mid-import."""
    if first_rank():
        print(f"ddl: stopped by {signal.Signals(signum).name} before training started; nothing to "
              "resume", flush=True)
    raise SystemExit(128 + signum)

RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")


def first_rank(environ=os.environ) -> bool:
    """Whether the launcher (mpiexec, srun) made this process rank 0, or none did."""
    return all(environ.get(v, "0") == "0" for v in RANK_VARIABLES)


def main() -> None:
    for stop in (signal.SIGTERM, signal.SIGUSR1):    # first of all: Hydra, NumPy and MPI load next
        signal.signal(stop, _stopped_early)
    link = None
    if first_rank():
        from ddl.tracking import link as tracking_link

        if tracking_link.worth_prewarming(sys.argv[1:]):
            link = tracking_link.Link.start()
    from ddl.cli import main as cli_main

    cli_main(link=link)


if __name__ == "__main__":
    main()
