"""The three GPU strategies' host-side logic without a GPU, on the counting twin of a device.

    mpiexec -n N python fake_device.py MODE      (MODE: host | cuda_aware | nccl)
Checks that device arrays are routed to the strategy, the sums and broadcasts are right, the
host strategy reuses ONE staging buffer per (size, dtype), and how many waits each call costs.
"""
import sys

import numpy as np

from counting import WAITS, CountingDevice, counted
from ddl.parallel import install_abort_handler
from ddl.parallel.mpi import MPIComm

WAITS_PER_CALL = {"host": 1, "cuda_aware": 1, "nccl": 0}


def main(mode):
    device = CountingDevice()
    comm = MPIComm(allreduce=mode, device=device)
    install_abort_handler(comm)
    r, n = comm.rank, comm.size
    buf = counted(np.arange(6, dtype=np.float64) * (r + 1))
    for _ in range(3):
        buf[...] = np.arange(6) * (r + 1)
        WAITS.clear()
        assert comm.allreduce_sum(buf) is buf
        assert sum(WAITS.values()) == WAITS_PER_CALL[mode], dict(WAITS)
        np.testing.assert_array_equal(buf, np.arange(6) * n * (n + 1) / 2)
    assert sum(device.routed.values()) == (3 if mode != "cuda_aware" else 0), device.routed
    arr = counted(np.full(3, float(r), dtype=np.float32))
    comm.bcast_array(arr, root=n - 1)
    np.testing.assert_array_equal(arr, np.full(3, float(n - 1)))
    (mean,) = comm.reduce_list([counted(np.ones((4, 1)))])
    np.testing.assert_array_equal(mean, np.full((4, 1), float(n)))
    if mode == "host":   # one pinned buffer per (size, dtype), reused by every call
        assert sorted(comm.transport.hosts) == [(3, "float32"), (4, "float64"), (6, "float64")]
    sys.stdout.write(f"OK rank {r} of {n} fake-device {mode}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1])
