"""allreduce=auto on the counting twin of a device: NCCL when every rank has a GPU of its own,
host staging when a node has fewer GPUs than ranks (or for a world of one, which sums nothing and
says nothing), the same on every rank, with the reason in the communicator's description; the
sums right either way.

    mpiexec -n N python auto_transport.py      (prints "OK rank R of N auto")
"""
import sys

import numpy as np

from counting import CountingDevice, counted
from ddl.parallel import install_abort_handler
from ddl.parallel.mpi import MPIComm


def main():
    for gpus in (2, 1):
        comm = MPIComm(allreduce="auto", device=CountingDevice(gpus=gpus))
        install_abort_handler(comm)
        r, n = comm.rank, comm.size
        nccl = n > 1 and gpus >= n
        assert type(comm.transport).__name__ == ("Nccl" if nccl else "HostStaged"), comm.transport
        said = {True: "summed by NCCL (allreduce=auto: every rank has a GPU of its own)",
                False: "more ranks than GPUs"}[nccl]
        assert said in comm.describe if n > 1 else comm.describe == "", comm.describe   # one rank: no sum
        buf = counted(np.arange(4, dtype=np.float64) * (r + 1))
        comm.allreduce_sum(buf)
        np.testing.assert_array_equal(buf, np.arange(4) * n * (n + 1) / 2)
        comm.close()
    sys.stdout.write(f"OK rank {comm.rank} of {comm.size} auto\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
