"""Rank 1 raises after a barrier while every other rank waits in an allreduce.

Without the abort handler this job hangs forever; with it, mpiexec ends at once, non-zero.
"""
import numpy as np

from ddl.parallel import get_comm, install_abort_handler


def main():
    comm = get_comm("auto")
    install_abort_handler(comm)
    comm.barrier()
    if comm.rank == 1:
        raise RuntimeError("deliberate failure on rank 1")
    comm.allreduce_sum(np.ones(3))
    print(f"rank {comm.rank} passed the allreduce", flush=True)


if __name__ == "__main__":
    main()
