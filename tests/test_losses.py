"""Losses from logits: saturation, direct formulas, gradients, target encoding, predictions."""
import numpy as np
import pytest

from ddl.nn.losses import (
    LOSSES, LabelError, correct_count, encode_targets, loss_grad, loss_sum, predict_labels,
)

RNG = np.random.default_rng(0)
CASES = {  # output -> (logits (n_out, b), targets Y (n_out, b)) in the normal range
    "sigmoid": (RNG.standard_normal((1, 6)) * 2, np.array([[1.0, 0, 1, 1, 0, 0]])),
    "softmax": (RNG.standard_normal((3, 6)) * 2, np.eye(3)[:, [0, 2, 1, 1, 0, 2]]),
    "linear": (RNG.standard_normal((2, 6)), RNG.standard_normal((2, 6))),
}


def _direct(output, Z, Y):
    """The textbook formulas on probabilities (fine in float64 away from saturation)."""
    if output == "sigmoid":
        A = 1 / (1 + np.exp(-Z))
        return -np.sum(Y * np.log(A) + (1 - Y) * np.log(1 - A))
    if output == "softmax":
        A = np.exp(Z) / np.exp(Z).sum(axis=0)
        return -np.sum(Y * np.log(A))
    return np.sum((Z - Y) ** 2)


@pytest.mark.parametrize("output", list(LOSSES))
def test_loss_matches_direct_formula(backend, output):
    Z, Y = CASES[output]
    got = backend.np(loss_sum(backend.xp, backend.arr(Z), backend.arr(Y), output))
    assert got.shape == ()
    np.testing.assert_allclose(got, _direct(output, Z, Y), rtol=100 * backend.tol)


@pytest.mark.parametrize("output", list(LOSSES))
def test_loss_grad_matches_finite_differences(backend, output):
    Z, Y = CASES[output]
    xp, Yb = backend.xp, backend.arr(Y)
    got = backend.np(loss_grad(xp, backend.arr(Z), Yb, output))
    num = backend.num_grad(lambda z: loss_sum(xp, z, Yb, output), Z)
    tol = 1e-7 if backend.dtype_name == "float64" else 5e-3   # FD error: h^2 and roundoff/h
    np.testing.assert_allclose(got, num, atol=tol, rtol=tol)


def test_saturated_logits_give_finite_exact_losses(backend):
    xp = backend.xp
    Z = backend.arr(np.array([[1000.0, -1000.0, 1000.0, -1000.0]]))
    Y = backend.arr(np.array([[1.0, 0.0, 0.0, 1.0]]))
    assert float(backend.np(loss_sum(xp, Z, Y, "sigmoid"))) == 2000.0   # two wrong by 1000 each
    assert np.all(np.isfinite(backend.np(loss_grad(xp, Z, Y, "sigmoid"))))
    Zc = backend.arr(np.array([[1000.0, 1000.0], [0.0, 0.0], [-1000.0, -1000.0]]))
    Yc = encode_targets(xp, backend.arr(np.array([0, 2]), None), "softmax", 3, backend.dtype)
    assert float(backend.np(loss_sum(xp, Zc, Yc, "softmax"))) == 2000.0  # 0 + (1000 - -1000)
    assert np.all(np.isfinite(backend.np(loss_grad(xp, Zc, Yc, "softmax"))))


def test_encode_one_hot_and_already_one_hot(backend):
    xp = backend.xp
    Y = encode_targets(xp, backend.arr(np.array([2, 0, 1, 2]), None), "softmax", 3, backend.dtype)
    expected = np.eye(3)[:, [2, 0, 1, 2]]
    np.testing.assert_array_equal(backend.np(Y), expected)
    assert Y.dtype == backend.dtype
    again = encode_targets(xp, backend.arr(expected), "softmax", 3, backend.dtype)
    np.testing.assert_array_equal(backend.np(again), expected)
    row = encode_targets(xp, backend.arr(np.array([[1, 0]]), None), "softmax", 3, backend.dtype)
    np.testing.assert_array_equal(backend.np(row), np.eye(3)[:, [1, 0]])


def test_uint8_labels_do_not_wrap_around(backend):
    """The football data's labels are uint8 (1, m): 1 - y must be 0/1, never 255."""
    xp = backend.xp
    y8 = backend.arr(np.array([[1, 0, 1, 0]], dtype=np.uint8), None)
    Y = encode_targets(xp, y8, "sigmoid", 1, backend.dtype)
    np.testing.assert_array_equal(backend.np(1.0 - Y), [[0.0, 1.0, 0.0, 1.0]])
    Z = backend.arr(np.array([[0.3, -1.2, 2.0, 0.1]]))
    Yf = backend.arr(np.array([[1.0, 0.0, 1.0, 0.0]]))
    np.testing.assert_allclose(backend.np(loss_sum(xp, Z, Y, "sigmoid")),
                               backend.np(loss_sum(xp, Z, Yf, "sigmoid")), rtol=backend.tol)


def test_regression_targets_become_columns(backend):
    xp = backend.xp
    y = np.arange(6.0).reshape(3, 2)                     # (b, k)
    np.testing.assert_array_equal(backend.np(encode_targets(xp, backend.arr(y), "linear", 2,
                                                            backend.dtype)), y.T)
    Y1 = encode_targets(xp, backend.arr(np.arange(3.0)), "linear", 1, backend.dtype)
    assert backend.np(Y1).shape == (1, 3)
    with pytest.raises(ValueError, match="3 columns"):
        encode_targets(xp, backend.arr(np.zeros((4, 3))), "linear", 2, backend.dtype)


@pytest.mark.parametrize("output,n_out,labels,bad", [
    ("softmax", 3, [0, 3, 1], "3"), ("softmax", 3, [0, -1], "-1"), ("sigmoid", 1, [0, 2], "2"),
])
def test_labels_out_of_range_name_the_value(backend, output, n_out, labels, bad):
    with pytest.raises(LabelError, match=rf"got {bad}\b"):
        encode_targets(backend.xp, backend.arr(np.array(labels), None), output, n_out,
                       backend.dtype)
    assert issubclass(LabelError, ValueError)


def test_predictions_and_correct_counts(backend):
    xp = backend.xp
    Zs = backend.arr(np.array([[-0.1, 0.2, 0.0]]))        # z = 0 is A = 0.5, not > 0.5: class 0
    np.testing.assert_array_equal(backend.np(predict_labels(xp, Zs, "sigmoid")), [0, 1, 0])
    Zm = backend.arr(np.array([[0.1, 3.0], [2.0, -1.0], [0.5, 0.0]]))
    np.testing.assert_array_equal(backend.np(predict_labels(xp, Zm, "softmax")), [1, 0])
    y = backend.arr(np.array([1, 2]), None)
    assert float(backend.np(correct_count(xp, Zm, y, "softmax"))) == 1.0
    assert float(backend.np(correct_count(xp, Zs, backend.arr(np.array([0, 1, 1]), None),
                                          "sigmoid"))) == 2.0
    assert float(backend.np(correct_count(xp, Zm, y, "linear"))) == 0.0
    assert predict_labels(xp, Zm, "linear") is Zm


def test_unknown_output_is_rejected(backend):
    with pytest.raises(ValueError, match=r"'tanh'.*softmax"):
        loss_sum(backend.xp, backend.arr(np.zeros((1, 1))), backend.arr(np.zeros((1, 1))), "tanh")
