"""The fused update (ddl/optim/fused.py) against the portable sequence it replaces, bit for bit:
the trainer's g /= count and L2 term, the optimizer's update, params -= delta."""
from __future__ import annotations

import numpy as np
import numba  # noqa: F401 - a dependency (pyproject.toml): a missing one fails here
import pytest

from ddl.backend import get_backend
from ddl.optim import OPTIMIZERS, add_l2, make_optimizer
from ddl.optim.fused import MIN_SIZE, MIN_WORK, fused_update

NUMPY = get_backend("numpy")
SIZE = 10_007      # not a multiple of any vector width: the loops' tails count too


def portable_step(opt, p, g, state, lr, count, mask, l2):
    g = g / count
    if l2 > 0:
        g = add_l2(g, p, mask, l2 / count)
    delta, state = opt.update(g, state, lr, donate=True)
    p -= delta
    return state


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("l2", [0.0, 0.7])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_fused_step_is_bit_identical_to_the_portable_one(name, l2, dtype):
    rng = np.random.default_rng(3)
    opt = make_optimizer(name, beta=0.8, beta1=0.85, beta2=0.99, epsilon=1e-7)
    fused = fused_update(opt, NUMPY, SIZE, "on")
    mask = (rng.random(SIZE) < 0.9).astype(dtype)
    p_ref = rng.standard_normal(SIZE).astype(dtype)
    p_fast = p_ref.copy()
    s_ref, s_fast = opt.init(p_ref), opt.init(p_fast)
    for step, lr in enumerate([0.1, 0.05, 0.02, 0.3, 1e-3]):      # a schedule: lr changes per step
        g = (rng.standard_normal(SIZE) * 10.0 ** (step - 2)).astype(dtype)
        count = float(16 + step)
        s_ref = portable_step(opt, p_ref, g.copy(), s_ref, lr, count, mask, l2)
        s_fast = fused(p_fast, g.copy(), s_fast, lr, count, mask, l2 / count)
        np.testing.assert_array_equal(p_fast, p_ref, err_msg=f"{name} step {step}")
        for k in s_ref:
            np.testing.assert_array_equal(np.asarray(s_fast[k]), np.asarray(s_ref[k]), err_msg=k)
        assert p_fast.dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("l2", [0.0, 0.7])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_cupy_kernels_are_bit_identical_to_the_portable_cupy_update(name, l2, dtype):
    from ddl.backend import gpu_count

    if gpu_count() == 0:
        pytest.skip("the CuPy kernels need a CUDA GPU; none is visible")
    gpu = get_backend("cupy")
    rng = np.random.default_rng(4)
    opt = make_optimizer(name, beta=0.8, beta1=0.85, beta2=0.99, epsilon=1e-7)
    fused = fused_update(opt, gpu, SIZE, "on")
    assert fused is not None and fused_update(opt, gpu, SIZE, "auto") is None   # auto: portable
    mask = gpu.asarray((rng.random(SIZE) < 0.9).astype(dtype), dtype)
    p_ref = gpu.asarray(rng.standard_normal(SIZE), dtype)
    p_fast = p_ref.copy()
    s_ref, s_fast = opt.init(p_ref), opt.init(p_fast)
    for step, lr in enumerate([0.1, 0.05, 0.02, 0.3, 1e-3]):
        g = gpu.asarray(rng.standard_normal(SIZE) * 10.0 ** (step - 2), dtype)
        count = float(16 + step)
        s_ref = portable_step(opt, p_ref, g.copy(), s_ref, lr, count, mask, l2)
        s_fast = fused(p_fast, g.copy(), s_fast, lr, count, mask if l2 else mask[:0], l2 / count)
        np.testing.assert_array_equal(gpu.to_numpy(p_fast), gpu.to_numpy(p_ref), err_msg=f"{name} {step}")
        for k in s_ref:
            if not isinstance(s_ref[k], int):
                np.testing.assert_array_equal(gpu.to_numpy(s_fast[k]), gpu.to_numpy(s_ref[k]), err_msg=k)
        assert p_fast.dtype == np.dtype(dtype)


def test_training_with_the_fused_update_equals_training_without_it():
    from test_train import make, small_cfg   # moons, batch norm, dropout, L2, Adam

    from ddl.train import train

    finals = {}
    for mode in ("on", "off"):
        cfg = small_cfg(fused_update=mode, dtype="float32")
        ds, setup, state = make(cfg)
        finals[mode] = train(ds, setup, state).params.buf
    np.testing.assert_array_equal(finals["on"], finals["off"])


def test_which_update_each_mode_picks():
    adam = make_optimizer("adam")
    assert fused_update(adam, NUMPY, MIN_SIZE - 1, "auto") is None        # small: not worth Numba
    assert fused_update(adam, NUMPY, MIN_SIZE, "auto") is not None
    assert fused_update(adam, NUMPY, MIN_SIZE, "auto", steps=int(MIN_WORK / MIN_SIZE) - 1) is None
    assert fused_update(adam, NUMPY, MIN_SIZE, "auto", steps=int(MIN_WORK / MIN_SIZE) + 1) is not None
    assert fused_update(adam, NUMPY, 10 * MIN_SIZE, "off") is None
    strict = get_backend("array_api_strict")
    assert fused_update(adam, strict, 10 * MIN_SIZE, "auto") is None      # other backends: portable
    with pytest.raises(ValueError, match="train.fused_update=on needs the NumPy backend"):
        fused_update(adam, strict, 10, "on")


