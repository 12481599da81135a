"""The Numba loop of `ddl.nn.compiled`: a dense network's forward pass, its loss and its backward
pass in one call, for networks too small for NumPy's per-call cost to be worth paying.

The operations are model.forward/backward's and losses'; only the summation order inside the
matrix products differs from BLAS's (tests/test_compiled.py holds both equal to 1e-12 in float64).
No fast-math: nothing is reassociated or contracted. Every loop whose iterations are independent
runs innermost over a contiguous row of examples, so it vectorizes without reassociation.

Buffers, all C-ordered, one row per unit and one column per example (b columns in use):
    p, g        the flat parameters and gradients (layout W1, b1, W2, b2, ...: ddl.nn.model.layout)
    x           X copied into (n_x, b)
    z, a        each layer's Z and A, layer after layer (n_l x b each)
    d, e        two scratch blocks of max(n_l) x b: dZ of a layer, dA of the one below
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

_JIT = dict(cache=True, boundscheck=False, error_model="numpy", nogil=True)

RELU, LEAKY_RELU, TANH, SIGMOID, LINEAR = range(5)           # hidden activations
OUT_SIGMOID, OUT_SOFTMAX, OUT_LINEAR = range(3)              # outputs (and their losses)
HIDDEN_CODES = {"relu": RELU, "leaky_relu": LEAKY_RELU, "tanh": TANH, "sigmoid": SIGMOID,
                "linear": LINEAR}
OUTPUT_CODES = {"sigmoid": OUT_SIGMOID, "softmax": OUT_SOFTMAX, "linear": OUT_LINEAR}


@njit(inline="always", **_JIT)
def _dot(u, v, b):
    """sum_j u[j] v[j] in four interleaved partial sums (the same order every call): four
    independent additions in flight, where one running sum waits on each add."""
    s0 = s1 = s2 = s3 = 0.0
    j = 0
    while j + 4 <= b:
        s0 += u[j] * v[j]
        s1 += u[j + 1] * v[j + 1]
        s2 += u[j + 2] * v[j + 2]
        s3 += u[j + 3] * v[j + 3]
        j += 4
    s = (s0 + s1) + (s2 + s3)
    while j < b:
        s += u[j] * v[j]
        j += 1
    return s


@njit(inline="always", **_JIT)
def _sum(u, b):
    s0 = s1 = s2 = s3 = 0.0
    j = 0
    while j + 4 <= b:
        s0 += u[j]
        s1 += u[j + 1]
        s2 += u[j + 2]
        s3 += u[j + 3]
        j += 4
    s = (s0 + s1) + (s2 + s3)
    while j < b:
        s += u[j]
        j += 1
    return s


@njit(inline="always", **_JIT)
def _combine(out, p, first, stride, rows, m, b):
    """out[:b] = sum over r of p[first + r stride] rows[r, :b], r = 0..m-1 in order: a row of W A
    (stride 1) or of W^T dZ (stride n_prev), the loop over examples innermost."""
    for j in range(b):
        out[j] = 0.0
    for r in range(m):
        w, src = p[first + r * stride], rows[r]
        for j in range(b):
            out[j] += w * src[j]


@njit(**_JIT)
def _dense(p, w0, n, n_prev, A, Z, b):
    """Z[:, :b] = W A + b_l, W at p[w0:], b_l right after it."""
    b0 = w0 + n * n_prev
    for i in range(n):
        row = Z[i]
        _combine(row, p, w0 + i * n_prev, 1, A, n_prev, b)
        bias = p[b0 + i]
        for j in range(b):
            row[j] += bias


@njit(**_JIT)
def _activate(Z, A, n, b, hidden, slope):
    for i in range(n):
        z, out = Z[i], A[i]
        if hidden == RELU:
            for j in range(b):
                out[j] = max(z[j], 0.0)
        elif hidden == LEAKY_RELU:
            for j in range(b):
                out[j] = min(z[j], 0.0) * slope + max(z[j], 0.0)
        elif hidden == TANH:
            for j in range(b):
                out[j] = np.tanh(z[j])
        elif hidden == SIGMOID:
            for j in range(b):
                out[j] = (np.tanh(0.5 * z[j]) + 1.0) * 0.5
        else:
            for j in range(b):
                out[j] = z[j]


@njit(**_JIT)
def _activation_backward(D, Z, A, n, b, hidden, slope, one_slope):
    """D (dA on entry) becomes dZ = dA * f'(Z), in place."""
    for i in range(n):
        d, z, a = D[i], Z[i], A[i]
        if hidden == RELU:
            for j in range(b):
                d[j] *= 1.0 if z[j] > 0 else 0.0
        elif hidden == LEAKY_RELU:
            for j in range(b):
                d[j] = ((1.0 if z[j] > 0 else 0.0) * one_slope + slope) * d[j]
        elif hidden == TANH:
            for j in range(b):
                d[j] *= 1.0 - a[j] * a[j]
        elif hidden == SIGMOID:
            for j in range(b):
                d[j] *= a[j] * (1.0 - a[j])


