"""Activation functions as (forward, backward) pairs over the array-API namespace `xp`.

`forward(xp, Z, slope=0.01) -> A` and `backward(xp, dA, Z, A, slope=0.01) -> dZ`, where Z and A
are (n, b) with one column per example and dZ = dA * dA/dZ (for softmax: the Jacobian-vector
product over axis 0). `slope` is only read by leaky_relu; every function takes it so callers need
no special case.
"""
from __future__ import annotations


def sigmoid(xp, Z, slope=0.01):
    """1 / (1 + e^-z), evaluated through e^-|z| so that no exponent overflows for large |z|."""
    E = xp.exp(-xp.abs(Z))
    S = 1.0 / (1.0 + E)
    return xp.where(Z >= 0, S, E * S)


def sigmoid_backward(xp, dA, Z, A, slope=0.01):
    """dZ = dA * A (1 - A)."""
    return dA * (A * (1.0 - A))


def tanh(xp, Z, slope=0.01):
    return xp.tanh(Z)


def tanh_backward(xp, dA, Z, A, slope=0.01):
    """dZ = dA * (1 - A^2)."""
    return dA * (1.0 - A * A)


def relu(xp, Z, slope=0.01):
    return xp.maximum(Z, 0.0)


def relu_backward(xp, dA, Z, A, slope=0.01):
    """dZ = dA where Z > 0, else 0 (the derivative at the kink z = 0 is taken as 0)."""
    return xp.where(Z > 0, dA, 0.0)


def leaky_relu(xp, Z, slope=0.01):
    return xp.where(Z > 0, Z, slope * Z)


def leaky_relu_backward(xp, dA, Z, A, slope=0.01):
    """dZ = dA where Z > 0, else slope * dA."""
    return xp.where(Z > 0, dA, slope * dA)


def softmax(xp, Z, slope=0.01):
    """Column-wise softmax; subtracting each column's max keeps every exponent <= 0."""
    E = xp.exp(Z - xp.max(Z, axis=0, keepdims=True))
    return E / xp.sum(E, axis=0, keepdims=True)


def softmax_backward(xp, dA, Z, A, slope=0.01):
    """Jacobian-vector product per column: dZ = A * (dA - sum_k dA_k A_k)."""
    return A * (dA - xp.sum(dA * A, axis=0, keepdims=True))


def linear(xp, Z, slope=0.01):
    return Z


def linear_backward(xp, dA, Z, A, slope=0.01):
    return dA


ACTIVATIONS = {
    "sigmoid": (sigmoid, sigmoid_backward),
    "tanh": (tanh, tanh_backward),
    "relu": (relu, relu_backward),
    "leaky_relu": (leaky_relu, leaky_relu_backward),
    "softmax": (softmax, softmax_backward),
    "linear": (linear, linear_backward),
}


def get_activation(name: str):
    """name -> (forward, backward); ValueError listing the known names otherwise."""
    try:
        return ACTIVATIONS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}"
        ) from None
