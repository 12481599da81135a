"""The dense layer Z = W A_prev + b.

Gradients are those of a SUM loss over the batch's examples: there is no 1/m anywhere in `nn/`,
the trainer divides by the global example count once, after the gradient allreduce.
"""
from __future__ import annotations



def dense_forward(xp, W, b, A_prev):
    """Z (n_l, b) = W (n_l, n_{l-1}) @ A_prev (n_{l-1}, b) + b (n_l, 1); b is None before BN."""
    Z = xp.matmul(W, A_prev)
    if b is not None:
        Z += b                                   # Z is fresh: add in place, no extra temporary
    return Z


def dense_backward(xp, dZ, W, A_prev, *, need_dA: bool = True, need_db: bool = True):
    """dA_prev = W^T dZ, dW = dZ A_prev^T, db = sum over columns of dZ.

    `need_dA=False` (first layer: nobody wants d/dX) and `need_db=False` (batchnorm follows: no
    bias) skip that work and return None in its place.
    """
    dW = xp.matmul(dZ, A_prev.T)
    db = xp.sum(dZ, axis=1, keepdims=True) if need_db else None
    dA_prev = xp.matmul(W.T, dZ) if need_dA else None
    return dA_prev, dW, db
