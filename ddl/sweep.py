"""`python -m ddl.sweep ...`, the building blocks of SLURM job-array sweeps (see ddl/runner/sweep.py)."""
import sys

from ddl.runner.sweep import main

if __name__ == "__main__":
    sys.exit(main())
