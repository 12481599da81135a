"""GPU strategies are refused on EVERY rank, before any collective hangs: `allreduce=nccl` when one
rank's CuPy has no NCCL (a stand-in cupy; rank 1 lacks it), `allreduce=cuda_aware` when the real
MPI library does not report CUDA support and nobody opted in.

    python refuse_strategies.py nccl|cuda_aware      (under mpiexec -n N)
"""
import sys
import types

from ddl.parallel import get_comm


def stand_in_cupy(with_nccl: bool) -> None:
    nccl = types.ModuleType("cupy.cuda.nccl")
    nccl.available = with_nccl
    if with_nccl:
        nccl.NcclCommunicator = object
    cuda = types.ModuleType("cupy.cuda")
    cuda.nccl = nccl
    cupy = types.ModuleType("cupy")
    cupy.cuda = cuda
    sys.modules.update({"cupy": cupy, "cupy.cuda": cuda, "cupy.cuda.nccl": nccl})


def main(mode: str) -> None:
    comm = get_comm("mpi")
    stand_in_cupy(with_nccl=comm.rank != 1)
    try:
        run = comm.for_run(types.SimpleNamespace(name="cupy"), mode)
    except RuntimeError as err:
        say(f"REFUSED rank {comm.rank}: {err}")
        return
    say(f"BUILT rank {comm.rank}: {type(run.transport).__name__}")


def say(line: str) -> None:
    sys.stdout.write(line + "\n")     # one write: the launcher interleaves ranks' writes
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1])
