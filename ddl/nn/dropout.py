"""Inverted dropout (Course 2, week 1): A = H * D with D = (u < keep_prob) / keep_prob, so the
expected activation is unchanged and inference needs no rescaling; backward is dH = dA * D.

The mask is counter-based: it depends on (key, unit, global example index) only, never on how a
batch is split across ranks.
"""
from __future__ import annotations

from ..backend import counter_uniform


def dropout_mask(xp, key: int, n_units: int, idx, keep_prob: float, dtype):
    """Inverted-dropout multiplier D (n_units, b): 1/keep_prob where u < keep_prob, else 0.

    u = counter_uniform(key, unit, idx[j]) depends only on the key, the unit and the GLOBAL example
    index idx[j], so the mask of an example does not depend on how its batch is split across ranks.
    """
    u = counter_uniform(xp, key, n_units, idx, dtype)
    D = xp.astype(u < keep_prob, dtype)
    D *= 1.0 / keep_prob                         # D is fresh: scale in place
    return D


def dropout_forward(H, D, *, in_place: bool):
    """A = H * D; in place when nobody keeps H (the cache of sigmoid/tanh layers does)."""
    if in_place:
        H *= D
        return H
    return H * D


def dropout_backward(dA, D):
    """dH = dA * D, in place (dA is fresh from the matmul)."""
    dA *= D
    return dA
