"""`MPIComm`: the communicator over MPI (mpi4py), used by every rank under `mpiexec`.

NumPy buffers go straight to `Allreduce(MPI.IN_PLACE, buf, op=SUM)` through the buffer interface
(no pickling); CuPy buffers go through the strategy chosen in `gpu.py` (host staging, CUDA-aware
MPI or NCCL); any other array-API array (e.g. array_api_strict) is staged through a host copy.
The library works on a CLONE of COMM_WORLD so user code on COMM_WORLD can never match our messages.
"""
from __future__ import annotations

import itertools
import os
import sys
import time

import numpy as np
from ddl.backend import namespace as array_namespace
from mpi4py import MPI

from ddl.parallel import stall
from ddl.parallel.comm import Comm, check_op, check_root
from ddl.parallel.gpu import CupyDevice, check_backend, make_device_reducer
from ddl.parallel.shared_memory import NodeMemory

_OPS = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}


ABORT_GRACE_S = 0.5


class MPIComm(Comm):
    """Communicator over a clone of MPI.COMM_WORLD; `local_rank` is the rank within this node."""

    def __init__(self, backend=None, allreduce: str = "host", device=None):
        """`device`: the device-array operations for the GPU strategies (CupyDevice unless a
        test gives a counting twin); arrays it `owns` go through the chosen strategy."""
        super().__init__()
        self.device = device or CupyDevice()
        check_backend(allreduce, backend)
        self.comm = MPI.COMM_WORLD.Clone()
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        # Ranks sharing memory = ranks on this node; MPI knows this, launcher env vars may not.
        node = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = node.Get_rank(), node.Get_size()
        self.node_cpus = tuple(node.allgather(self.node_cpus[0]))
        node.Free()
        self.library_version = library_version()
        self.allreduce_mode = allreduce
        self._reducer = None
        self.stall_watch = stall.StallWatch()     # the trainer sets timeout, policy, position
        self.memory = None                        # the sharded step's shared buffers, if any
        # More ranks than cores here: polling costs ~25 % of a step (measured, 3 ranks on 2
        # cores) and blocking waits spin anyway; there the blocking Allreduce is kept.
        self.polled = self.local_size <= len(os.sched_getaffinity(0))
        if getattr(backend, "name", None) == "cupy":
            self._device()  # device already bound by get_backend: set NCCL up now

    def use_allreduce(self, mode: str, backend=None) -> None:
        """Choose how CuPy buffers are reduced (the config arrives after the communicator)."""
        check_backend(mode, backend)
        if mode != self.allreduce_mode:
            self.allreduce_mode, self._reducer = mode, None
        if getattr(backend, "name", None) == "cupy":
            self._device()

    def _device(self):
        """The CuPy strategy, built on the first CuPy buffer when no cupy backend was given.

        Lazy building is safe because every rank makes the same sequence of collectives.
        """
        if self._reducer is None:
            self._reducer = make_device_reducer(self.comm, self.allreduce_mode, self.device)
        return self._reducer

    def _allreduce_sum(self, buf) -> None:
        if self.device.owns(buf):
            self._device().allreduce_sum(buf)
        elif isinstance(buf, np.ndarray) and self.polled:   # waiting ranks sleep, stalls are named
            stall.wait(self.comm, self.comm.Iallreduce(MPI.IN_PLACE, _contiguous(buf), op=MPI.SUM),
                       self.stall_watch)
        elif isinstance(buf, np.ndarray):
            self.comm.Allreduce(MPI.IN_PLACE, _contiguous(buf), op=MPI.SUM)
        else:
            _through_host(buf, lambda h: self.comm.Allreduce(MPI.IN_PLACE, h, op=MPI.SUM))

    def node_memory(self, ext_size: int, param_size: int, dtype):
        """The windows when every rank is on this node (and its shared memory has room), else
        None; the sharded step then reduces and gathers through them (see ddl/parallel/shared_memory.py)."""
        if self.size == 1 or self.local_size != self.size:
            return None
        self.memory = NodeMemory.allocate(self.comm, ext_size, param_size, dtype)
        return self.memory

    def _reduce_scatter_sum(self, buf, out, counts: tuple, tail) -> None:
        memory = self.memory
        if memory is not None and memory.holds_grads(buf) and tail is not None:
            memory.sync()                           # this rank's gradients out, before the tail
            self._complete([self.comm.Iallreduce(MPI.IN_PLACE, _contiguous(tail), op=MPI.SUM)])
            memory.sync()                           # every rank's gradients in
            lo = sum(counts[:self.rank])
            memory.sum_block(lo, lo + counts[self.rank], out)
            return
        if not all(isinstance(a, np.ndarray) for a in (buf, out, tail if tail is not None else out)):
            # device or other array-API buffers: through host copies (correct, not fast; the
            # trainer shards only NumPy runs)
            host_out = np.array(np.from_dlpack(out), copy=True)
            _through_host(buf, lambda h: self.comm.Reduce_scatter(h, host_out, list(counts), op=MPI.SUM))
            out[...] = array_namespace(out).asarray(host_out)
            if tail is not None:
                _through_host(tail, lambda h: self.comm.Allreduce(MPI.IN_PLACE, h, op=MPI.SUM))
            return
        reqs = [self.comm.Ireduce_scatter(_contiguous(buf), _contiguous(out), list(counts), op=MPI.SUM)]
        if tail is not None:
            reqs.append(self.comm.Iallreduce(MPI.IN_PLACE, _contiguous(tail), op=MPI.SUM))
        self._complete(reqs)

    def _allgather(self, buf, counts: tuple) -> None:
        memory = self.memory
        if memory is not None and memory.holds_params(buf):   # every block is in place already
            memory.sync()
            self._complete([self.comm.Ibarrier()])
            memory.sync()
            return
        displs = [0, *itertools.accumulate(counts[:-1])]
        spec = lambda h: [h, (list(counts), displs)]  # noqa: E731
        if not isinstance(buf, np.ndarray):
            _through_host(buf, lambda h: self.comm.Allgatherv(MPI.IN_PLACE, spec(h)))
            return
        self._complete([self.comm.Iallgatherv(MPI.IN_PLACE, spec(_contiguous(buf)))])

    def start_allreduce(self, buf, tag: str = "grad"):
        if not isinstance(buf, np.ndarray) or self.size == 1:
            return super().start_allreduce(buf, tag)
        return self._timed(tag, lambda b: self.comm.Iallreduce(MPI.IN_PLACE, _contiguous(b), op=MPI.SUM), buf)

    def progress(self, handles: list) -> None:
        started = [h for h in handles if h is not None]
        if started:
            MPI.Request.Testall(started)

    def finish(self, handles: list, tag: str = "grad") -> None:
        started = [h for h in handles if h is not None]
        if started:
            self._timed(tag, self._complete, started, calls=0)

    def _complete(self, reqs: list) -> None:
        """Wait for the step's requests: polled (sleeping, naming stalls) where ranks have cores."""
        if self.polled:
            stall.wait(self.comm, reqs, self.stall_watch)
        else:
            MPI.Request.Waitall(reqs)

    def allreduce_obj(self, obj, op: str = "sum"):
        check_op(op)
        return self.comm.allreduce(obj, op=_OPS[op])

    def bcast(self, obj, root: int = 0):
        check_root(root, self.size)
        return self.comm.bcast(obj, root=root)

    def bcast_array(self, buf, root: int = 0):
        check_root(root, self.size)
        if self.device.owns(buf):
            self._device().bcast(buf, root)
        elif isinstance(buf, np.ndarray):
            self.comm.Bcast(_contiguous(buf), root=root)
        else:
            _through_host(buf, lambda h: self.comm.Bcast(h, root=root))
        return buf

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        # The launcher forwards our output through its proxies; tearing the job down at once can
        # drop the last lines (the very error message). A moment lets them reach the user.
        time.sleep(ABORT_GRACE_S)
        # Abort COMM_WORLD (not our clone) so the launcher tears down every rank.
        MPI.COMM_WORLD.Abort(code)


def _contiguous(buf: np.ndarray) -> np.ndarray:
    if not buf.flags.c_contiguous:
        raise ValueError(
            f"MPI needs a contiguous buffer, got strides {buf.strides} for shape {buf.shape}"
        )
    return buf


def _through_host(buf, op) -> None:
    """Run the in-place MPI `op` on a host copy of an array-API array, then write it back."""
    host = np.array(np.from_dlpack(buf), copy=True)
    op(host)
    buf[...] = array_namespace(buf).asarray(host)


def library_version() -> str:
    """First line of the MPI library's version string."""
    return MPI.Get_library_version().strip().splitlines()[0].strip()
