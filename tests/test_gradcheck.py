"""Gradient checks (float64): every hidden x output x L2 x batch-norm combination, the course's
own gradient_check_n test case (correct and with its planted bugs), and refusal of dropout."""
import itertools

import numpy as np
import pytest

from ddl.nn.gradcheck import check_model, cost_and_grad, gradient_check
from ddl.nn.init import init_params
from ddl.nn.model import forward, layout, make_spec

HIDDEN = ["sigmoid", "tanh", "relu", "leaky_relu"]
OUTPUTS = {"sigmoid": 1, "softmax": 3, "linear": 2}
M = 8
RNG = np.random.default_rng(42)
X = RNG.standard_normal((4, M))
TARGETS = {
    "sigmoid": np.array([0, 1, 1, 0, 1, 0, 0, 1]),
    "softmax": np.array([0, 1, 2, 2, 1, 0, 2, 1]),
    "linear": RNG.standard_normal((M, 2)),
}
# He init from seed 1 keeps every relu/leaky_relu pre-activation at least MARGIN away from the
# kink z = 0 (asserted below): a 1e-7 parameter step moves z by ~1e-7 * |a| << MARGIN, so the
# two-sided difference never straddles the kink, where the derivative is undefined.
SEED, MARGIN = 1, 1e-4


def _spec(hidden, output, batchnorm, depth):
    """n_x = 4, then depth - 1 hidden layers of 5, 3, 4 units: 2, 3 or 4 weight layers."""
    return make_spec([4, *[5, 3, 4][: depth - 1], OUTPUTS[output]], hidden, output,
                     batchnorm=batchnorm)


def _min_kink_distance(bk, spec, params, **dropout):
    """Smallest |z| over the hidden pre-activations (caches[l][2] = Z for relu/leaky_relu)."""
    params = {k: bk.arr(v, "float64") for k, v in params.items()}
    _, caches, _ = forward(bk.xp, params, bk.arr(X, "float64"), spec, train=True, **dropout)
    return min(float(np.abs(bk.np(c[2])).min()) for c in caches[:-1])


COMBOS = list(itertools.product(HIDDEN, OUTPUTS, [0.0, 0.7], [False, True]))


@pytest.mark.parametrize("hidden,output,lam,batchnorm", COMBOS)
def test_every_combination_passes_gradient_check(backend64, hidden, output, lam, batchnorm):
    depth = 2 + (HIDDEN.index(hidden) + list(OUTPUTS).index(output)) % 3
    spec = _spec(hidden, output, batchnorm, depth)
    if hidden in ("relu", "leaky_relu"):
        assert _min_kink_distance(backend64, spec, init_params(spec, "he", SEED)) > MARGIN
    diff = check_model(spec, X, TARGETS[output], lam=lam, seed=SEED, backend=backend64.backend)
    assert diff < 1e-7, f"{spec}: difference {diff:.3e}"


def _course_case():
    """gradient_check_n_test_case: np.random.seed(1), randn x, W1, b1, W2, b2, W3, b3 in order."""
    rs = np.random.RandomState(1)
    x = rs.randn(4, 3)
    shapes = {"W1": (5, 4), "b1": (5, 1), "W2": (3, 5), "b2": (3, 1), "W3": (1, 3), "b3": (1, 1)}
    params = {name: rs.randn(*shape) for name, shape in shapes.items()}
    return make_spec([4, 5, 3, 1], "relu", "sigmoid"), x, np.array([1, 1, 0]), params


def test_course_gradient_check_n_case(backend64):
    spec, x, y, params = _course_case()
    diff = check_model(spec, x, y, params=params, backend=backend64.backend)
    assert diff < 1e-7                                   # the course accepts < 2e-7


def test_course_planted_bugs_are_caught_with_the_course_number(backend64):
    """The notebook's buggy backprop (dW2 x 2, db1 x 4) reports difference 0.2850931567761624."""
    spec, x, y, params = _course_case()
    cost, grad, theta = cost_and_grad(spec, x, y, backend=backend64.backend, params=params)
    off = layout(spec).offsets()

    def buggy(t):
        g = grad(t)
        g[off["W2"][0]:off["W2"][1]] *= 2
        g[off["b1"][0]:off["b1"][1]] *= 4
        return g
    assert abs(gradient_check(cost, buggy, theta) - 0.2850931567761624) < 1e-7


@pytest.mark.parametrize("hidden", ["tanh", "relu"])     # dropout applied to a copy / in place
def test_dropout_backward_with_a_fixed_mask(backend64, hidden):
    """A fixed key and example indices freeze the masks, so the cost is deterministic again."""
    spec = make_spec([4, 5, 3, 3], hidden, "softmax", keep_prob=[0.6, 0.8])
    params = init_params(spec, "he", SEED)
    # when dropout zeroes a unit's whole input column, z = b exactly: zero biases would put relu
    # on its kink, so the biases are drawn too
    rng = np.random.default_rng(SEED)
    params |= {b: rng.standard_normal(params[b].shape) for b in ("b1", "b2", "b3")}
    fixed = dict(key=3, idx=np.arange(M))
    if hidden == "relu":
        idx = backend64.arr(fixed["idx"], None)
        assert _min_kink_distance(backend64, spec, params, key=3, idx=idx) > MARGIN
    cost, grad, theta = cost_and_grad(spec, X, TARGETS["softmax"], 0.7, backend64.backend,
                                      params=params, **fixed)
    assert gradient_check(cost, grad, theta) < 1e-7


def test_check_model_refuses_dropout():
    spec = make_spec([4, 5, 1], keep_prob=0.5)
    with pytest.raises(ValueError, match=r"keep_prob=1.*random"):
        check_model(spec, X, TARGETS["sigmoid"])


def test_gradient_check_on_a_known_function():
    theta = np.array([0.5, -1.0, 2.0])
    cost = lambda t: float(np.sum(t ** 3))                # noqa: E731
    assert gradient_check(cost, lambda t: 3 * t ** 2, theta) < 1e-8
    assert gradient_check(cost, lambda t: 3 * t ** 2 + [0, 0, 0.1], theta) > 1e-3
    with pytest.raises(ValueError, match="1-D"):
        gradient_check(cost, lambda t: t, np.zeros((2, 2)))
