"""When to stop: early stopping on the dev cost, and stop requests from signals (preemption)."""
from __future__ import annotations

import logging
import math
import signal

log = logging.getLogger("ddl")

_REQUESTED = {"flag": False, "signal": None}


def requested() -> bool:
    """True once a stop signal arrived on this rank (folded into the step's allreduce)."""
    return _REQUESTED["flag"]


def _on_signal(signum, _frame) -> None:
    _REQUESTED["flag"], _REQUESTED["signal"] = True, signum


def install_signal_handlers(signals=(signal.SIGUSR1, signal.SIGTERM)) -> None:
    """SLURM's `--signal=USR1@N` and a plain `kill` ask for a checkpoint at the next step."""
    _REQUESTED["flag"] = False
    for s in signals:
        signal.signal(s, _on_signal)


def reset() -> None:
    _REQUESTED["flag"], _REQUESTED["signal"] = False, None


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
