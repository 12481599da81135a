"""`python -m ddl.sweep ...`, the building blocks of SLURM job-array sweeps (see ddl/run/sweep.py)."""
import sys

from ddl.run.sweep import main

if __name__ == "__main__":
    sys.exit(main())
