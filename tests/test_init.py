"""Initialization: shapes, zeros, scales, He/Xavier statistics, reproducibility."""
import numpy as np
import pytest

from ddl.nn.init import init_bn_state, init_params
from ddl.nn.model import bn_state_layout, layout, make_spec

BIG = make_spec([1000, 500, 1])            # W1 has 500,000 entries: std estimates to ~0.1%


@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("method", ["zeros", "random", "he", "xavier"])
def test_shapes_and_dtype_follow_layout(method, batchnorm):
    spec = make_spec([4, 5, 3, 2], output="softmax", batchnorm=batchnorm)
    params = init_params(spec, method, seed=3)
    assert list(params) == layout(spec).names
    for name, shape in layout(spec).entries:
        assert params[name].shape == shape and params[name].dtype == np.float64


def test_zeros_and_fixed_vectors():
    spec = make_spec([4, 5, 3, 1], batchnorm=True)
    params = init_params(spec, "zeros")
    assert all(not params[n].any() for n in layout(spec).names if not n.startswith("gamma"))
    he = init_params(spec, "he")
    assert np.all(he["gamma1"] == 1.0) and np.all(he["gamma2"] == 1.0)
    assert not he["beta1"].any() and not he["b3"].any() and "b1" not in he


@pytest.mark.parametrize("method,std", [
    ("random", 0.01), ("he", np.sqrt(2 / 1000)), ("xavier", np.sqrt(1 / 1000)),
])
def test_weight_std_on_a_large_layer(method, std):
    W = init_params(BIG, method, seed=0)["W1"]
    # with N = 5e5 draws the sample std has relative sd 1/sqrt(2N) = 0.1%; allow 1% (10 sd)
    assert abs(W.std() / std - 1) < 0.01
    assert abs(W.mean()) < 5 * std / np.sqrt(W.size)


def test_random_scale_is_used():
    W = init_params(BIG, "random", seed=0, scale=0.5)["W1"]
    assert abs(W.std() / 0.5 - 1) < 0.01


def test_same_seed_same_weights_drawn_layer_by_layer():
    spec = make_spec([4, 5, 3, 1])
    a, b = init_params(spec, "he", seed=7), init_params(spec, "he", seed=7)
    assert all(np.array_equal(a[n], b[n]) for n in a)
    assert not np.array_equal(a["W1"], init_params(spec, "he", seed=8)["W1"])
    rng = np.random.default_rng(7)                       # W1 first, then W2 from the same stream
    np.testing.assert_array_equal(a["W1"], rng.standard_normal((5, 4)) * np.sqrt(2 / 4))
    np.testing.assert_array_equal(a["W2"], rng.standard_normal((3, 5)) * np.sqrt(2 / 5))


def test_unknown_method():
    with pytest.raises(ValueError, match=r"'glorot'.*xavier"):
        init_params(make_spec([2, 1]), "glorot")


def test_bn_state_starts_at_mean0_var1():
    spec = make_spec([4, 5, 3, 1], batchnorm=True)
    state = init_bn_state(spec)
    assert list(state) == bn_state_layout(spec).names == ["mean1", "var1", "mean2", "var2"]
    assert not state["mean1"].any() and np.all(state["var2"] == 1.0)
    assert init_bn_state(make_spec([4, 5, 1])) == {}


def test_course_stream_gives_the_assignments_starting_weights():
    """stream="course" equals np.random.seed(s) followed by randn per layer (C2W1 He init)."""
    from ddl.nn.init import init_params
    from ddl.nn.model import make_spec

    spec = make_spec([2, 10, 5, 1], "relu", "sigmoid")
    got = init_params(spec, "he", seed=3, stream="course")
    np.random.seed(3)
    for l, (n, n_prev) in enumerate([(10, 2), (5, 10), (1, 5)], start=1):
        expected = np.random.randn(n, n_prev) * np.sqrt(2.0 / n_prev)
        np.testing.assert_array_equal(got[f"W{l}"], expected)
        np.testing.assert_array_equal(got[f"b{l}"], np.zeros((n, 1)))
