"""Gradient checking (course 2, week 1): backprop against two-sided differences.

    gradapprox_i = (J(theta + eps e_i) - J(theta - eps e_i)) / (2 eps)
    difference   = ||grad - gradapprox|| / (||grad|| + ||gradapprox||)

A correct float64 backprop gives a difference around 1e-9..1e-7; a bug typically gives > 1e-3.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_backend
from ..params import Flat
from .init import init_params
from .losses import encode_targets, loss_grad, loss_sum
from .model import Spec, backward, forward, l2_cost, layout


def gradient_check(cost_fn, grad_fn, theta: np.ndarray, eps: float = 1e-7) -> float:
    """Relative difference between grad_fn(theta) and the two-sided differences of cost_fn.

    theta is the float64 1-D vector of all parameters; cost_fn(theta) -> float and
    grad_fn(theta) -> float64 1-D array of theta's size.
    """
    theta = np.asarray(theta, dtype=np.float64)
    if theta.ndim != 1:
        raise ValueError(f"theta must be a 1-D parameter vector, got shape {theta.shape}")
    grad = np.asarray(grad_fn(theta.copy()), dtype=np.float64)
    approx = np.empty_like(theta)
    for i in range(theta.size):
        plus, minus = theta.copy(), theta.copy()
        plus[i] += eps
        minus[i] -= eps
        approx[i] = (cost_fn(plus) - cost_fn(minus)) / (2.0 * eps)
    den = np.linalg.norm(grad) + np.linalg.norm(approx)
    return float(np.linalg.norm(grad - approx) / den) if den > 0 else 0.0


def cost_and_grad(spec: Spec, X, y, lam: float = 0.0, backend=None, *, params: dict,
                  key: int | None = None, idx=None):
    """(cost_fn, grad_fn, theta) of the training-mode cost on host data X (n_x, m), y, in float64.

    J(theta) = loss_sum / m + lam / (2m) sum ||W||^2 and grad = backward / m + (lam / m) W, with
    batch-norm batch statistics; theta concatenates `params` (host arrays) in layout order. With
    dropout, `key` and `idx` (host ints) fix the masks so that J is deterministic.
    """
    be = get_backend(backend or "numpy") if not hasattr(backend, "xp") else backend
    xp, lay = be.xp, layout(spec)
    theta = np.concatenate([np.asarray(params[n], dtype=np.float64).reshape(-1) for n in lay.names])
    Xb = be.asarray(X, "float64")
    m = Xb.shape[1]
    # the labels are checked where they are, on the host; on a GPU that check would be a device read
    Y = be.asarray(encode_targets(np, np.asarray(y), spec.output, spec.sizes[-1], np.float64), "float64")
    idx = None if idx is None else be.asarray(idx)
    mask = lay.mask(("W",))

    def run(t):
        p = Flat(lay, be.asarray(t, "float64"), xp)
        ZL, caches, _ = forward(xp, p, Xb, spec, train=True, key=key, idx=idx)
        return p, ZL, caches

    def cost(t):
        p, ZL, _ = run(t)
        J = loss_sum(xp, ZL, Y, spec.output) / m + l2_cost(xp, p, lay, lam, m)
        return float(be.to_numpy(J))

    def grad(t):
        _, ZL, caches = run(t)
        g = backward(xp, loss_grad(xp, ZL, Y, spec.output), caches, spec)
        flat = np.concatenate([be.to_numpy(g[n]).reshape(-1) for n in lay.names])
        return flat / m + (lam / m) * mask * t

    return cost, grad, theta


def check_model(spec: Spec, X, y, lam: float = 0.0, seed: int = 0, backend=None, *,
                params: dict | None = None, eps: float = 1e-7) -> float:
    """Gradient check of the whole network (see cost_and_grad) on host X (n_x, m) and y.

    Parameters: `params` (host arrays by name) or He init from `seed`; computed in float64 on
    `backend` (a Backend or its name; default numpy). Refuses dropout (keep_prob < 1).
    """
    if any(k < 1.0 for k in spec.keep_prob):
        raise ValueError(
            f"gradient checking needs keep_prob=1, got {list(spec.keep_prob)}: dropout draws a "
            "new mask each pass, which makes the cost random"
        )
    params = params if params is not None else init_params(spec, "he", seed)
    cost, grad, theta = cost_and_grad(spec, X, y, lam, backend, params=params)
    return gradient_check(cost, grad, theta, eps)
