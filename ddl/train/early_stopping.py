"""Early stopping on the dev cost (the course's "early stopping": keep the best dev epoch)."""
from __future__ import annotations

import logging
import math

log = logging.getLogger("ddl")


def update(state, record: dict, cfg) -> bool:
    """Track the best dev cost; True when `cfg.patience` epochs passed without improving it."""
    if cfg.patience <= 0:
        return False
    cost = record["dev_cost"]
    best = state.best
    if best is None or (math.isfinite(cost) and cost < best["cost"] - cfg.min_delta):
        state.best = {"cost": cost, "epoch": record["epoch"], "params": state.params.copy(),
                      "bn_state": dict(state.bn_state) if state.bn_state else None}
        state.bad_epochs = 0
        return False
    state.bad_epochs += 1
    if state.bad_epochs >= cfg.patience:
        state.stopped = "early"
        return True
    return False


def restore_best(state) -> None:
    """Early stopping keeps the parameters of the best dev epoch."""
    if state.best is None or state.stopped == "signal":
        return
    if state.best["epoch"] != state.history[-1]["epoch"]:
        log.info("restoring the parameters of epoch %d (best dev cost %.6g)",
                 state.best["epoch"], state.best["cost"])
    state.params.buf[...] = state.best["params"].buf
    state.bn_state = state.best["bn_state"]
