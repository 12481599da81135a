"""The single-process trainer: course accuracy on the flower data, save/load, bit-identical resume,
early stopping, bad input. (Data-parallel equality is in test_parallel.py.)"""
from __future__ import annotations

import numpy as np
import pytest

from ddl import checkpoint as ckpt
from ddl.parallel import signals
from ddl.backend import get_backend
from ddl.config import Config
from ddl.config import DataConfig
from ddl.data.dataset import load_dataset
from ddl.parallel import SerialComm
from ddl.runner.experiment import build_spec, initial_state, optimizer_hyper
from ddl.nn import model
from ddl.optim.optimizers import make_optimizer
from ddl.optim.schedules import make_schedule
from ddl.train import Hooks, Setup, TrainState, train


def make(cfg: Config, backend_name="numpy"):
    backend = get_backend(backend_name)
    ds = load_dataset(cfg.data)
    spec = build_spec(cfg, ds)
    setup = Setup(backend, SerialComm(), spec, make_optimizer(cfg.optimizer.name, **optimizer_hyper(cfg)),
                  make_schedule(cfg.schedule.name, cfg.optimizer.lr, cfg.schedule.decay_rate),
                  cfg.train, cfg.model.l2)
    return ds, setup, initial_state(cfg, spec, backend, setup.opt)


def flower_cfg(hidden, epochs) -> Config:
    """The course's C1 W3 setting: flower (400 points, a=4, noise 0.2), full-batch GD, lr 1.2."""
    cfg = Config(data=DataConfig(name="flower", dev_fraction=0.0))
    cfg.model.hidden, cfg.model.activation, cfg.model.init = hidden, "tanh", "random"
    cfg.optimizer.name, cfg.optimizer.lr = "gd", 1.2
    cfg.train.epochs, cfg.train.batch_size, cfg.train.eval_every = epochs, 400, epochs
    cfg.train.dtype = "float64"
    return cfg


def test_flower_shallow_network_beats_logistic_regression():
    ds, setup, state = make(flower_cfg([4], 5000))
    net = train(ds, setup, state).history[-1]
    ds, setup, state = make(flower_cfg([], 2000))
    logistic = train(ds, setup, state).history[-1]
    assert 1 - net["train_error"] >= 0.88, net
    assert 1 - logistic["train_error"] < 0.60, logistic


def small_cfg(**train) -> Config:
    cfg = Config(data=DataConfig(name="moons", m=150, dev_fraction=0.2))
    cfg.model.hidden, cfg.model.batchnorm, cfg.model.l2 = [6, 4], True, 0.1
    cfg.model.keep_prob = [0.9, 1.0]
    cfg.optimizer.name, cfg.optimizer.lr = "adam", 0.01
    cfg.train.epochs, cfg.train.batch_size, cfg.train.dtype = 6, 16, "float64"
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def arrays_of(state, backend) -> dict:
    return ckpt.state_arrays(state, backend)


def test_save_load_round_trips_params_and_optimizer_state(tmp_path):
    ds, setup, state = make(small_cfg(epochs=2))
    state = train(ds, setup, state)
    saved = arrays_of(state, setup.backend)
    ckpt.save_npz(tmp_path / "c.npz", saved, ckpt.state_meta(state))
    loaded, _ = ckpt.restore(tmp_path / "c.npz", TrainState, model.layout(setup.spec),
                             model.bn_state_layout(setup.spec), setup.backend, "float64")
    again = arrays_of(loaded, setup.backend)
    assert sorted(again) == sorted(saved) and any(k.startswith("opt/") for k in saved)
    for k in saved:
        np.testing.assert_array_equal(again[k], saved[k], err_msg=k)
    assert (loaded.epoch, loaded.step) == (2, 0)


def test_npz_keys_are_the_course_names_in_course_shapes(tmp_path):
    ds, setup, state = make(small_cfg(epochs=1))
    a = arrays_of(train(ds, setup, state), setup.backend)
    assert a["W1"].shape == (6, 2) and a["W3"].shape == (1, 4) and a["b3"].shape == (1, 1)
    assert a["gamma1"].shape == (6, 1) and a["running_var2"].shape == (4, 1) and "b1" not in a
    assert {"opt/v", "opt/s", "opt/t"} <= set(a)


