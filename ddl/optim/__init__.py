"""Optimizers as pure (init, update) transforms over one flat buffer, L2 as a transform, and
learning-rate schedules as pure functions of the epoch."""
from ddl.optim.optimizers import (
    HYPER_PARAMETERS,
    OPTIMIZERS,
    Optimizer,
    adam,
    gd,
    make_optimizer,
    momentum,
    rmsprop,
)
from ddl.optim.schedules import SCHEDULES, make_schedule, schedule_values
from ddl.optim.transforms import add_l2

__all__ = [
    "HYPER_PARAMETERS", "OPTIMIZERS", "SCHEDULES", "Optimizer", "adam", "add_l2", "gd",
    "make_optimizer", "make_schedule", "momentum", "rmsprop", "schedule_values",
]
