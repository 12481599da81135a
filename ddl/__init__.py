"""ddl: the Deep Learning Specialization's networks, trained data-parallel on MPI.

In Python (a notebook): `ddl.run("experiment=football_l2")`, `ddl.sweep("optimizer=gd,adam")`
(ddl/api.py). They load on first use, so `import ddl` stays light (no Hydra, no MLflow).
"""

__version__ = "0.1.0"
__all__ = ["Result", "RunFailed", "SweepResult", "run", "sweep"]


def __getattr__(name: str):
    if name == "sweep":          # the module ddl.sweep (python -m ddl.sweep), callable as ddl.api.sweep
        import importlib

        return importlib.import_module("ddl.sweep")
    if name in ("run", "Result", "RunFailed", "SweepResult"):
        from ddl import api

        return getattr(api, name)
    raise AttributeError(f"module 'ddl' has no attribute {name!r}")
