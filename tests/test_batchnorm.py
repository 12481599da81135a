"""Batch norm: cross-rank `reduce` equals the whole batch, exact gradients, running averages."""
import functools
import operator
import threading

import numpy as np
import pytest

from ddl.nn.batchnorm import bn_backward, bn_forward, bn_infer, update_running

EPS = 1e-5
RNG = np.random.default_rng(0)
Z = RNG.standard_normal((4, 12)) * 3 + 1
G = RNG.standard_normal((4, 12))                         # upstream gradient dZt
GAMMA, BETA = RNG.standard_normal((4, 1)), RNG.standard_normal((4, 1))


class SimRanks:
    """n threads standing in for n ranks; `reduce(rank)` is an allreduce(SUM) between them."""

    def __init__(self, n):
        self.n, self.slots = n, [None] * n
        self.barrier = threading.Barrier(n, timeout=30)

    def reduce(self, rank):
        def allreduce(arrays):
            self.slots[rank] = arrays
            self.barrier.wait()                          # every rank has posted its partial sums
            out = [functools.reduce(operator.add, [s[i] for s in self.slots])
                   for i in range(len(arrays))]
            self.barrier.wait()                          # every rank has read them
            return out
        return allreduce

    def run(self, fn):
        """fn(rank, reduce) on every rank; returns the per-rank results (re-raises errors)."""
        results, errors = [None] * self.n, []

        def target(r):
            try:
                results[r] = fn(r, self.reduce(r))
            except Exception as e:                       # surface a rank's failure in the test
                errors.append(e)
                self.barrier.abort()
        threads = [threading.Thread(target=target, args=(r,)) for r in range(self.n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return results


def _whole(bk):
    xp = bk.xp
    Zt, cache, mean, var = bn_forward(xp, bk.arr(Z), bk.arr(GAMMA), bk.arr(BETA), EPS)
    dZ, dg, db = bn_backward(xp, bk.arr(G), cache)
    return [bk.np(a) for a in (Zt, mean, var, dZ, dg, db)]


@pytest.mark.parametrize("cuts", [(4, 8), (5, 5), (0, 12)], ids=["4-4-4", "5-0-7", "0-12-0"])
def test_three_ranks_equal_the_whole_batch(backend, cuts):
    """Shards (with empty ones) give the 1-rank forward and backward to 1e-12 (float64)."""
    xp, bounds = backend.xp, [0, *cuts, 12]

    def rank(r, reduce):
        a, b = bounds[r], bounds[r + 1]
        Zt, cache, mean, var = bn_forward(xp, backend.arr(Z[:, a:b]), backend.arr(GAMMA),
                                          backend.arr(BETA), EPS, reduce)
        dZ, dg, db = bn_backward(xp, backend.arr(G[:, a:b]), cache, reduce)
        return [backend.np(x) for x in (Zt, mean, var, dZ, dg, db)]

    shards = SimRanks(3).run(rank)
    Zt, mean, var, dZ, dg, db = _whole(backend)
    tol = dict(rtol=backend.tol, atol=backend.tol)
    np.testing.assert_allclose(np.concatenate([s[0] for s in shards], axis=1), Zt, **tol)
    np.testing.assert_allclose(np.concatenate([s[3] for s in shards], axis=1), dZ, **tol)
    for s in shards:                                     # every rank sees the global statistics
        np.testing.assert_allclose(s[1], mean, **tol)
        np.testing.assert_allclose(s[2], var, **tol)
    np.testing.assert_allclose(sum(s[4] for s in shards), dg, **tol)   # local sums add up
    np.testing.assert_allclose(sum(s[5] for s in shards), db, **tol)


def test_forward_normalizes_with_biased_batch_statistics(backend):
    Zt, mean, var, *_ = _whole(backend)
    np.testing.assert_allclose(mean, Z.mean(axis=1, keepdims=True), rtol=10 * backend.tol)
    np.testing.assert_allclose(var, Z.var(axis=1, keepdims=True), rtol=10 * backend.tol)
    expected = GAMMA * (Z - Z.mean(1, keepdims=True)) / np.sqrt(Z.var(1, keepdims=True) + EPS)
    np.testing.assert_allclose(Zt, expected + BETA, rtol=100 * backend.tol, atol=100 * backend.tol)


def test_backward_matches_finite_differences(backend):
    xp, Gb = backend.xp, backend.arr(G)
    g, b = backend.arr(GAMMA), backend.arr(BETA)
    _, _, _, dZ, dg, db = _whole(backend)

    def cost(Zb, gb, bb):                                # scalar sum(G * Zt): backward gets dZt=G
        return xp.sum(Gb * bn_forward(xp, Zb, gb, bb, EPS)[0])
    tol = 1e-6 if backend.dtype_name == "float64" else 2e-3   # FD error: h^2 and roundoff/h
    Zb = backend.arr(Z)
    np.testing.assert_allclose(dZ, backend.num_grad(lambda z: cost(z, g, b), Z), atol=tol)
    np.testing.assert_allclose(dg, backend.num_grad(lambda x: cost(Zb, x, b), GAMMA), atol=tol)
    np.testing.assert_allclose(db, backend.num_grad(lambda x: cost(Zb, g, x), BETA), atol=tol)


def test_infer_and_running_averages(backend):
    xp = backend.xp
    rm, rv = RNG.standard_normal((4, 1)), RNG.random((4, 1)) + 0.5
    m, v = RNG.standard_normal((4, 1)), RNG.random((4, 1)) + 0.5
    nm, nv = update_running(backend.arr(rm), backend.arr(rv), backend.arr(m), backend.arr(v), 0.9)
    np.testing.assert_allclose(backend.np(nm), 0.9 * rm + 0.1 * m, rtol=10 * backend.tol)
    np.testing.assert_allclose(backend.np(nv), 0.9 * rv + 0.1 * v, rtol=10 * backend.tol)
    out = bn_infer(xp, backend.arr(Z), backend.arr(GAMMA), backend.arr(BETA), backend.arr(m),
                   backend.arr(v), EPS)
    expected = GAMMA * (Z - m) / np.sqrt(v + EPS) + BETA
    np.testing.assert_allclose(backend.np(out), expected, rtol=100 * backend.tol,
                               atol=100 * backend.tol)


def test_infer_with_batch_statistics_reproduces_training_forward(backend):
    Zt, mean, var, *_ = _whole(backend)
    out = bn_infer(backend.xp, backend.arr(Z), backend.arr(GAMMA), backend.arr(BETA),
                   backend.arr(mean), backend.arr(var), EPS)
    np.testing.assert_allclose(backend.np(out), Zt, rtol=100 * backend.tol, atol=100 * backend.tol)
