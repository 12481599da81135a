"""Gradient transforms that are not optimizers: L2 weight decay.

L2 is its own transform (optax style), applied to the flat gradient before the optimizer:
`g = add_l2(g, params.buf, mask, lambd / m)`, so every optimizer sees the regularized gradient.
"""
from __future__ import annotations

import math
from numbers import Real


def add_l2(g, params_buf, mask, coef: float):
    """Gradient of the L2 penalty added in: g + coef * mask * params.

    g, params_buf, mask: 1-D backend arrays of the flat size (mask is 0/1 on the W entries, so
    biases, gamma and beta are not decayed); coef = lambd / m, the course's d/dW of
    (lambd / 2m) * sum ||W||^2. Pure: returns a new array.
    """
    if not _is_number(coef) or not math.isfinite(coef) or coef < 0:
        raise ValueError(f"L2 coefficient must be a finite number >= 0, got {_show(coef)}")
    return g + float(coef) * (mask * params_buf)


def _is_number(x) -> bool:
    # bool is a Real in Python; True as a coefficient is always a mistake.
    return isinstance(x, Real) and not isinstance(x, bool)


def _show(x) -> str:
    # str() prints NumPy scalars as plain numbers; repr() keeps quotes around strings.
    return repr(x) if isinstance(x, str) else str(x)
