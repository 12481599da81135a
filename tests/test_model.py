"""The network: spec validation, layout, dropout split-invariance, eval mode, BN state, helpers."""
import numpy as np
import pytest

from ddl.backend import make_key
from ddl.nn.init import init_bn_state, init_params
from ddl.nn.dropout import dropout_mask
from ddl.nn.losses import encode_targets, loss_sum
from ddl.nn.model import (
    Spec, backward, bn_state_layout, evaluate, forward, l2_cost, layout, make_spec, predict,
    resolve_output,
)
from ddl.params import Flat

RNG = np.random.default_rng(0)
X = RNG.standard_normal((4, 12))
Y3 = np.array([0, 1, 2, 2, 1, 0, 0, 1, 2, 1, 1, 0])


def _params(bk, spec, seed=0):
    return {k: bk.arr(v) for k, v in init_params(spec, "he", seed).items()}


# ---- Spec and resolve_output -------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(hidden="swish"), r"'swish'.*relu"),
    (dict(output="tanh"), r"'tanh'.*softmax"),
    (dict(output="auto"), r"resolve_output"),
    (dict(keep_prob=0.0), r"got 0.0 for hidden layer 1"),
    (dict(keep_prob=[1.0, 1.5]), r"got 1.5 for hidden layer 2"),
    (dict(keep_prob=[0.5]), r"one value per hidden layer \(2\)"),
    (dict(sizes=[4]), r"at least"),
    (dict(sizes=[4, 0, 3]), r"got 0 at position 1"),
    (dict(sizes=[4, 5, 3], output="sigmoid"), r"n_out=3"),
    (dict(sizes=[4, 5, 1], output="softmax"), r"n_out=1"),
])
def test_bad_specs_are_rejected_naming_the_value(kwargs, match):
    args = dict(sizes=[4, 5, 3, 3], output="softmax") | kwargs
    with pytest.raises(ValueError, match=match):
        make_spec(**args)


def test_make_spec_broadcasts_keep_prob_and_spec_is_hashable():
    spec = make_spec([4, 5, 3, 1], keep_prob=0.8)
    assert spec.keep_prob == (0.8, 0.8) and spec.n_layers == 3
    assert hash(Spec([4, 5, 1])) == hash(Spec((np.int64(4), 5, 1)))
    assert Spec([np.int64(4), 5, 1]).sizes == (4, 5, 1)
    assert make_spec([4, 1], keep_prob=0.5).keep_prob == ()        # no hidden layer
    with pytest.raises(ValueError, match="1.5"):
        Spec((4, 5, 1), keep_prob=(1.5,))                # the dataclass itself validates too


@pytest.mark.parametrize("args,expected", [
    (("auto", 2), ("sigmoid", 1)), (("auto", 6), ("softmax", 6)), (("auto", 0, 3), ("linear", 3)),
    (("softmax", 2), ("softmax", 2)), (("linear", 0), ("linear", 1)),
])
def test_resolve_output(args, expected):
    assert resolve_output(*args) == expected


@pytest.mark.parametrize("args,match", [
    (("sigmoid", 3), "got 3"), (("relu", 2), "'relu'"), (("linear", 2), "got 2"),
    (("softmax", 0), "regression"),
])
def test_resolve_output_errors(args, match):
    with pytest.raises(ValueError, match=match):
        resolve_output(*args)


def test_layout_order_with_and_without_batchnorm():
    assert layout(make_spec([4, 5, 3, 1])).names == ["W1", "b1", "W2", "b2", "W3", "b3"]
    bn = make_spec([4, 5, 3, 1], batchnorm=True)
    assert layout(bn).names == ["W1", "gamma1", "beta1", "W2", "gamma2", "beta2", "W3", "b3"]
    assert dict(layout(bn).entries)["gamma2"] == (3, 1)
    assert bn_state_layout(bn).names == ["mean1", "var1", "mean2", "var2"]
    assert bn_state_layout(make_spec([4, 5, 1])).size == 0


# ---- forward / backward ------------------------------------------------------------------------

def test_forward_rejects_wrong_input_shape(backend):
    spec = make_spec([4, 5, 3], output="softmax")
    with pytest.raises(ValueError, match=r"\(3, 12\).*n_x=4"):
        forward(backend.xp, _params(backend, spec), backend.arr(X[:3]), spec, train=False)