@pytest.mark.parametrize("stop_at", [7, 9 * 2 + 3])   # mid-epoch steps (8 steps per epoch)
def test_resume_after_a_stop_is_bit_identical(tmp_path, monkeypatch, stop_at):
    ds, setup, state = make(small_cfg())
    reference = arrays_of(train(ds, setup, state), setup.backend)

    calls = {"n": 0}

    def stop_once():
        calls["n"] += 1
        return calls["n"] == stop_at

    saved = {}

    def save(st, reason):
        saved["path"] = ckpt.save_npz(tmp_path / "ck.npz", arrays_of(st, setup.backend),
                                      ckpt.state_meta(st))

    ds, setup, state = make(small_cfg())
    monkeypatch.setattr(signals, "requested", stop_once)
    stopped = train(ds, setup, state, Hooks(checkpoint=save))
    assert stopped.stopped == "signal" and stopped.epoch < 6
    monkeypatch.setattr(signals, "requested", lambda: False)
    resumed, _ = ckpt.restore(saved["path"], TrainState, model.layout(setup.spec),
                              model.bn_state_layout(setup.spec), setup.backend, "float64")
    final = arrays_of(train(ds, setup, resumed), setup.backend)
    for k in reference:
        np.testing.assert_array_equal(final[k], reference[k], err_msg=k)
    assert len(resumed.history) == 6


def test_early_stopping_restores_the_best_dev_epoch():
    cfg = small_cfg(epochs=400, patience=3)
    cfg.optimizer.lr = 0.05
    cfg.model.keep_prob, cfg.model.batchnorm, cfg.model.l2 = 1.0, False, 0.0
    cfg.model.hidden = [64, 64]
    ds, setup, state = make(cfg)
    state = train(ds, setup, state)
    assert state.stopped == "early" and len(state.history) < 400
    best = min(state.history, key=lambda r: r["dev_cost"])
    assert state.best["epoch"] == best["epoch"]
    from ddl.train.evaluate import evaluate_split

    assert evaluate_split(setup, state, ds.dev)[0] == pytest.approx(best["dev_cost"], rel=1e-12)


@pytest.mark.parametrize("field,value,words", [
    ("batch_size", 0, "batch_size"), ("on_nonfinite", "ignore", "on_nonfinite"),
])
def test_bad_train_settings_are_named(field, value, words):
    ds, setup, state = make(small_cfg(**{field: value}))
    with pytest.raises(ValueError, match=words):
        train(ds, setup, state)


def test_bad_learning_rate_and_names_are_named():
    with pytest.raises(ValueError, match="-0.1"):
        make_schedule("constant", -0.1)
    with pytest.raises(ValueError, match="sgd"):
        make_optimizer("sgd")


def test_array_api_strict_backend_trains_the_same_model():
    ds, setup, state = make(small_cfg(epochs=2))
    ref = arrays_of(train(ds, setup, state), setup.backend)
    ds, setup, state = make(small_cfg(epochs=2), "array_api_strict")
    got = arrays_of(train(ds, setup, state), setup.backend)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-12, atol=1e-14, err_msg=k)


@pytest.mark.gpu
@pytest.mark.skipif(__import__("ddl.backend", fromlist=["gpu_count"]).gpu_count() == 0,
                    reason="needs a CUDA GPU (CuPy); none is visible")
def test_cupy_backend_trains_the_same_model_on_the_gpu():
    ds, setup, state = make(small_cfg(epochs=2))
    ref = arrays_of(train(ds, setup, state), setup.backend)
    ds, setup, state = make(small_cfg(epochs=2), "cupy")
    assert setup.backend.name == "cupy" and type(state.params.buf).__module__.startswith("cupy")
    got = arrays_of(train(ds, setup, state), setup.backend)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-9, atol=1e-12, err_msg=k)


