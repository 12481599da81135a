"""Activations: derivatives against finite differences, softmax/sigmoid stability, name errors."""
import warnings

import numpy as np
import pytest

from ddl.nn.activations import ACTIVATIONS, get_activation

NAMES = ["sigmoid", "tanh", "relu", "leaky_relu", "softmax", "linear"]


def _away_from_kink(shape, seed=0):
    """Random Z with |z| >= 0.1, so relu/leaky_relu kinks (z = 0) lie outside the FD steps."""
    rng = np.random.default_rng(seed)
    return np.sign(rng.standard_normal(shape)) * (0.1 + rng.random(shape) * 2.0)


@pytest.mark.parametrize("name", NAMES)
def test_backward_matches_finite_differences(backend, name):
    fwd, bwd = get_activation(name)
    xp = backend.xp
    Z, dA = _away_from_kink((4, 5)), np.random.default_rng(1).standard_normal((4, 5))
    Zb, dAb = backend.arr(Z), backend.arr(dA)
    dZ = backend.np(bwd(xp, dAb, Zb, fwd(xp, Zb, slope=0.1), slope=0.1))
    # d/dZ of sum(dA * f(Z)): the vector-Jacobian product backward must return
    num = backend.num_grad(lambda z: xp.sum(dAb * fwd(xp, z, slope=0.1)), Z)
    tol = 1e-8 if backend.dtype_name == "float64" else 2e-3   # FD error: h^2 vs. 1e-7/h roundoff
    np.testing.assert_allclose(dZ, num, atol=tol, rtol=tol)


@pytest.mark.parametrize("name", NAMES)
def test_forward_keeps_dtype_and_type(backend, name):
    fwd, _ = get_activation(name)
    A = fwd(backend.xp, backend.arr(_away_from_kink((3, 4))))
    assert backend.np(A).shape == (3, 4)
    assert A.dtype == backend.dtype


def test_softmax_columns_sum_to_one_and_stable_for_huge_logits(backend):
    softmax, _ = get_activation("softmax")
    Z = np.array([[1000.0, -1000.0, 0.5], [999.0, -1001.0, -0.3], [998.0, -1002.0, 2.0]])
    A = backend.np(softmax(backend.xp, backend.arr(Z)))
    assert np.all(np.isfinite(A))
    np.testing.assert_allclose(A.sum(axis=0), 1.0, rtol=0, atol=10 * backend.tol)
    e = np.exp([2.0, 1.0, 0.0])                         # both huge columns are softmax(2, 1, 0)
    np.testing.assert_allclose(A[:, 0], e / e.sum(), rtol=10 * backend.tol)
    np.testing.assert_allclose(A[:, 1], e / e.sum(), rtol=10 * backend.tol)


def test_sigmoid_saturates_without_overflow_and_keeps_tail_accuracy(backend):
    sigmoid, _ = get_activation("sigmoid")
    Z = np.array([[-1000.0, -30.0, 0.0, 30.0, 1000.0]])
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        A = backend.np(sigmoid(backend.xp, backend.arr(Z)))
    np.testing.assert_allclose(A[0, [0, 2, 4]], [0.0, 0.5, 1.0], atol=0)
    exact = 1 / (1 + np.exp(-Z[0, 1:4]))                 # absolute accuracy ~ one ulp of 1
    np.testing.assert_allclose(A[0, 1:4], exact, rtol=0, atol=backend.tol)


def test_leaky_relu_uses_slope(backend):
    fwd, bwd = get_activation("leaky_relu")
    xp, Z = backend.xp, backend.arr(np.array([[-2.0, 3.0]]))
    np.testing.assert_allclose(backend.np(fwd(xp, Z, slope=0.1)), [[-0.2, 3.0]], rtol=backend.tol)
    dZ = bwd(xp, backend.arr(np.ones((1, 2))), Z, None, slope=0.1)
    np.testing.assert_allclose(backend.np(dZ), [[0.1, 1.0]], rtol=backend.tol)


def test_relu_derivative_at_kink_is_zero(backend):
    _, bwd = get_activation("relu")
    Z = backend.arr(np.zeros((1, 3)))
    assert np.all(backend.np(bwd(backend.xp, backend.arr(np.ones((1, 3))), Z, None)) == 0.0)


def test_unknown_activation_names_value_and_choices():
    with pytest.raises(ValueError, match=r"'swish'.*leaky_relu"):
        get_activation("swish")
    assert sorted(ACTIVATIONS) == sorted(NAMES)