@njit(**_JIT)
def _loss(Z, y, D, n, b, output):
    """The loss summed over the b examples; D[:n, :b] = d loss / d Z (ddl.nn.losses)."""
    total = 0.0
    if output == OUT_SIGMOID:
        for j in range(b):
            z, t = Z[0, j], y[j, 0]
            total += max(z, 0.0) - z * t + math.log1p(math.exp(-abs(z)))
            D[0, j] = (np.tanh(0.5 * z) + 1.0) * 0.5 - t
    elif output == OUT_SOFTMAX:
        for j in range(b):
            top = Z[0, j]
            for i in range(1, n):
                top = max(top, Z[i, j])
            s = 0.0
            for i in range(n):
                e = math.exp(Z[i, j] - top)
                D[i, j] = e
                s += e
            lse = math.log(s)
            label = y[j, 0]
            for i in range(n):
                hit = 1.0 if label == i else 0.0        # a label out of range hits no class
                total += hit * (lse - (Z[i, j] - top))
                D[i, j] = D[i, j] / s - hit
    else:
        for i in range(n):
            for j in range(b):
                r = Z[i, j] - y[j, i]
                total += r * r
                D[i, j] = 2.0 * r
    return total


@njit(**_JIT)
def forward_backward(p, g, X, y, sizes, rows, weights, hidden, output, slope, x, z, a, d, e):
    """The gradients of the summed loss into g; returns the summed loss (float64). rows[l]: the
    first row of layer l+1's block in z and a (rows[L] their height); weights[l]: where W{l+1}
    starts in p and g (its b right after it)."""
    L, b = sizes.shape[0] - 1, X.shape[1]
    one_slope = 1.0 - slope
    for k in range(sizes[0]):                     # X (often a transposed view) into C order
        for j in range(b):
            x[k, j] = X[k, j]
    for l in range(L):
        n, n_prev = sizes[l + 1], sizes[l]
        A_prev = x if l == 0 else a[rows[l - 1]:rows[l]]
        _dense(p, weights[l], n, n_prev, A_prev, z[rows[l]:rows[l + 1]], b)
        if l < L - 1:
            _activate(z[rows[l]:rows[l + 1]], a[rows[l]:rows[l + 1]], n, b, hidden, slope)
    loss = _loss(z[rows[L - 1]:rows[L]], y, d, sizes[L], b, output)
    dZ, dA = d, e
    for l in range(L - 1, -1, -1):
        n, n_prev = sizes[l + 1], sizes[l]
        w0 = weights[l]
        b0 = w0 + n * n_prev
        A_prev = x if l == 0 else a[rows[l - 1]:rows[l]]
        for i in range(n):                          # dW = dZ A_prev^T, db = row sums of dZ
            row = dZ[i]
            g[b0 + i] = _sum(row, b)
            for k in range(n_prev):
                g[w0 + i * n_prev + k] = _dot(row, A_prev[k], b)
        if l == 0:
            break
        for k in range(n_prev):                     # dA_prev = W^T dZ
            _combine(dA[k], p, w0 + k, n_prev, dZ, n, b)
        _activation_backward(dA, z[rows[l - 1]:rows[l]], a[rows[l - 1]:rows[l]],
                             n_prev, b, hidden, slope, one_slope)
        dZ, dA = dA, dZ
    return loss
