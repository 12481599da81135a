"""Evaluation of a split in inference mode (no dropout, batch-norm running statistics), exact
across ranks: every rank sums loss and correct predictions over its rows, one allreduce adds them."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ddl.data.shard import eval_shard
from ddl.nn import model

if TYPE_CHECKING:  # the loop imports this module: no import cycle at run time
    from ddl.train.state import Setup, TrainState


def evaluate_split(setup: Setup, state: TrainState, split):
    """Exact global (cost, error) of a split: per-rank sums reduced, never per-rank means."""
    if split is None or split.m == 0:
        return math.nan, math.nan
    backend, comm, cfg = setup.backend, setup.comm, setup.cfg
    rows, sums = eval_shard(split.m, comm.rank, comm.size), np.zeros(3)
    for a in range(0, len(rows), cfg.eval_batch):
        X, y = setup.batch(split, rows[a:a + cfg.eval_batch])
        # labels were checked when the data was loaded
        out = model.evaluate(backend.xp, state.params, X, y, setup.spec, state.bn_state, check=False)
        sums += backend.to_numpy(backend.xp.stack(out))   # one host read per chunk
    loss, correct, count = comm.sum_host(sums, tag="eval")
    error = 1.0 - correct / count if setup.spec.output != "linear" else math.nan
    return loss / count, error
