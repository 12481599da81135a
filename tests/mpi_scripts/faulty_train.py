"""`ddl-train` with a fault injected on ONE rank: usage
    faulty_train.py RANK CALL KIND [overrides...]
KIND "raise": that rank's CALL-th training batch raises RuntimeError("injected fault");
KIND "nan":   that batch's features are NaN on that rank only.
"""
import sys

from ddl.data import feed

RANK, CALL, KIND = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
sys.argv = [sys.argv[0], *sys.argv[4:]]
_batch, calls = feed.Feeder.batch, {"n": 0}


def batch(self, idx):
    from mpi4py import MPI

    X, y = _batch(self, idx)
    if MPI.COMM_WORLD.rank == RANK and 0 < len(idx) < 1000:  # training batches only
        calls["n"] += 1
        if calls["n"] == CALL:
            if KIND == "raise":
                raise RuntimeError("injected fault")
            X = X * float("nan")
    return X, y


feed.Feeder.batch = batch

from ddl.cli import main  # noqa: E402

main()
