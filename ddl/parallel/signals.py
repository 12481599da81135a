"""Stop requests from signals (preemption, Ctrl-C): a rank that receives SIGUSR1, SIGTERM or SIGINT
sets a flag that the trainer folds into the step's allreduce, so every rank stops at the same step
(and checkpoints). A second Ctrl-C interrupts at once. Before training, a signal ends the process
with one line (ddl/runner/startup.py)."""
from __future__ import annotations

import signal

_REQUESTED = {"flag": False, "signal": None}


def requested() -> bool:
    """True once a stop signal arrived on this rank (folded into the step's allreduce)."""
    return _REQUESTED["flag"]


def stop_signal():
    """The signal that asked for the stop (None if none did)."""
    return _REQUESTED["signal"] if _REQUESTED["flag"] else None


def _on_signal(signum, _frame) -> None:
    _REQUESTED["flag"], _REQUESTED["signal"] = True, signum
    if signum == signal.SIGINT:          # the next Ctrl-C does not wait for the step boundary
        signal.signal(signal.SIGINT, signal.default_int_handler)


STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)


def install_signal_handlers(signals=STOP_SIGNALS) -> None:
    """SLURM's `--signal=USR1@N`, a plain `kill` and Ctrl-C ask for a checkpoint at the next step.
    A request that arrived before (between two points of a sweep) is kept: the next point stops
    at its first step."""
    for s in signals:
        signal.signal(s, _on_signal)


def forget_requests() -> None:
    """A new run in a process that outlived a stop (a notebook after an interrupt) starts clean."""
    _REQUESTED["flag"], _REQUESTED["signal"] = False, None
