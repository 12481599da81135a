"""The step's whole update in one pass over the flat buffers (a NumPy fast path, compiled by Numba).

The portable sequence (the trainer's `g /= count`, `add_l2`, the optimizer's `update`, then
`params -= delta`) makes 8-14 passes over buffers of the parameters' size with fresh temporaries.
Here one loop reads (g, v, s, p) once and writes (v, s, p) once, doing per element the same
operations in the same order and precision, so the result is bit-identical to the portable code
(tests/test_fused.py holds the two equal in float32 and float64 for every optimizer, with L2).
No fast-math: the compiler may not contract a*b+c into an FMA or reorder anything.

`fused_update(opt, backend, size, mode, steps, threads) -> step or None`, where
`step(p, g, state, lr, count, mask, l2_coef) -> new state` updates p (and the state) in place.

With more than one thread (the rank's kernel threads: ddl.backend.kernel_threads) the loop runs
on equal 16-aligned blocks of the buffers at once, one per thread (the compiled loops release the
GIL). Each element's operations are the same whichever block holds it: bit-identical too.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

from ddl.optim.shards import block_counts

MODES = ("auto", "on", "off")
# auto: worth it when the steps' saving (measured ~2 ns per parameter per step, 2 passes instead
# of 12) beats the ~0.8 s that importing Numba and loading the compiled loops cost once a run
MIN_SIZE, MIN_WORK = 1 << 16, 5e8      # parameters; parameters x steps
# elements per thread below which one thread does it all (handing a block to a thread costs ~10 us)
PER_THREAD = 1 << 18


def fused_update(opt, backend, size: int, mode: str = "auto", steps: Optional[int] = None,
                 threads: int = 1) -> Optional[Callable]:
    """The fused step for `opt` on this backend, or None for the portable one. mode: auto (NumPy,
    Numba present, at least MIN_SIZE parameters and MIN_WORK parameters x the run's `steps`, when
    known) | on (NumPy and Numba, or CuPy: its elementwise kernels) | off. threads: how many the
    NumPy loop may run on (blocks of at least PER_THREAD elements each)."""
    small = size < MIN_SIZE or (steps is not None and size * steps < MIN_WORK)
    if mode == "off" or (mode == "auto" and small):
        return None
    if backend.name == "cupy":
        # the elementwise kernels (fused_cupy.py) only when asked for: no GPU run has held them
        # equal to the portable update yet (tests/test_fused.py does, under scripts/gpu_check.sh)
        return _STEPS[opt.name](_cupy_kernels()[opt.name], dict(opt.hyper)) if mode == "on" else None
    why = None if backend.name == "numpy" else f"backend {backend.name!r} (NumPy or CuPy only)"
    kernels = _kernels() if why is None else None
    if why is None and kernels is None:
        why = "Numba is not installed (pip install numba)"
    if why:
        if mode == "on":
            raise ValueError(f"train.fused_update=on needs the NumPy backend and Numba, or CuPy: {why}")
        return None
    return _STEPS[opt.name](in_blocks(kernels[opt.name], threads), dict(opt.hyper))


def in_blocks(kernel, threads: int):
    """`kernel` run on up to `threads` blocks of its buffers at once: the first block on the
    calling thread, the others on a pool's; all are done when it returns."""
    if threads <= 1:
        return kernel

    def run(p, g, mask, count, coef, l2, arrays, k):
        n = p.shape[0]
        parts = min(threads, n // PER_THREAD)
        if parts <= 1:
            return kernel(p, g, mask, count, coef, l2, arrays, k)
        whole_mask = mask.shape[0] == n          # else a placeholder, never read (no L2)
        jobs, lo = [], 0
        for c in block_counts(n, parts):
            hi = lo + c
            jobs.append((p[lo:hi], g[lo:hi], mask[lo:hi] if whole_mask else mask, count, coef, l2,
                         tuple(a[lo:hi] for a in arrays), k))
            lo = hi
        pending = [_pool(threads - 1).submit(kernel, *job) for job in jobs[1:]]
        try:
            kernel(*jobs[0])
        finally:
            for f in pending:
                f.result()
    return run


_POOLS: dict = {}


def _pool(workers: int) -> ThreadPoolExecutor:
    """The update's helper threads, made once per process (a forked child makes its own)."""
    key = (os.getpid(), workers)
    if key not in _POOLS:
        _POOLS[key] = ThreadPoolExecutor(workers, thread_name_prefix="ddl-update")
    return _POOLS[key]


def _stateless(kernel, names, scalars):
    """A step for an optimizer whose state is the arrays `names` and whose per-step scalars are
    `scalars(lr, state) -> (tuple, new state)`."""
    def step(p, g, state, lr, count, mask, coef):
        f = p.dtype.type
        k, new = scalars(lr, state)
        arrays = tuple(state[n] for n in names) or (p,)     # gd: a placeholder, never read
        kernel(p, g, mask, f(count), f(coef), coef > 0, arrays, tuple(f(x) for x in k))
        return new
    return step


def _gd(kernel, h):
    return _stateless(kernel, (), lambda lr, state: ((lr,), state))


def _momentum(kernel, h):
    beta = h["beta"]
    return _stateless(kernel, ("v",), lambda lr, state: ((beta, 1.0 - beta, lr), state))


def _rmsprop(kernel, h):
    beta2, eps = h["beta2"], h["epsilon"]
    return _stateless(kernel, ("s",), lambda lr, state: ((beta2, 1.0 - beta2, eps, lr), state))


def _adam(kernel, h):
    beta1, beta2, eps = h["beta1"], h["beta2"], h["epsilon"]

    def scalars(lr, state):
        # the portable Adam's folded bias corrections, as the same scalars (see optimizers.adam)
        t = state["t"] + 1
        root = math.sqrt(1.0 - beta2**t)
        k = (beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps * root, float(lr) * root / (1.0 - beta1**t))
        return k, {**state, "t": t}
    return _stateless(kernel, ("v", "s"), scalars)


_STEPS = {"gd": _gd, "momentum": _momentum, "rmsprop": _rmsprop, "adam": _adam}
_COMPILED: dict = {}


def _kernels() -> Optional[dict]:
    """The compiled loops (cached on disk by Numba after the first run), or None without Numba."""
    if not _COMPILED:
        try:
            from ddl.optim import fused_kernels  # noqa: PLC0415 - imports Numba: only when asked for
        except ImportError:
            return None
        _COMPILED.update(fused_kernels.KERNELS)
    return _COMPILED


def _cupy_kernels() -> dict:
    from ddl.optim import fused_cupy  # noqa: PLC0415 - imports CuPy: only on its backend

    return fused_cupy.KERNELS
