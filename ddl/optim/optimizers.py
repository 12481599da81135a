"""Optimizers as pure (init, update) pairs over ONE flat buffer (course 2, week 2 formulas).

`init(buf) -> state` and `update(g, state, lr, donate=False) -> (delta, new_state)`; the caller
applies the step as `params.buf -= delta`. Each update is a few vectorized operations over the
whole flat buffer (every layer at once); state arrays start at zero. By default a state is never
mutated: every update returns a new dict. `donate=True` (JAX's buffer donation) lets the update
reuse the old state's arrays, for a caller that never reads the old state again: the trainer
does this, which halves the update's memory traffic. Scalars stay Python floats so a float32
buffer stays float32.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Real
from typing import Any, NamedTuple

from ddl.backend import namespace as array_namespace

OPTIMIZERS = ("gd", "momentum", "rmsprop", "adam")
HYPER_PARAMETERS = ("beta", "beta1", "beta2", "epsilon")


class Optimizer(NamedTuple):
    """`init(buf) -> state`; `update(g, state, lr, donate=False) -> (delta, new_state)`, W -= delta."""

    name: str
    init: Callable[[Any], dict]
    update: Callable[..., tuple[Any, dict]]  # (g, state, lr, donate=False)
    hyper: dict = {}                         # its hyper-parameters (what a fused fast path needs)


def gd() -> Optimizer:
    """Plain gradient descent: delta = lr * g; no state."""

    def init(buf) -> dict:
        return {}

    def update(g, state: dict, lr: float, donate: bool = False):
        return float(lr) * g, {}

    return Optimizer("gd", init, update)


def momentum(beta: float = 0.9) -> Optimizer:
    """v = beta v + (1 - beta) g; delta = lr v (no bias correction, as in the course)."""
    beta = _check_hyper("beta", beta)

    def init(buf) -> dict:
        return {"v": _zeros(buf)}

    def update(g, state: dict, lr: float, donate: bool = False):
        v = _own(state["v"], donate)
        v *= beta
        v += (1.0 - beta) * g
        return v * float(lr), {"v": v}

    return Optimizer("momentum", init, update, {"beta": beta})


def rmsprop(beta2: float = 0.999, epsilon: float = 1e-8) -> Optimizer:
    """s = beta2 s + (1 - beta2) g^2; delta = lr g / (sqrt(s) + epsilon)."""
    beta2, epsilon = _check_hyper("beta2", beta2), _check_hyper("epsilon", epsilon)

    def init(buf) -> dict:
        return {"s": _zeros(buf)}

    def update(g, state: dict, lr: float, donate: bool = False):
        xp = array_namespace(g)
        s = _ema_of_square(_own(state["s"], donate), g, beta2)
        d = xp.sqrt(s)
        d += epsilon
        delta = g * float(lr)
        delta /= d
        return delta, {"s": s}

    return Optimizer("rmsprop", init, update, {"beta2": beta2, "epsilon": epsilon})


def adam(beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8) -> Optimizer:
    """t += 1; v, s as momentum / RMSprop; delta = lr vhat / (sqrt(shat) + epsilon) with the
    bias corrections vhat = v / (1 - beta1^t), shat = s / (1 - beta2^t)."""
    beta1, beta2 = _check_hyper("beta1", beta1), _check_hyper("beta2", beta2)
    epsilon = _check_hyper("epsilon", epsilon)

    def init(buf) -> dict:
        return {"v": _zeros(buf), "s": _zeros(buf), "t": 0}

    def update(g, state: dict, lr: float, donate: bool = False):
        # The bias corrections are folded into two scalars, which is the same formula:
        #   vhat / (sqrt(shat) + eps) = c * v / (sqrt(s) + eps * sqrt(1 - beta2^t)),
        #   c = sqrt(1 - beta2^t) / (1 - beta1^t)
        # and saves two full-buffer passes (the update is a large part of a step).
        xp = array_namespace(g)
        t = state["t"] + 1
        root = math.sqrt(1.0 - beta2**t)
        v = _own(state["v"], donate)
        v *= beta1
        v += (1.0 - beta1) * g
        s = _ema_of_square(_own(state["s"], donate), g, beta2)
        d = xp.sqrt(s)
        d += epsilon * root
        delta = v * (float(lr) * root / (1.0 - beta1**t))
        delta /= d
        return delta, {"v": v, "s": s, "t": t}

    return Optimizer("adam", init, update, {"beta1": beta1, "beta2": beta2, "epsilon": epsilon})


_FACTORIES = {"gd": gd, "momentum": momentum, "rmsprop": rmsprop, "adam": adam}
_USES = {"gd": (), "momentum": ("beta",), "rmsprop": ("beta2", "epsilon"),
         "adam": ("beta1", "beta2", "epsilon")}


def make_optimizer(name: str, **hyper: float) -> Optimizer:
    """Build an optimizer by name. Every key of HYPER_PARAMETERS is accepted (a config carries
    all of them) and range-checked; the ones this optimizer does not use are ignored."""
    if name not in _FACTORIES:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    unknown = sorted(set(hyper) - set(HYPER_PARAMETERS))
    if unknown:
        raise ValueError(
            f"unknown optimizer hyper-parameter(s) {unknown}, allowed: {HYPER_PARAMETERS}")
    for key, value in hyper.items():
        _check_hyper(key, value)
    return _FACTORIES[name](**{k: hyper[k] for k in _USES[name] if k in hyper})


def _own(a, donate: bool):
    """The state array to update in place: the caller's own when donated (it promises never to
    read the old state again, as the trainer does), else a copy, so `update` stays pure."""
    return a if donate else a * 1.0


def _ema_of_square(s, g, beta2: float):
    """s <- beta2 * s + (1 - beta2) * g^2, in place on `s` (already owned), one temporary."""
    s *= beta2
    gg = g * g
    gg *= 1.0 - beta2
    s += gg
    return s


def _zeros(buf):
    return array_namespace(buf).zeros_like(buf)


def _check_hyper(key: str, value) -> float:
    """Range check: betas in [0, 1), epsilon > 0; returns a Python float (keeps float32 float32)."""
    number = isinstance(value, Real) and not isinstance(value, bool)
    shown = value if number else repr(value)  # NumPy scalars print as plain numbers
    if key == "epsilon":
        if not number or not math.isfinite(value) or value <= 0:
            raise ValueError(f"epsilon must be a positive finite number, got {shown}")
    elif not number or not 0 <= value < 1:
        raise ValueError(f"{key} must be in [0, 1), got {shown}")
    return float(value)
