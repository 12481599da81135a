"""CuPy buffers through one GPU strategy.

Run as `mpiexec -n N python gpu_allreduce.py MODE` with MODE one of host, cuda_aware, nccl.
"""
import sys

import numpy as np

from ddl.backend import get_backend
from ddl.parallel import get_comm, install_abort_handler


def main(mode):
    world = get_comm("mpi")
    install_abort_handler(world)
    be = get_backend("cupy", world.local_rank)  # binds GPU local_rank % device_count
    comm = world.for_run(be, mode)              # the strategy, built with the run's communicator
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
    direct = get_comm("mpi", be, allreduce=mode)  # or given to the process's communicator
    arr = be.asarray(np.full(5, float(r)), "float32")
    direct.bcast_array(arr, root=n - 1)
    np.testing.assert_array_equal(be.to_numpy(arr), np.full(5, float(n - 1)))
    comm.close()
    direct.close()
    print(f"OK rank {r} of {n} {mode}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
