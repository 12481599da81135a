"""CuPy buffers through one GPU strategy.

Run as `mpiexec -n N python gpu_allreduce.py MODE` with MODE one of host, cuda_aware, nccl.
"""
import sys

import numpy as np

from ddl.backend import get_backend
from ddl.parallel import get_comm, install_abort_handler


def main(mode):
    comm = get_comm("mpi", allreduce=mode)  # strategy built lazily, on the first CuPy buffer
    install_abort_handler(comm)
    be = get_backend("cupy", comm.local_rank)  # binds GPU local_rank % device_count
    r, n = comm.rank, comm.size
    buf = be.asarray(np.arange(1000) * (r + 1.0), "float64")
    assert comm.allreduce_sum(buf) is buf and be.is_array(buf)
    np.testing.assert_array_equal(be.to_numpy(buf), np.arange(1000) * n * (n + 1) / 2)
    f32 = be.asarray(np.full(7, float(r)), "float32")
    comm.allreduce_sum(f32, tag="bn")
    np.testing.assert_array_equal(be.to_numpy(f32), np.full(7, n * (n - 1) / 2, dtype=np.float32))
    (mean,) = comm.reduce_list([be.asarray(np.ones((4, 1)), "float64")])
    np.testing.assert_array_equal(be.to_numpy(mean), np.full((4, 1), float(n)))
    assert comm.counts == {"grad": 1, "bn": 2}, dict(comm.counts)
    eager = get_comm("mpi", be, allreduce=mode)  # strategy built at once from the cupy backend
    arr = be.asarray(np.full(5, float(r)), "float32")
    eager.bcast_array(arr, root=n - 1)
    np.testing.assert_array_equal(be.to_numpy(arr), np.full(5, float(n - 1)))
    print(f"OK rank {r} of {n} {mode}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