def test_forward_needs_key_for_dropout_and_state_for_bn_eval(backend):
    xp, Xb = backend.xp, backend.arr(X)
    drop = make_spec([4, 5, 3], output="softmax", keep_prob=0.5)
    with pytest.raises(ValueError, match="key"):
        forward(xp, _params(backend, drop), Xb, drop, train=True)
    bn = make_spec([4, 5, 3], output="softmax", batchnorm=True)
    with pytest.raises(ValueError, match="bn_state"):
        forward(xp, _params(backend, bn), Xb, bn, train=False)


def test_flat_and_dict_params_agree_and_grads_cover_layout(backend):
    spec = make_spec([4, 5, 3, 3], hidden="tanh", output="softmax", batchnorm=True)
    host = init_params(spec, "he", 1)
    flat = Flat.from_numpy(layout(spec), host, backend.backend, backend.dtype_name)
    xp, Xb = backend.xp, backend.arr(X)
    ZL, caches, state = forward(xp, flat, Xb, spec, train=True)
    ZL2, _, _ = forward(xp, _params(backend, spec, 1), Xb, spec, train=True)
    np.testing.assert_allclose(backend.np(ZL), backend.np(ZL2), rtol=backend.tol)
    grads = backward(xp, ZL, caches, spec)
    assert list(grads) == layout(spec).names
    assert all(backend.np(grads[n]).shape == s for n, s in layout(spec).entries)
    assert sorted(state) == sorted(bn_state_layout(spec).names)


def test_dropout_masks_do_not_depend_on_the_batch_split(backend):
    """12 columns at once == 3 column slices, given the same global example indices."""
    xp, idx = backend.xp, np.arange(100, 112)
    spec = make_spec([4, 6, 5, 3], output="softmax", keep_prob=[0.5, 0.7])
    params = _params(backend, spec)
    whole = dropout_mask(xp, 9, 6, backend.arr(idx, None), 0.5, backend.dtype)
    parts = [dropout_mask(xp, 9, 6, backend.arr(idx[a:a + 4], None), 0.5, backend.dtype)
             for a in (0, 4, 8)]
    np.testing.assert_array_equal(np.concatenate([backend.np(p) for p in parts], 1),
                                  backend.np(whole))

    def run(cols):
        return backend.np(forward(xp, params, backend.arr(X[:, cols]), spec, train=True,
                                      key=5, idx=backend.arr(idx[cols], None))[0])
    split = np.concatenate([run(slice(a, a + 4)) for a in (0, 4, 8)], axis=1)
    np.testing.assert_allclose(split, run(slice(0, 12)), rtol=backend.tol, atol=backend.tol)
    assert not np.allclose(run(slice(0, 12)), backend.np(forward(
        xp, params, backend.arr(X), spec, train=True, key=6, idx=backend.arr(idx, None))[0]))


def test_dropout_keeps_keep_prob_fraction_with_inverted_scaling(backend):
    idx = backend.arr(np.arange(5000), None)
    D = backend.np(dropout_mask(backend.xp, make_key(1, 2), 200, idx, 0.8, backend.dtype))
    # 1e6 Bernoulli(0.8) draws: sd of the kept fraction is 4e-4; allow 3e-3 (7.5 sd)
    assert abs((D > 0).mean() - 0.8) < 3e-3
    assert set(np.unique(D)) == {0.0, np.float32(1 / 0.8) if D.dtype == np.float32 else 1 / 0.8}
    assert abs(D.mean() - 1.0) < 4e-3                   # inverted: the expected activation is kept


def test_eval_mode_applies_no_dropout(backend):
    xp, Xb = backend.xp, backend.arr(X)
    drop = make_spec([4, 6, 5, 3], output="softmax", keep_prob=0.5)
    plain = make_spec([4, 6, 5, 3], output="softmax")
    params = _params(backend, plain)
    ev = backend.np(forward(xp, params, Xb, drop, train=False)[0])
    ref = backend.np(forward(xp, params, Xb, plain, train=True)[0])
    np.testing.assert_allclose(ev, ref, rtol=backend.tol)
    tr = forward(xp, params, Xb, drop, train=True, key=1, idx=backend.arr(np.arange(12), None))
    assert not np.allclose(backend.np(tr[0]), ev)


