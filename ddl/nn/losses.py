"""Losses computed from the output pre-activation ZL (the logits), so no log(0) can occur.

Each output activation has one matched loss (`LOSSES`): sigmoid -> binary cross-entropy,
softmax -> categorical cross-entropy, linear -> squared error. `loss_sum` is the SUM over the
examples of the batch (the trainer divides by the global example count); `loss_grad` is its exact
gradient with respect to ZL, for matched pairs simply activation(ZL) - Y (times 2 for mse).
ZL and Y are (n_out, b), one column per example.
"""
from __future__ import annotations

from .activations import sigmoid, softmax

LOSSES = {"sigmoid": "bce", "softmax": "ce", "linear": "mse"}


class LabelError(ValueError):
    """Targets that do not fit the network's output (bad class index, wrong shape)."""


def _check_output(output: str) -> None:
    if output not in LOSSES:
        raise ValueError(f"unknown output activation {output!r}; choose one of {sorted(LOSSES)}")


def _first_bad(xp, y, bad):
    """The first offending value of y where the boolean mask `bad` holds (error path only)."""
    v = float(xp.reshape(y, (-1,))[xp.reshape(bad, (-1,))][0])
    return int(v) if v.is_integer() else v


def encode_targets(xp, y, output: str, n_out: int, dtype, *, check: bool = True):
    """Labels/targets -> Y of shape (n_out, b) in the float `dtype`.

    Classification: class indices (b,) or (1, b), any integer dtype (uint8 is cast to float FIRST,
    so 1 - y cannot wrap around) -> (1, b) for sigmoid, one-hot (C, b) for softmax (an already
    one-hot (C, b) array is accepted as is). Regression: (b, k) or (b,) -> (k, b).
    `check=False` skips the label range check (it costs a device->host sync on GPUs).
    """
    _check_output(output)
    y = xp.asarray(y)
    if output == "linear":
        return _encode_regression(xp, y, n_out, dtype)
    if output == "softmax" and y.ndim == 2 and y.shape[0] == n_out and n_out > 1:
        return xp.astype(y, dtype)                           # already one-hot
    if y.ndim == 2 and y.shape[0] == 1:
        y = xp.reshape(y, (-1,))
    if y.ndim != 1:
        raise LabelError(f"class labels must have shape (b,) or (1, b), got {tuple(y.shape)}")
    yf = xp.astype(y, dtype)
    if output == "sigmoid":
        Y = xp.reshape(yf, (1, -1))
        bad, allowed = (Y != 0.0) & (Y != 1.0), "0 or 1"
    else:
        Y = xp.astype(yf[None, :] == xp.arange(n_out, dtype=dtype)[:, None], dtype)
        bad, allowed = xp.sum(Y, axis=0) != 1.0, f"integers in 0..{n_out - 1}"  # no class hit
    if check and bool(xp.any(bad)):
        raise LabelError(f"class labels must be {allowed}, got {_first_bad(xp, y, bad)}")
    return Y


def _encode_regression(xp, y, n_out: int, dtype):
    """(b, k) or (b,) targets -> (k, b)."""
    Y = xp.astype(y, dtype)
    Y = xp.reshape(Y, (1, -1)) if Y.ndim == 1 else Y.T
    if Y.shape[0] != n_out:
        raise LabelError(
            f"regression targets have {Y.shape[0]} columns, the network has {n_out} outputs"
        )
    return Y


def loss_sum(xp, ZL, Y, output: str):
    """0-d array: sum over examples of the per-example loss.

    bce: max(z, 0) - z y + log(1 + e^-|z|);  ce: -sum_k y_k log softmax(z)_k (via log-sum-exp);
    mse: sum_k (z_k - y_k)^2.
    """
    _check_output(output)
    if output == "sigmoid":
        total = xp.sum(xp.maximum(ZL, 0.0) - ZL * Y + xp.log1p(xp.exp(-xp.abs(ZL))))
    elif output == "softmax":
        Zs = ZL - xp.max(ZL, axis=0, keepdims=True)
        lse = xp.log(xp.sum(xp.exp(Zs), axis=0, keepdims=True))
        total = xp.sum(Y * (lse - Zs))
    else:
        D = ZL - Y
        total = xp.sum(D * D)
    return xp.asarray(total)                    # NumPy reductions give scalars, not 0-d arrays


def loss_grad(xp, ZL, Y, output: str):
    """dZL = d loss_sum / d ZL: sigmoid(ZL) - Y, softmax(ZL) - Y, or 2 (ZL - Y)."""
    _check_output(output)
    if output == "sigmoid":
        return sigmoid(xp, ZL) - Y
    if output == "softmax":
        return softmax(xp, ZL) - Y
    return 2.0 * (ZL - Y)


def predict_labels(xp, ZL, output: str):
    """(b,) int64 labels: sigmoid(z) > 0.5 (i.e. z > 0), argmax over classes for softmax;
    for linear outputs the values ZL themselves."""
    _check_output(output)
    if output == "sigmoid":
        return xp.astype(ZL[0, :] > 0, xp.int64)
    if output == "softmax":
        return xp.argmax(ZL, axis=0)
    return ZL


def correct_count(xp, ZL, y, output: str):
    """0-d array (ZL's dtype, so it packs with the loss for one allreduce): number of correct
    predictions for label indices y (b,) or (1, b) (one-hot (C, b) also accepted); 0 for linear."""
    _check_output(output)
    if output == "linear":
        return xp.zeros((), dtype=ZL.dtype)
    y = xp.asarray(y)
    if y.ndim == 2 and y.shape[0] > 1:
        y = xp.argmax(y, axis=0)
    y = xp.astype(xp.reshape(y, (-1,)), xp.int64)
    return xp.asarray(xp.sum(xp.astype(predict_labels(xp, ZL, output) == y, ZL.dtype)))