def test_regression_with_two_targets_gets_two_linear_outputs(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 3))
    np.savez(tmp_path / "reg.npz", X=X, y=np.c_[X @ [1.0, 2.0, 3.0], X @ [0.0, 1.0, -1.0]])
    cfg = Config(data=DataConfig(name="npz", path=str(tmp_path / "reg.npz"), regression=True))
    cfg.model.hidden, cfg.optimizer.lr, cfg.train.epochs = [], 0.05, 60
    ds, setup, state = make(cfg)
    assert setup.spec.output == "linear" and setup.spec.sizes[-1] == 2
    history = train(ds, setup, state).history
    assert history[-1]["train_cost"] < 0.01 * history[0]["train_cost"]   # a linear map is learnable


@pytest.mark.parametrize("costs, cross_entropy, flagged", [
    ([8.7e5, 9.7e5, 8.1e5, 8.4e5, 8.3e5], True, True),          # lr=1e6: stuck near 1e5-1e6
    ([8.7e5, 9.7e5, 8.1e5, 8.4e5], True, False),                # not yet 5 evaluations
    ([1281, 929, 664, 448, 323, 258], True, False),             # the course's x10 init: falls fast
    ([0.69, 0.5, 0.4, 0.3, 0.2], True, False),                  # an ordinary run
    ([0.69, 0.5, 0.4, 2e3], True, True),                        # rose 1000x from its best
    ([5e3, 5e3, 5e3, 5e3, 5e3], False, False),                  # regression: a large stuck MSE
    ([2.0, 1.5, 5e3], False, True),                             # regression that blew up
])
def test_divergence_without_nan_is_detected_from_the_costs(costs, cross_entropy, flagged):
    from ddl.train import diverging

    history = [{"epoch": i, "train_cost": c} for i, c in enumerate(costs)]
    assert (diverging(history, cross_entropy) is not None) == flagged


def test_host_metrics_sum_memory_and_cpu_per_host_and_name_the_slowest_rank():
    from ddl.train.resources import host_metrics

    # (rank, host, wall s, cpu s, collective s, rss MiB, peak rss MiB)
    samples = [(0, "h1", 2.0, 1.5, 0.5, 100.0, 120.0), (1, "h1", 2.0, 1.0, 1.0, 90.0, 95.0),
               (2, "h2", 2.0, 2.0, 0.2, 80.0, 85.0), (3, "h2", 2.0, 1.8, 0.4, 70.0, 150.0)]
    m = host_metrics(samples)
    assert m["host/h1/cpu_percent"] == pytest.approx(125.0) and m["host/h2/cpu_percent"] == pytest.approx(190.0)
    assert m["host/h1/rss_mb"] == 190.0 and m["host/h2/peak_rss_mb"] == 150.0
    assert m["host/h1/collective_share"] == pytest.approx((0.25 + 0.5) / 2)
    assert m["perf/slowest_rank"] == 2.0 and m["perf/slowest_compute_s"] == pytest.approx(1.8)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("size", [100, 1024 * 64 - 1, 1024 * 64, 1024 * 64 * 3 + 517])
def test_the_tails_gradient_total_is_the_buffers_sum_and_sees_every_nan_and_inf(size, dtype):
    """The step's non-finite check (ddl/train/buffers.py): the fast total against np.sum (float64:
    1e-12 relative to the sum of magnitudes; float32: 1e-5), and a NaN or Inf at the first, a
    middle and the last element (the part past the rows too) makes it non-finite."""
    from ddl.train.buffers import ROW, gradient_total

    assert ROW == 1024                                  # the sizes above straddle its threshold
    rng = np.random.default_rng(size)
    g = rng.standard_normal(size).astype(dtype)
    total = gradient_total(g)
    scale = float(np.abs(g.astype(np.float64)).sum())
    assert abs(total() - float(g.astype(np.float64).sum())) <= {"float64": 1e-12, "float32": 1e-5}[dtype] * scale
    for where in (0, size // 2, size - 1):
        for bad in (np.nan, np.inf, -np.inf):
            keep = g[where]
            g[where] = bad
            assert not np.isfinite(total()), (where, bad)       # the same buffer, read again
            g[where] = keep
    assert np.isfinite(total())
