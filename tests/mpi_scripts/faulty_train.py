"""`ddl-train` with a fault injected on ONE rank: usage
    faulty_train.py RANK CALL KIND [overrides...]
KIND "raise": that rank's CALL-th training batch read raises RuntimeError("injected fault");
KIND "nan":   that batch's features are NaN on that rank only.
"""
import sys

import numpy as np

from ddl.data import splits

RANK, CALL, KIND = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
sys.argv = [sys.argv[0], *sys.argv[4:]]
_take, calls = splits.Split.take, {"n": 0}


def take(self, idx):
    from mpi4py import MPI

    X, y = _take(self, idx)
    if MPI.COMM_WORLD.rank == RANK and len(idx) and len(idx) < 1000:  # training batches only
        calls["n"] += 1
        if calls["n"] == CALL:
            if KIND == "raise":
                raise RuntimeError("injected fault")
            X = np.full_like(X, np.nan)
    return X, y


splits.Split.take = take

from ddl.cli import main  # noqa: E402

main()
