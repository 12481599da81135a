"""Numba loops of `ddl.optim.fused`: one element at a time, the portable code's operations in its
order. `error_model="numpy"` drops Python's zero-division check, which would stop the loop from
being vectorized; no fastmath (it would allow contraction and reordering: not bit-identical).

Every kernel first forms the gradient as the trainer does, g / count (+ coef * (mask * p) with
L2; portable: g /= count, then g + coef * (mask * p)), then applies its optimizer and p -= delta
in place.
"""
from __future__ import annotations

import numpy as np
from numba import njit

_JIT = dict(cache=True, boundscheck=False, error_model="numpy", nogil=True)


def _loops(body):
    """Two compiled loops of one per-element `body(i, gi, p, state, k)` (state: a tuple of the
    optimizer's arrays, k: a tuple of its scalars): with the L2 term and without, the branch
    hoisted out of the loop, so the loop without it reads no mask and stays vectorizable."""
    inner = njit(inline="always", **_JIT)(body)

    @njit(**_JIT)
    def kernel(p, g, mask, count, coef, l2, state, k):
        if l2:
            for i in range(p.size):
                inner(i, g[i] / count + coef * (mask[i] * p[i]), p, state, k)
        else:
            for i in range(p.size):
                inner(i, g[i] / count, p, state, k)
    return kernel


def _gd(i, gi, p, state, k):
    p[i] -= k[0] * gi                                   # k: lr


def _momentum(i, gi, p, state, k):
    v, (beta, one_beta, lr) = state[0], k
    vi = v[i] * beta
    vi += one_beta * gi
    v[i] = vi
    p[i] -= vi * lr


def _rmsprop(i, gi, p, state, k):
    s, (beta2, one_beta2, eps, lr) = state[0], k
    gg = gi * gi
    gg *= one_beta2
    si = s[i] * beta2 + gg
    s[i] = si
    p[i] -= (gi * lr) / (np.sqrt(si) + eps)


def _adam(i, gi, p, state, k):
    (v, s), (beta1, one_beta1, beta2, one_beta2, eps_root, c) = state, k
    vi = v[i] * beta1
    vi += one_beta1 * gi
    v[i] = vi
    gg = gi * gi
    gg *= one_beta2
    si = s[i] * beta2 + gg
    s[i] = si
    p[i] -= (vi * c) / (np.sqrt(si) + eps_root)


KERNELS = {"gd": _loops(_gd), "momentum": _loops(_momentum), "rmsprop": _loops(_rmsprop),
           "adam": _loops(_adam)}
