"""Stop requests from signals (preemption): a rank that receives SIGUSR1/SIGTERM sets a flag that
the trainer folds into the step's allreduce, so every rank stops at the same step."""
from __future__ import annotations

import signal

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
