"""`python -m ddl.sweep ...`, the building blocks of SLURM job-array sweeps (see ddl/runner/grid.py),
and, called, `ddl.sweep("optimizer=gd,adam", ...)`: a whole sweep from Python (ddl.api.sweep)."""
import sys
import types

from ddl.runner.grid import main


class _CallableModule(types.ModuleType):
    """`ddl.sweep` is both this module and the notebook's sweep function."""

    def __call__(self, *overrides, **options):
        from ddl.api import sweep

        return sweep(*overrides, **options)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
