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


def dense_backward(xp, dZ, W, A_prev, *, need_dA: bool = True, need_db: bool = True, out=(None, None)):
    """dA_prev = W^T dZ, dW = dZ A_prev^T, db = sum over columns of dZ.

    `need_dA=False` (first layer: nobody wants d/dX) and `need_db=False` (batchnorm follows: no
    bias) skip that work and return None in its place. `out`: arrays (dW, db) to write into
    instead (NumPy's `out=`, the same numbers), or None each.
    """
    out_dW, out_db = out
    dW = xp.matmul(dZ, A_prev.T) if out_dW is None else xp.matmul(dZ, A_prev.T, out=out_dW)
    if not need_db:
        db = None
    elif out_db is None:
        db = xp.sum(dZ, axis=1, keepdims=True)
    else:
        db = xp.sum(dZ, axis=1, keepdims=True, out=out_db)
    dA_prev = xp.matmul(W.T, dZ) if need_dA else None
    return dA_prev, dW, db
