"""Batch normalization of hidden pre-activations, with explicit state and a pluggable `reduce`.

Z (n, b) is normalized per unit over ALL examples of the global batch: `reduce(list_of_arrays)`
returns each array summed across ranks (None = one rank). Every batch sum inside the forward and
backward formulas goes through it, so N ranks give the 1-rank result; a rank may hold 0 columns.
Running statistics are not kept here: `update_running` returns new ones for the caller to store.
"""
from __future__ import annotations


def _identity(arrays):
    return arrays


def bn_forward(xp, Z, gamma, beta, eps: float, reduce=None):
    """Training mode: Zt = gamma * (Z - mean) / sqrt(var + eps) + beta with batch mean/var (n, 1).

    Two passes (mean first, then the biased variance sum (Z - mean)^2 / N) avoid the cancellation
    of E[z^2] - E[z]^2. Returns (Zt, cache, mean, var).
    """
    reduce = reduce or _identity
    count = xp.full((1, 1), Z.shape[1], dtype=Z.dtype)
    total, n = reduce([xp.sum(Z, axis=1, keepdims=True), count])
    mean = total / n
    Zc = Z - mean
    var = reduce([xp.sum(Zc * Zc, axis=1, keepdims=True)])[0] / n
    inv_std = 1.0 / xp.sqrt(var + eps)
    Zc *= inv_std                                # Zc is fresh: it becomes xhat in place
    Zt = gamma * Zc
    Zt += beta
    return Zt, (Zc, gamma, inv_std, n), mean, var


def bn_backward(xp, dZt, cache, reduce=None):
    """Exact gradient of a SUM loss: with dxhat = gamma dZt and N the global batch size,

    dZ = inv_std / N * (N dxhat - sum dxhat - xhat sum(dxhat xhat))
       = gamma inv_std * (dZt - (dbeta_N + xhat dgamma_N) / N),
    where dbeta_N, dgamma_N are the batch sums over all ranks (through `reduce`). The returned
    dgamma = sum dZt xhat and dbeta = sum dZt are this rank's LOCAL sums (the trainer's gradient
    allreduce adds them up). Returns (dZ, dgamma, dbeta).
    """
    reduce = reduce or _identity
    xhat, gamma, inv_std, n = cache
    dbeta = xp.sum(dZt, axis=1, keepdims=True)
    dgamma = xp.sum(dZt * xhat, axis=1, keepdims=True)
    dbeta_n, dgamma_n = reduce([dbeta, dgamma])
    T = xhat * (dgamma_n / n)
    T += dbeta_n / n
    dZ = dZt - T
    dZ *= gamma * inv_std
    return dZ, dgamma, dbeta


def bn_infer(xp, Z, gamma, beta, mean, var, eps: float):
    """Inference mode with stored statistics: gamma (Z - mean) / sqrt(var + eps) + beta, folded
    into one scale and shift per unit."""
    scale = gamma / xp.sqrt(var + eps)
    Zt = Z * scale
    Zt += beta - mean * scale
    return Zt


def update_running(running_mean, running_var, mean, var, momentum: float = 0.9):
    """Exponential averages: running <- momentum * running + (1 - momentum) * batch statistic.

    The variance averaged is the biased batch variance used in the forward pass.
    """
    new_mean = momentum * running_mean + (1.0 - momentum) * mean
    new_var = momentum * running_var + (1.0 - momentum) * var
    return new_mean, new_var
