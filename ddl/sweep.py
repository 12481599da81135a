"""`python -m ddl.sweep count|point|logspace|parent|end ...`: the building blocks of SLURM job-array
sweeps (ddl/runner/grid.py), under the name slurm/ and users' batch scripts call. In Python,
`ddl.sweep(...)` is the notebook's sweep (ddl/api.py); this module is only ever run, never imported.
"""
if __name__ == "__main__":
    import sys

    from ddl.runner.grid import main

    sys.exit(main())
