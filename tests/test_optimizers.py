"""Optimizers: one step against the hand formula on every backend, convergence on a quadratic
and on Rosenbrock, purity, checkpoint round trips, bad input; plus add_l2."""
import math

import numpy as np
import pytest

from ddl.backend import get_backend
from ddl.checkpoint import state_from_numpy, state_to_numpy
from ddl.optim import OPTIMIZERS, add_l2, adam, make_optimizer, momentum

CASES = [("numpy", "float32"), ("numpy", "float64"),
         ("array_api_strict", "float32"), ("array_api_strict", "float64")]
RTOL = {"float32": 1e-5, "float64": 1e-12}
LR = 0.1
# Three consecutive gradients of a 3-element buffer; the 1e-9 entries make epsilon matter.
GRADS = np.array([[0.5, -2.0, 1e-9], [0.25, 1.0, -3e-9], [-1.0, 0.5, 2e-9]])
HYPER = {"gd": {}, "momentum": {"beta": 0.8}, "rmsprop": {"beta2": 0.9, "epsilon": 1e-8},
         "adam": {"beta1": 0.8, "beta2": 0.9, "epsilon": 1e-8}}


def is_array(backend, a):
    """The backend's own array type (array_api_strict 2.6 no longer exports `Array`, so take the
    type of an array it made rather than rely on Backend.is_array)."""
    return type(a) is type(backend.xp.asarray(0.0))


def expected_deltas(name):
    """The course's formulas written out step by step in float64 NumPy."""
    g1, g2, g3 = GRADS
    if name == "gd":
        return [LR * g1, LR * g2, LR * g3]
    if name == "momentum":
        v1 = 0.2 * g1
        v2 = 0.8 * v1 + 0.2 * g2
        v3 = 0.8 * v2 + 0.2 * g3
        return [LR * v1, LR * v2, LR * v3]
    if name == "rmsprop":
        s1 = 0.1 * g1**2
        s2 = 0.9 * s1 + 0.1 * g2**2
        s3 = 0.9 * s2 + 0.1 * g3**2
        return [LR * g / (np.sqrt(s) + 1e-8) for g, s in ((g1, s1), (g2, s2), (g3, s3))]
    v1, s1 = 0.2 * g1, 0.1 * g1**2
    v2, s2 = 0.8 * v1 + 0.2 * g2, 0.9 * s1 + 0.1 * g2**2
    v3, s3 = 0.8 * v2 + 0.2 * g3, 0.9 * s2 + 0.1 * g3**2
    d1 = LR * (v1 / (1 - 0.8)) / (np.sqrt(s1 / (1 - 0.9)) + 1e-8)          # t = 1
    d2 = LR * (v2 / (1 - 0.8**2)) / (np.sqrt(s2 / (1 - 0.9**2)) + 1e-8)    # t = 2
    d3 = LR * (v3 / (1 - 0.8**3)) / (np.sqrt(s3 / (1 - 0.9**3)) + 1e-8)    # t = 3
    return [d1, d2, d3]


def run_steps(opt, backend, dtype, grads, state=None):
    """Apply `opt` to each host gradient; return (host deltas, final state)."""
    if state is None:
        state = opt.init(backend.asarray(np.zeros(3), dtype))
    deltas = []
    for g in grads:
        delta, state = opt.update(backend.asarray(g, dtype), state, LR)
        assert is_array(backend, delta)
        assert delta.dtype == backend.dtype(dtype)
        deltas.append(backend.to_numpy(delta))
    return deltas, state


@pytest.mark.parametrize("backend_name,dtype", CASES)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_steps_match_hand_formulas(name, backend_name, dtype):
    backend = get_backend(backend_name)
    deltas, state = run_steps(make_optimizer(name, **HYPER[name]), backend, dtype, GRADS)
    for got, want in zip(deltas, expected_deltas(name)):
        np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=0)
    for key, value in state.items():
        if key == "t":
            assert type(value) is int and value == 3
        else:
            assert is_array(backend, value) and value.dtype == backend.dtype(dtype)


def test_float32_stays_float32_with_numpy_scalar_hyper_parameters():
    # A NumPy float64 scalar lr/beta would promote a float32 buffer under NEP 50; floats do not.
    backend = get_backend("numpy")
    opt = adam(beta1=np.float64(0.9), beta2=np.float64(0.99), epsilon=np.float64(1e-8))
    g = backend.asarray(GRADS[0], "float32")
    delta, state = opt.update(g, opt.init(g), np.float64(LR))
    assert delta.dtype == np.float32 and state["v"].dtype == np.float32


