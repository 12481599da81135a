"""`ddl-train` and `python -m ddl [overrides]`: a tracked run's MLflow worker first, then everything else.

The tracking worker (ddl/tracking/worker.py) needs ~1.5 s to import MLflow and open its store,
and a short tracked run ends when it has; importing Hydra, NumPy, mpi4py and ddl's runner takes
~0.25 s more before `ddl.cli.main` could start it. So this module, which imports next to nothing,
starts it first, on rank 0 only (as far as the launcher's environment says: the MPI rank is not
known before MPI starts), and hands it to `ddl.cli.main`, which starts it otherwise, once it knows
the rank.
"""
from __future__ import annotations

import sys

from ddl.runner.startup import first_rank, install_startup_handlers


def main() -> None:
    install_startup_handlers()         # first of all: Hydra, NumPy and MPI load next
    link = None
    if first_rank():
        from ddl.tracking import link as tracking_link

        if tracking_link.worth_prewarming(sys.argv[1:]):
            link = tracking_link.Link.start()
    from ddl.cli import main as cli_main

    cli_main(link=link)


if __name__ == "__main__":
    main()
