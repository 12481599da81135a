"""Every collective of ddl.parallel, checked against values computed from the world size.

Holds at any size: run it as `python collectives.py` or `mpiexec -n N python collectives.py`.
A failed assert aborts all ranks (abort handler); success prints "OK rank R of N <CommClass>".
"""
import numpy as np

from ddl.backend import get_backend
from collections import Counter

from ddl.parallel import get_comm, install_abort_handler


def check_allreduce(comm, r, n):
    buf = np.arange(5, dtype=np.float64) * (r + 1)
    out = comm.allreduce_sum(buf)
    assert out is buf, "allreduce_sum must work in place and return its buffer"
    np.testing.assert_array_equal(buf, np.arange(5) * n * (n + 1) / 2)  # small ints: exact
    f32 = np.full(3, 0.5 + r, dtype=np.float32)
    comm.allreduce_sum(f32, tag="other")
    assert f32.dtype == np.float32
    np.testing.assert_array_equal(f32, np.full(3, 0.5 * n + n * (n - 1) / 2))


def is_strict(a):
    # Not Backend.is_array: array_api_strict 2.6 no longer exports `Array` at top level.
    return type(a).__module__.startswith("array_api_strict")


def check_strict(comm, r, n):
    be = get_backend("array_api_strict")
    comm = comm.for_run(be)               # a run's communicator: strict arrays through the host
    buf = be.asarray(np.ones(4) * r, "float64")
    comm.allreduce_sum(buf)
    assert is_strict(buf), type(buf)
    np.testing.assert_array_equal(be.to_numpy(buf), np.full(4, n * (n - 1) / 2))
    parts = [be.asarray(np.full((2, 1), 1.0 + r)), be.asarray(np.ones((3, 1)))]
    mean, var = comm.reduce_list(parts)
    assert is_strict(mean) and mean.shape == (2, 1) and var.shape == (3, 1)
    np.testing.assert_array_equal(be.to_numpy(mean), np.full((2, 1), n * (n + 1) / 2))
    np.testing.assert_array_equal(be.to_numpy(var), np.full((3, 1), float(n)))
    return comm


def check_bcast(comm, r, n):
    cfg = {"lr": 0.1, "layers": [5, 3, 1], "rank": r}
    got = comm.bcast(cfg if r == 0 else None)
    assert got == {"lr": 0.1, "layers": [5, 3, 1], "rank": 0}, got
    assert comm.bcast(f"from {r}", root=n - 1) == f"from {n - 1}"
    arr = np.full(4, float(r))
    assert comm.bcast_array(arr, root=n - 1) is arr
    np.testing.assert_array_equal(arr, np.full(4, float(n - 1)))
    assert comm.allreduce_obj(r) == n * (n - 1) // 2
    assert comm.allreduce_obj(r, op="max") == n - 1
    assert comm.allreduce_obj(r, op="min") == 0


def check_reduce_list(comm, r, n):
    a, b, c = comm.reduce_list([np.full((2, 1), r + 1.0), np.full(3, 2.0 * r), np.ones((1, 2))])
    assert (a.shape, b.shape, c.shape) == ((2, 1), (3,), (1, 2))
    np.testing.assert_array_equal(a, np.full((2, 1), n * (n + 1) / 2))
    np.testing.assert_array_equal(b, np.full(3, float(n * (n - 1))))
    np.testing.assert_array_equal(c, np.full((1, 2), float(n)))
    assert comm.reduce_list([]) == []


def check_reduce_scatter_and_allgather(comm, strict, r, n):
    # uneven blocks, the last one empty: what ddl.optim.shards gives a buffer smaller than the ranks
    counts = [3 + k for k in range(n - 1)] + [0] if n > 1 else [7]
    size, lo = sum(counts), sum(counts[:r])
    buf = np.arange(size, dtype=np.float64) * (r + 1)
    out, tail = np.full(counts[r], -1.0), np.array([1.0, r])
    assert comm.reduce_scatter_sum(buf, out, counts, tail=tail, tag="rs") is out
    np.testing.assert_array_equal(out, np.arange(lo, lo + counts[r]) * n * (n + 1) / 2)
    np.testing.assert_array_equal(tail, [n, n * (n - 1) / 2])
    np.testing.assert_array_equal(buf, np.arange(size) * (r + 1))     # the input is left alone
    full = np.zeros(size, dtype=np.float32)
    full[lo:lo + counts[r]] = r + 1
    assert comm.allgather(full, counts, tag="ag") is full
    np.testing.assert_array_equal(full, np.repeat(np.arange(1, n + 1), counts).astype(np.float32))
    be = get_backend("array_api_strict")                  # through the host: same results
    sbuf, sout = be.asarray(np.ones(size) * (r + 1), "float64"), be.asarray(np.zeros(counts[r]), "float64")
    strict.reduce_scatter_sum(sbuf, sout, counts, tag="rs")
    np.testing.assert_array_equal(be.to_numpy(sout), np.full(counts[r], n * (n + 1) / 2))
    for bad in ([size] + [0] * n, [size + 1] + [0] * (n - 1)):     # one block too many; a wrong sum
        try:
            comm.allgather(full, bad)
        except ValueError as e:
            assert "block counts" in str(e), e
        else:
            raise AssertionError(f"allgather accepted counts {bad}")


