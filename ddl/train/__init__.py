"""The training loop's wing: its types (state.py, a leaf), the epoch loop (loop.py), one step
(step.py) and its buffers (buffers.py), evaluation, non-finite handling and early stopping.

    from ddl.train import Setup, TrainState, train
    state = train(ds, setup, state, hooks)
"""
from ddl.train.buffers import TAIL, StepBuffers
from ddl.train.loop import check_start, sync_params, train
from ddl.train.nonfinite import DivergedError, NonFiniteError, diverging
from ddl.train.state import Hooks, Setup, TrainState
from ddl.train.step import train_step

__all__ = ["TAIL", "DivergedError", "Hooks", "NonFiniteError", "Setup", "StepBuffers", "TrainState",
           "check_start", "diverging", "sync_params", "train", "train_step"]