def test_batchnorm_running_state_and_eval_mode(backend):
    xp, Xb = backend.xp, backend.arr(X)
    spec = make_spec([4, 6, 3], output="softmax", batchnorm=True, bn_momentum=0.8)
    params = _params(backend, spec)
    state0 = {k: backend.arr(v) for k, v in init_bn_state(spec).items()}
    _, _, state = forward(xp, params, Xb, spec, train=True, bn_state=state0)
    Z1 = init_params(spec, "he", 0)["W1"] @ X                     # pre-BN, no bias
    np.testing.assert_allclose(backend.np(state["mean1"]), 0.2 * Z1.mean(1, keepdims=True),
                               rtol=100 * backend.tol, atol=100 * backend.tol)
    np.testing.assert_allclose(backend.np(state["var1"]), 0.8 + 0.2 * Z1.var(1, keepdims=True),
                               rtol=100 * backend.tol)
    batch = {"mean1": backend.arr(Z1.mean(1, keepdims=True)),
             "var1": backend.arr(Z1.var(1, keepdims=True))}
    ev, _, same = forward(xp, params, Xb, spec, train=False, bn_state=batch)
    tr, _, _ = forward(xp, params, Xb, spec, train=True)         # batch stats == given stats
    assert same is batch
    np.testing.assert_allclose(backend.np(ev), backend.np(tr), rtol=1e3 * backend.tol,
                               atol=1e3 * backend.tol)


# ---- helpers: l2_cost, evaluate, predict -------------------------------------------------------

def test_l2_cost_counts_weights_only(backend):
    spec = make_spec([4, 5, 3, 1], batchnorm=True)
    host = init_params(spec, "he", 2)
    params = _params(backend, spec, 2)
    expected = 0.7 / (2 * 12) * sum(np.sum(host[f"W{l}"] ** 2) for l in (1, 2, 3))
    for arg in (spec, layout(spec)):
        got = backend.np(l2_cost(backend.xp, params, arg, 0.7, 12))
        np.testing.assert_allclose(got, expected, rtol=10 * backend.tol)
    assert float(backend.np(l2_cost(backend.xp, params, spec, 0.0, 12))) == 0.0


def test_evaluate_and_predict(backend):
    xp, Xb = backend.xp, backend.arr(X)
    spec = make_spec([4, 6, 3], output="softmax")
    params = _params(backend, spec)
    yb = backend.arr(Y3, None)
    loss, correct, count = evaluate(xp, params, Xb, yb, spec)
    ZL = forward(xp, params, Xb, spec, train=False)[0]
    Y = encode_targets(xp, yb, "softmax", 3, backend.dtype)
    np.testing.assert_allclose(backend.np(loss), backend.np(loss_sum(xp, ZL, Y, "softmax")),
                               rtol=backend.tol)
    labels = backend.np(predict(xp, params, Xb, spec))
    np.testing.assert_array_equal(labels, backend.np(ZL).argmax(axis=0))
    assert float(backend.np(correct)) == float((labels == Y3).sum())
    assert float(backend.np(count)) == 12.0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kw", [dict(hidden="relu", output="sigmoid", sizes=[4, 6, 5, 1]),
                                dict(hidden="tanh", output="softmax", sizes=[4, 5, 3, 3], batchnorm=True),
                                dict(hidden="leaky_relu", output="softmax", sizes=[4, 7, 3],
                                     keep_prob=0.7)])
def test_gradients_written_into_the_flat_buffer_equal_the_returned_ones(dtype, kw):
    """backward(out=flat) (NumPy's out=, the trainer's no-copy path) gives bit-identical gradients."""
    from ddl.backend import get_backend

    bk = get_backend("numpy")
    kw = dict(kw)
    spec = make_spec(kw.pop("sizes"), **kw)
    lay = layout(spec)
    params = Flat.from_numpy(lay, init_params(spec, "he", 3), bk, dtype)
    Xb = X.astype(dtype)
    y = (Y3 % 2) if spec.output == "sigmoid" else Y3
    ZL, caches, _ = forward(bk.xp, params, Xb, spec, train=True, key=7, idx=np.arange(12))
    Yb = encode_targets(bk.xp, y, spec.output, spec.sizes[-1], ZL.dtype)
    from ddl.nn.losses import loss_grad

    dZL = loss_grad(bk.xp, ZL, Yb, spec.output)
    returned = backward(bk.xp, dZL, caches, spec)
    flat = Flat.from_numpy(lay, {n: np.full(s, np.nan) for n, s in lay.entries}, bk, dtype)
    written = backward(bk.xp, dZL, caches, spec, out=flat)
    for name in lay.names:
        assert written[name] is flat[name]
        assert np.array_equal(flat[name], returned[name]), name