A = np.array([[3.0, 1.0], [1.0, 2.0]])      # SPD, eigenvalues 1.38 and 3.62
B = np.array([1.0, -1.0])


def quadratic_grad(x):
    """Gradient of f(x) = 0.5 x^T A x - b^T x; minimum at A^-1 b."""
    return A @ x - B


def rosenbrock_grad(x):
    """Gradient of f(x, y) = (1 - x)^2 + 100 (y - x^2)^2; minimum at (1, 1)."""
    r = x[1] - x[0] ** 2
    return np.array([-2.0 * (1.0 - x[0]) - 400.0 * x[0] * r, 200.0 * r])


def minimise(name, grad, x0, lr, steps):
    """Run `steps` updates from x0; `lr` is a float or a function of the step."""
    opt, x = make_optimizer(name), np.array(x0)
    state = opt.init(x)
    for i in range(steps):
        delta, state = opt.update(grad(x), state, lr(i) if callable(lr) else lr)
        x = x - delta
    return x


# Default betas/epsilon; constant rates except RMSprop on Rosenbrock, whose fixed-size steps
# (g / rms(g)) rattle in the narrow valley unless the rate decays.
QUADRATIC = {"gd": (0.2, 300), "momentum": (0.1, 500), "rmsprop": (1e-3, 5000),
             "adam": (0.05, 1000)}
ROSENBROCK = {"gd": (1e-3, 30000), "momentum": (1e-2, 30000),
              "rmsprop": (lambda i: 1e-2 / (1.0 + i / 200.0), 20000), "adam": (1e-2, 20000)}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_converges_on_convex_quadratic(name):
    lr, steps = QUADRATIC[name]
    x = minimise(name, quadratic_grad, [0.0, 0.0], lr, steps)
    np.testing.assert_allclose(x, np.linalg.solve(A, B), rtol=0, atol=1e-8)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_converges_on_rosenbrock(name):
    lr, steps = ROSENBROCK[name]
    x = minimise(name, rosenbrock_grad, [-1.2, 1.0], lr, steps)
    np.testing.assert_allclose(x, [1.0, 1.0], rtol=0, atol=1e-3)


@pytest.mark.parametrize("backend_name,dtype", CASES)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_round_trip_and_resume_are_exact(name, backend_name, dtype, tmp_path):
    backend, opt = get_backend(backend_name), make_optimizer(name, **HYPER[name])
    _, state = run_steps(opt, backend, dtype, GRADS[:2])
    host = state_to_numpy(state, backend.to_numpy)
    assert sorted(host) == sorted(f"opt/{k}" for k in state)
    if name == "adam":
        assert host["opt/t"].shape == () and host["opt/t"].dtype == np.int64 and host["opt/t"] == 2
    np.savez(tmp_path / "ckpt.npz", W1=np.ones((2, 3)), **host)   # other keys are ignored
    with np.load(tmp_path / "ckpt.npz") as npz:
        restored = state_from_numpy(dict(npz), backend, dtype)
    assert sorted(restored) == sorted(state)
    for key, value in state.items():
        if key == "t":
            assert type(restored[key]) is int and restored[key] == value
        else:
            assert is_array(backend, restored[key]) and restored[key].dtype == value.dtype
            np.testing.assert_array_equal(backend.to_numpy(restored[key]), backend.to_numpy(value))
    more = GRADS[2:] * 3.0
    want, _ = run_steps(opt, backend, dtype, more, state)
    got, _ = run_steps(opt, backend, dtype, more, restored)
    np.testing.assert_array_equal(got, want)   # bit-identical continuation


@pytest.mark.parametrize("backend_name,dtype", CASES)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_update_is_pure(name, backend_name, dtype):
    backend, opt = get_backend(backend_name), make_optimizer(name, **HYPER[name])
    _, state = run_steps(opt, backend, dtype, GRADS[:1])
    before = state_to_numpy(state, backend.to_numpy)
    g = backend.asarray(GRADS[1], dtype)
    _, new = opt.update(g, state, LR)
    assert new is not state
    assert all(new[k] is not state[k] for k in state if k != "t")
    after = state_to_numpy(state, backend.to_numpy)
    assert sorted(after) == sorted(before)
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
    np.testing.assert_array_equal(backend.to_numpy(g), GRADS[1].astype(dtype))