# ---- on more than one thread: blocks of the buffers at once ------------------------------------

@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("l2", [0.0, 0.7])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_threaded_fused_step_is_bit_identical_to_the_portable_one(name, l2, dtype, threads,
                                                                     monkeypatch):
    import ddl.optim.fused as fused_module

    monkeypatch.setattr(fused_module, "PER_THREAD", 1000)     # SIZE splits into `threads` blocks
    rng = np.random.default_rng(5)
    opt = make_optimizer(name, beta=0.8, beta1=0.85, beta2=0.99, epsilon=1e-7)
    fused = fused_update(opt, NUMPY, SIZE, "on", threads=threads)
    mask = (rng.random(SIZE) < 0.9).astype(dtype)
    p_ref = rng.standard_normal(SIZE).astype(dtype)
    p_fast = p_ref.copy()
    s_ref, s_fast = opt.init(p_ref), opt.init(p_fast)
    for step, lr in enumerate([0.1, 0.05, 0.02, 0.3, 1e-3]):
        g = (rng.standard_normal(SIZE) * 10.0 ** (step - 2)).astype(dtype)
        count = float(16 + step)
        s_ref = portable_step(opt, p_ref, g.copy(), s_ref, lr, count, mask, l2)
        s_fast = fused(p_fast, g.copy(), s_fast, lr, count, mask if l2 else mask[:0], l2 / count)
        np.testing.assert_array_equal(p_fast, p_ref, err_msg=f"{name} step {step}")
        for k in s_ref:
            np.testing.assert_array_equal(np.asarray(s_fast[k]), np.asarray(s_ref[k]), err_msg=k)


def test_the_blocks_tile_the_buffers_and_run_on_the_pool(monkeypatch):
    import threading

    import ddl.optim.fused as fused_module

    monkeypatch.setattr(fused_module, "PER_THREAD", 100)
    seen, lock = [], threading.Lock()

    def kernel(p, g, mask, count, coef, l2, arrays, k):
        with lock:
            seen.append((p.base is base, p.shape[0], g.shape[0], mask.shape[0], arrays[0].shape[0],
                         k, threading.get_ident()))
        p += 1.0

    base = np.zeros(1000)
    g, mask, v = np.zeros(1000), np.zeros(1000), np.zeros(1000)
    run = fused_module.in_blocks(kernel, 3)
    run(base, g, mask, 1.0, 0.0, True, (v,), (7,))
    assert sorted(s[1] for s in seen) == [328, 336, 336]            # 16-aligned, the last one short
    assert all(s[0] and s[1] == s[2] == s[3] == s[4] and s[5] == (7,) for s in seen)
    threads_used = {s[6] for s in seen}       # the caller and the pool's (an idle helper may take two)
    assert threading.get_ident() in threads_used and len(threads_used) >= 2
    np.testing.assert_array_equal(base, 1.0)                         # every element once
    seen.clear()
    run(base, g, mask[:0], 1.0, 0.0, False, (v,), (7,))             # no L2: the placeholder as is
    assert [s[3] for s in seen] == [0, 0, 0]
    seen.clear()
    run(base[:150], g[:150], mask[:150], 1.0, 0.0, True, (v[:150],), (7,))   # < 2 blocks' worth
    assert len(seen) == 1 and seen[0][6] == threading.get_ident()
    assert fused_module.in_blocks(kernel, 1) is kernel


def test_a_failing_block_fails_the_step_after_every_block_is_done(monkeypatch):
    import time

    import ddl.optim.fused as fused_module

    monkeypatch.setattr(fused_module, "PER_THREAD", 10)
    done = []

    def kernel(p, g, mask, count, coef, l2, arrays, k):
        if p.shape[0] != 32:                    # the caller's block (the first) raises at once
            time.sleep(0.05)
            done.append(p.shape[0])
            return
        raise FloatingPointError("boom")

    with pytest.raises(FloatingPointError, match="boom"):
        fused_module.in_blocks(kernel, 2)(np.zeros(60), np.zeros(60), np.zeros(0), 1.0, 0.0, False,
                                           (np.zeros(60),), ())
    assert done == [28]                         # the helper's block finished before it returned


def test_kernel_threads_follow_the_blas_count_then_the_environment(monkeypatch):
    import ddl.backend as backend_module

    assert backend_module.kernel_threads({}) == 1
    assert backend_module.kernel_threads({"OMP_NUM_THREADS": "3"}) == 3
    assert backend_module.kernel_threads({"OMP_NUM_THREADS": "", "MKL_NUM_THREADS": "4"}) == 4
    assert backend_module.kernel_threads({"OMP_NUM_THREADS": "two"}) == 1
    # what the BLAS was given (the runner's Setup.threads) wins
    assert backend_module.kernel_threads({"OMP_NUM_THREADS": "3"}, blas=2) == 2


def test_training_with_the_threaded_fused_update_equals_training_without_it(monkeypatch):
    from test_train import make, small_cfg

    import ddl.optim.fused as fused_module
    import ddl.train.buffers as buffers_module
    import ddl.train as train_module

    monkeypatch.setattr(fused_module, "PER_THREAD", 16)            # the tiny net splits in two
    monkeypatch.setattr(buffers_module, "kernel_threads", lambda blas=None: 2)
    finals = {}
    for mode in ("on", "off"):
        cfg = small_cfg(fused_update=mode, dtype="float32")
        ds, setup, state = make(cfg)
        finals[mode] = train_module.train(ds, setup, state).params.buf
    np.testing.assert_array_equal(finals["on"], finals["off"])
