"""Every collective of ddl.parallel, checked against values computed from the world size.

Holds at any size: run it as `python collectives.py` or `mpiexec -n N python collectives.py`.
A failed assert aborts all ranks (abort handler); success prints "OK rank R of N <CommClass>".
"""
import numpy as np

from ddl.backend import get_backend
from ddl.parallel import get_comm, install_abort_handler, world_info


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
    buf = be.asarray(np.ones(4) * r, "float64")
    comm.allreduce_sum(buf)
    assert is_strict(buf), type(buf)
    np.testing.assert_array_equal(be.to_numpy(buf), np.full(4, n * (n - 1) / 2))
    parts = [be.asarray(np.full((2, 1), 1.0 + r)), be.asarray(np.ones((3, 1)))]
    mean, var = comm.reduce_list(parts)
    assert is_strict(mean) and mean.shape == (2, 1) and var.shape == (3, 1)
    np.testing.assert_array_equal(be.to_numpy(mean), np.full((2, 1), n * (n + 1) / 2))
    np.testing.assert_array_equal(be.to_numpy(var), np.full((3, 1), float(n)))


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


def check_reduce_scatter_and_allgather(comm, r, n):
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
    comm.reduce_scatter_sum(sbuf, sout, counts, tag="rs")
    np.testing.assert_array_equal(be.to_numpy(sout), np.full(counts[r], n * (n + 1) / 2))
    for bad in ([size] + [0] * n, [size + 1] + [0] * (n - 1)):     # one block too many; a wrong sum
        try:
            comm.allgather(full, bad)
        except ValueError as e:
            assert "block counts" in str(e), e
        else:
            raise AssertionError(f"allgather accepted counts {bad}")


def check_topology_and_counters(comm, r, n):
    # All ranks of these tests run on one host, so node-local == global.
    assert (comm.rank, comm.size, comm.local_rank, comm.local_size) == (r, n, r, n)
    info = world_info(comm)
    assert info["rank"] == r and info["size"] == n and info["local_size"] == n, info
    assert "MPICH" in info["mpi_library"] or "Open MPI" in info["mpi_library"], info
    # grad: check_allreduce 1, check_strict 1; bn: strict 1 + reduce_list 1; other: 1; rs 2, ag 1.
    assert comm.counts == {"grad": 2, "bn": 2, "other": 1, "rs": 2, "ag": 1}, dict(comm.counts)
    assert comm.allreduce_count == 8
    assert comm.allreduce_time > 0.0 and abs(sum(comm.times.values()) - comm.allreduce_time) < 1e-9


def check_node_memory(comm, r, n):
    # The sharded step's shared buffers (ddl/parallel/shared_memory.py): a world of one has none; on one node
    # the reduce-scatter sums every rank's shared segment and the allgather is a barrier.
    from ddl.optim import shards
    from ddl.parallel import shared_memory as node

    size, ext = 7, 7 + 5
    room = node.room
    node.room = lambda path=node.SHM_DIR: 0               # no room on this node: through MPI
    assert comm.node_memory(ext, size, np.float64) is None
    node.room = room
    memory = comm.node_memory(ext, size, np.float64)
    if n == 1:
        assert memory is None
        return
    counts = shards.block_counts(size, n)
    lo, hi = shards.bounds(counts, r)
    memory.fill_params(np.arange(size, dtype=np.float64))
    for round_ in range(3):                                # later rounds: nothing stale is read
        grads, tail = memory.grads[:size], memory.grads[size:]
        assert memory.holds_grads(grads) and memory.holds_params(memory.params)
        grads[:] = np.arange(size) * (r + 1) + round_
        tail[:] = (1.0, r, 0.0, 0.0, round_)
        out = np.zeros(hi - lo)
        comm.reduce_scatter_sum(grads, out, counts, tail=tail, tag="shm")
        np.testing.assert_array_equal(out, np.arange(lo, hi) * n * (n + 1) / 2 + n * round_)
        np.testing.assert_array_equal(tail, (n, n * (n - 1) / 2, 0.0, 0.0, n * round_))
        memory.params[lo:hi] += out                        # this rank's block, in place
        comm.allgather(memory.params, counts, tag="shm")
        want = np.arange(size) * (1 + (round_ + 1) * n * (n + 1) / 2) \
            + n * round_ * (round_ + 1) / 2
        np.testing.assert_array_equal(memory.params, want)
    # a buffer outside the windows still goes through MPI
    buf, out = np.full(size, 1.0 + r), np.zeros(hi - lo)
    comm.reduce_scatter_sum(buf, out, counts, tag="mpi")
    np.testing.assert_array_equal(out, np.full(hi - lo, n * (n + 1) / 2))
    memory.free()


def main():
    comm = get_comm("auto")
    install_abort_handler(comm)
    r, n = comm.rank, comm.size
    check_allreduce(comm, r, n)
    check_strict(comm, r, n)
    check_bcast(comm, r, n)
    check_reduce_list(comm, r, n)
    check_reduce_scatter_and_allgather(comm, r, n)
    check_topology_and_counters(comm, r, n)
    check_node_memory(comm, r, n)
    comm.barrier()
    print(f"OK rank {r} of {n} {type(comm).__name__}", flush=True)


if __name__ == "__main__":
    main()