def check_topology_and_counters(comm, strict, r, n):
    # All ranks of these tests run on one host, so node-local == global.
    assert (comm.rank, comm.size, comm.local_rank, comm.local_size) == (r, n, r, n)
    assert "MPICH" in comm.library_version or "Open MPI" in comm.library_version, comm.library_version
    # grad: check_allreduce 1, check_strict 1; bn: strict 1 + reduce_list 1; other: 1; rs 2, ag 1
    # (the strict arrays' on the run communicators made for them)
    counts = Counter(comm.counts) + sum((Counter(c.counts) for c in strict), Counter())
    assert counts == {"grad": 2, "bn": 2, "other": 1, "rs": 2, "ag": 1}, dict(counts)
    assert comm.allreduce_count + sum(c.allreduce_count for c in strict) == 8
    assert comm.allreduce_time > 0.0 and abs(sum(comm.times.values()) - comm.allreduce_time) < 1e-9


def check_node_memory(comm, r, n):
    # The sharded step through the node's shared memory (ddl/parallel/shared_memory.py and its
    # strategy in ddl/parallel/reduction.py): a world of one has none; on one node the
    # reduce-scatter sums every rank's shared segment and the allgather is a barrier; the same
    # strategy through MPI gives the same sums.
    from ddl.optim import shards
    from ddl.parallel import reduction, shared_memory

    size, tail = 7, 5
    room = shared_memory.room
    shared_memory.room = lambda path=shared_memory.SHM_DIR: 0      # no room on this node: None
    assert comm.node_buffers(size + tail, size, np.float64) is None
    shared_memory.room = room
    buffers = comm.node_buffers(size + tail, size, np.float64)
    if n == 1:
        assert buffers is None
        return
    shared = reduction.SharedSharded(comm, buffers, np, np.float64, size, tail)
    counts = shards.block_counts(size, n)
    lo, hi = shards.bounds(counts, r)
    assert (shared.lo, shared.hi) == (lo, hi) and shared.grads.base is not None
    params = shared.place(np.arange(size, dtype=np.float64))
    assert buffers.holds_params(params) and shared.own(params) is not params
    for round_ in range(3):                                # later rounds: nothing stale is read
        shared.grads[:] = np.arange(size) * (r + 1) + round_
        shared.tail[:] = (1.0, r, 0.0, 0.0, round_)
        shared.reduce()
        p, g, _ = shared.block(params, None)
        np.testing.assert_array_equal(g, np.arange(lo, hi) * n * (n + 1) / 2 + n * round_)
        np.testing.assert_array_equal(shared.tail, (n, n * (n - 1) / 2, 0.0, 0.0, n * round_))
        p += g                                             # this rank's block, in place
        shared.gather(params)
        want = np.arange(size) * (1 + (round_ + 1) * n * (n + 1) / 2) \
            + n * round_ * (round_ + 1) / 2
        np.testing.assert_array_equal(params, want)
    through_mpi = reduction.Sharded(comm, np, np.float64, size, tail)
    through_mpi.grads[:] = 1.0 + r
    through_mpi.reduce()
    np.testing.assert_array_equal(through_mpi.g, np.full(hi - lo, n * (n + 1) / 2))
    shared.free()


def main():
    comm = get_comm("auto")
    install_abort_handler(comm)
    r, n = comm.rank, comm.size
    check_allreduce(comm, r, n)
    strict = [check_strict(comm, r, n), comm.for_run(get_backend("array_api_strict"))]
    check_bcast(comm, r, n)
    check_reduce_list(comm, r, n)
    check_reduce_scatter_and_allgather(comm, strict[1], r, n)
    check_topology_and_counters(comm, strict, r, n)
    check_node_memory(comm, r, n)
    comm.barrier()
    print(f"OK rank {r} of {n} {type(comm).__name__}", flush=True)


if __name__ == "__main__":
    main()
