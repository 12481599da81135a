"""ddl: the Deep Learning Specialization's networks, trained data-parallel on MPI.

In Python (a notebook): `ddl.run("experiment=football_l2")`, `ddl.sweep("optimizer=gd,adam")`
(plain functions of ddl/api.py), `ddl.predict.load("runs/.../final.npz")`. They load on first
use, so `import ddl` stays light (no Hydra, no MLflow).
"""

__version__ = "0.1.0"
__all__ = ["Result", "RunFailed", "SweepResult", "predict", "run", "sweep"]


def __getattr__(name: str):
    if name in ("run", "sweep", "Result", "RunFailed", "SweepResult"):
        from ddl import api

        return getattr(api, name)
    if name == "predict":
        import importlib

        return importlib.import_module("ddl.predict")
    raise AttributeError(f"module 'ddl' has no attribute {name!r}")