def test_make_optimizer_ignores_irrelevant_keys_and_uses_relevant_ones():
    everything = {"beta": 0.5, "beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}
    assert make_optimizer("gd", **everything).name == "gd"
    opt = make_optimizer("momentum", **everything)
    g = np.array([1.0, -2.0])
    delta, _ = opt.update(g, opt.init(g), LR)
    np.testing.assert_allclose(delta, LR * 0.5 * g, rtol=1e-15, atol=0)   # beta = 0.5 used


def test_unknown_optimizer_name_lists_choices():
    with pytest.raises(ValueError, match=r"one of \('gd', 'momentum', 'rmsprop', 'adam'\).*'sgd'"):
        make_optimizer("sgd")


@pytest.mark.parametrize("key,value,message", [
    ("beta", 1.0, r"beta must be in \[0, 1\), got 1.0"),
    ("beta1", -0.1, r"beta1 must be in \[0, 1\), got -0.1"),
    ("beta2", 1.5, r"beta2 must be in \[0, 1\), got 1.5"),
    ("beta2", math.nan, r"beta2 must be in \[0, 1\), got nan"),
    ("epsilon", 0.0, r"epsilon must be a positive finite number, got 0.0"),
    ("epsilon", -1e-8, r"epsilon must be a positive finite number, got -1e-08"),
    ("epsilon", math.inf, r"epsilon must be a positive finite number, got inf"),
    ("betta", 0.9, r"unknown optimizer hyper-parameter\(s\) \['betta'\]"),
])
def test_bad_hyper_parameters_raise(key, value, message):
    with pytest.raises(ValueError, match=message):
        make_optimizer("adam", **{key: value})


def test_factories_check_their_hyper_parameters():
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\), got 1"):
        momentum(beta=1)
    with pytest.raises(ValueError, match=r"epsilon must be a positive finite number, got '1e-8'"):
        adam(epsilon="1e-8")


@pytest.mark.parametrize("backend_name,dtype", CASES)
def test_add_l2_adds_coef_times_masked_params(backend_name, dtype):
    backend = get_backend(backend_name)
    g_h, p_h, m_h = np.array([0.1, -0.2, 0.3, 0.4]), np.array([1.0, 2.0, -3.0, 4.0]), \
        np.array([1.0, 1.0, 0.0, 1.0])
    g, p, m = (backend.asarray(a, dtype) for a in (g_h, p_h, m_h))
    out = add_l2(g, p, m, 0.7 / 32)
    assert is_array(backend, out) and out.dtype == backend.dtype(dtype)
    want = np.array([0.1 + 0.7 / 32 * 1.0, -0.2 + 0.7 / 32 * 2.0, 0.3, 0.4 + 0.7 / 32 * 4.0])
    np.testing.assert_allclose(backend.to_numpy(out), want, rtol=RTOL[dtype], atol=0)
    np.testing.assert_array_equal(backend.to_numpy(g), g_h.astype(dtype))   # inputs untouched
    np.testing.assert_array_equal(backend.to_numpy(p), p_h.astype(dtype))


@pytest.mark.parametrize("coef", [-0.1, math.nan])
def test_add_l2_rejects_bad_coefficient(coef):
    g = np.zeros(2)
    message = f"L2 coefficient must be a finite number >= 0, got {coef}"
    with pytest.raises(ValueError, match=message):
        add_l2(g, g, g, coef)


@pytest.mark.parametrize("name", ["gd", "momentum", "rmsprop", "adam"])
def test_donated_update_equals_the_pure_one(name):
    """donate=True may reuse the old state's memory but must compute the same step."""
    opt = make_optimizer(name)
    rng = np.random.default_rng(0)
    g1, g2 = rng.standard_normal(50), rng.standard_normal(50)
    pure = opt.init(np.zeros(50))
    donated = opt.init(np.zeros(50))
    for g in (g1, g2):
        d_pure, pure = opt.update(g, pure, 0.01)
        d_don, donated = opt.update(g, donated, 0.01, donate=True)
        np.testing.assert_array_equal(d_don, d_pure)
    for k in pure:
        np.testing.assert_array_equal(np.asarray(donated[k]), np.asarray(pure[k]))
