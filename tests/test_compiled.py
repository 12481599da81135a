"""The compiled forward/backward pass (ddl/nn/compiled.py) against the portable model.forward,
losses and model.backward it replaces, for every hidden activation and output.

Tolerances: 1e-12 relative in float64 (the loops sum the matrix products in another order than
BLAS), 1e-5 in float32; training with it equals training without it to 1e-10 (float64)."""
from __future__ import annotations

import numba  # noqa: F401 - a dependency (pyproject.toml): a missing one fails here
import numpy as np
import pytest

from ddl.backend import get_backend
from ddl.nn import losses, model
from ddl.nn.compiled import MAX_MACS, MIN_STEPS, compiled_pass
from ddl.params import Flat

NUMPY = get_backend("numpy")
NETS = [("relu", "sigmoid", [2, 20, 7, 5, 1]), ("leaky_relu", "softmax", [4, 9, 6, 3]),
        ("tanh", "linear", [3, 5, 2]), ("sigmoid", "sigmoid", [3, 4, 1]),
        ("linear", "softmax", [3, 4, 5]), ("relu", "softmax", [6, 3])]     # the last: no hidden layer
TOL = {"float64": 1e-12, "float32": 1e-5}


def rel(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / max(np.max(np.abs(b)), 1e-300))


def reference(spec, p, X, y):
    """The portable pass in float64: (summed loss, gradients)."""
    ZL, caches, _ = model.forward(np, p, X, spec, train=True)
    Y = losses.encode_targets(np, y, spec.output, spec.sizes[-1], X.dtype, check=False)
    grads = Flat.zeros(model.layout(spec), np, X.dtype)
    model.backward(np, losses.loss_grad(np, ZL, Y, spec.output), caches, spec, out=grads)
    return float(losses.loss_sum(np, ZL, Y, spec.output)), grads.buf


def batch(rng, sizes, output, b, dtype):
    X = rng.standard_normal((sizes[0], b)).astype(dtype)
    if output == "linear":
        return X, rng.standard_normal((b, sizes[-1]))
    return X, rng.integers(0, max(sizes[-1], 2), b).astype(np.uint8)      # labels as files hold them


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("hidden, output, sizes", NETS)
def test_the_compiled_pass_equals_the_portable_one(hidden, output, sizes, dtype):
    rng = np.random.default_rng(5)
    spec = model.make_spec(sizes, hidden, output, slope=0.2)
    layout = model.layout(spec)
    p = Flat(layout, rng.standard_normal(layout.size).astype(dtype), np)
    run = compiled_pass(spec, NUMPY, 16, "on")
    g = np.full(layout.size, np.nan, dtype)                  # every gradient must be written
    for b in (16, 3, 40, 1):                    # a full batch, a short last one, a larger one, one
        X, y = batch(rng, sizes, output, b, dtype)
        X = np.asfortranarray(X)                # as the feeder gives it: a transposed view of rows
        loss = run(p.buf, g, X, y)
        ref_loss, ref_g = reference(spec, Flat(layout, p.buf.astype(np.float64), np),
                                    X.astype(np.float64), y)
        assert abs(loss - ref_loss) <= TOL[dtype] * abs(ref_loss), (b, loss, ref_loss)
        assert g.dtype == np.dtype(dtype) and rel(g, ref_g) < TOL[dtype], b


def test_a_non_finite_input_gives_a_non_finite_loss_and_gradient():
    spec = model.make_spec([2, 5, 1], "relu", "sigmoid")
    layout = model.layout(spec)
    p, g = np.ones(layout.size), np.zeros(layout.size)
    X = np.array([[1.0, np.inf], [0.0, 1.0]])
    loss = compiled_pass(spec, NUMPY, 2, "on")(p, g, X, np.array([0, 1]))
    assert not np.isfinite(loss) and not np.isfinite(g.sum())       # the step's tail sees both


def test_a_label_out_of_range_hits_no_class_as_in_the_portable_pass():
    spec = model.make_spec([3, 4], "relu", "softmax")
    layout = model.layout(spec)
    rng = np.random.default_rng(0)
    p, X, y = rng.standard_normal(layout.size), rng.standard_normal((3, 5)), np.array([0, 7, 3, 1, 2])
    g = np.zeros(layout.size)
    loss = compiled_pass(spec, NUMPY, 5, "on")(p, g, X, y)
    ref_loss, ref_g = reference(spec, Flat(layout, p, np), X, y)
    assert abs(loss - ref_loss) <= 1e-12 * abs(ref_loss) and rel(g, ref_g) < 1e-12


@pytest.mark.parametrize("overrides", [{"hidden": [20, 7, 5], "activation": "relu", "optimizer": "adam"},
                                       {"hidden": [6, 4], "activation": "tanh", "optimizer": "momentum",
                                        "l2": 0.3}])
def test_training_with_the_compiled_pass_equals_training_without_it(overrides):
    from test_train import make, small_cfg

    from ddl.train import train

    finals, histories = {}, {}
    for mode in ("on", "off"):
        cfg = small_cfg(compiled_pass=mode, epochs=4)
        cfg.model.batchnorm, cfg.model.keep_prob = False, 1.0
        cfg.model.hidden, cfg.model.activation = overrides["hidden"], overrides["activation"]
        cfg.optimizer.name, cfg.model.l2 = overrides["optimizer"], overrides.get("l2", 0.0)
        ds, setup, state = make(cfg)
        state = train(ds, setup, state)
        finals[mode], histories[mode] = state.params.buf.copy(), state.history
    assert rel(finals["on"], finals["off"]) < 1e-10
    for a, b in zip(histories["on"], histories["off"]):
        assert a["train_cost"] == pytest.approx(b["train_cost"], rel=1e-10)


def test_which_pass_each_mode_picks():
    small = model.make_spec([2, 20, 7, 5, 1], "relu", "sigmoid")
    assert compiled_pass(small, NUMPY, 64, "auto", steps=MIN_STEPS) is not None
    assert compiled_pass(small, NUMPY, 64, "auto", steps=MIN_STEPS - 1) is None   # not worth loading
    assert compiled_pass(small, NUMPY, 64, "off", steps=10 * MIN_STEPS) is None
    assert compiled_pass(small, NUMPY, 64, "on", steps=1) is not None
    wide = model.make_spec([784, 1024, 10], "relu", "softmax")
    assert compiled_pass(wide, NUMPY, 256, "auto", steps=10 * MIN_STEPS) is None   # BLAS's work
    assert sum(a * b for a, b in zip(small.sizes, small.sizes[1:])) * 64 <= MAX_MACS
    refusals = [(model.make_spec([2, 5, 1], keep_prob=0.8), NUMPY, "dropout is on"),
                (model.make_spec([2, 5, 1], batchnorm=True), NUMPY, "batch norm is on"),
                (wide, NUMPY, "BLAS's products are faster there"),
                (small, get_backend("array_api_strict"), "NumPy only")]
    for spec, backend, says in refusals:
        assert compiled_pass(spec, backend, 256, "auto", steps=10 * MIN_STEPS) is None
        with pytest.raises(ValueError, match=f"train.compiled_pass=on does not fit this run: .*{says}"):
            compiled_pass(spec, backend, 256, "on")

