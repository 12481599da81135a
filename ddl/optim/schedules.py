"""Learning-rate schedules (course 2, week 2 "learning rate decay") as pure functions epoch -> lr.

The epoch e counts from 0 (the first epoch trains at lr0). Every rate is computed from lr0 and e
alone, never from an already-decayed rate, so calling a schedule for epoch 10 gives the same
value whatever was called before (restarts and resumed runs agree).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral, Real

SCHEDULES = ("constant", "inverse_time", "exponential", "sqrt", "scheduled")


def make_schedule(name: str, lr0: float, decay_rate: float = 1.0, base: float = 0.95,
                  k: float = 1.0, time_interval: int = 1000) -> Callable[[int], float]:
    """Return `lr(e)` for epoch e >= 0:

    constant      lr0
    inverse_time  lr0 / (1 + decay_rate * e)
    exponential   lr0 * base**e
    sqrt          lr0 * k / sqrt(e + 1)        (the course's k / sqrt(epoch_num), epochs from 1)
    scheduled     lr0 / (1 + decay_rate * floor(e / time_interval))

    All parameters are range-checked whichever schedule uses them (a config carries all).
    """
    if name not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {name!r}")
    lr0 = _positive("lr0", lr0)
    decay_rate = _real("decay_rate", decay_rate, "a finite number >= 0", lambda x: x >= 0)
    base = _real("base", base, "in (0, 1]", lambda x: 0 < x <= 1)
    k = _positive("k", k)
    time_interval = _interval(time_interval)
    formula = {
        "constant": lambda e: lr0,
        "inverse_time": lambda e: lr0 / (1.0 + decay_rate * e),
        "exponential": lambda e: lr0 * base**e,
        "sqrt": lambda e: lr0 * k / math.sqrt(e + 1),
        "scheduled": lambda e: lr0 / (1.0 + decay_rate * (e // time_interval)),
    }[name]

    def schedule(epoch: int) -> float:
        return float(formula(_epoch(epoch)))

    schedule.__name__ = f"{name}_schedule"
    return schedule


def schedule_values(fn: Callable[[int], float], epochs: int) -> list[float]:
    """[fn(0), ..., fn(epochs - 1)]: the rate of every epoch, e.g. for a plot."""
    return [fn(e) for e in range(epochs)]


def _epoch(e) -> int:
    if not isinstance(e, Integral) or isinstance(e, bool) or e < 0:
        raise ValueError(f"epoch must be an integer >= 0 (counted from 0), got {e!r}")
    return int(e)


def _real(key: str, value, allowed: str, ok: Callable[[float], bool]) -> float:
    number = isinstance(value, Real) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not ok(value):
        shown = value if number else repr(value)  # NumPy scalars print as plain numbers
        raise ValueError(f"{key} must be {allowed}, got {shown}")
    return float(value)


def _positive(key: str, value) -> float:
    return _real(key, value, "a positive finite number", lambda x: x > 0)


def _interval(value) -> int:
    # Accept 1000.0 (a YAML/CLI override may give a float) but not 2.5: epochs are whole.
    t = _real("time_interval", value, "a whole number >= 1", lambda x: x >= 1 and x == int(x))
    return int(t)
