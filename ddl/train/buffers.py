"""The step's buffers (ddl/train.py): the extended gradient buffer [grads | tail] and its named
views, the L2 mask, and the step's variants: the fused update, the sharded optimizer's block, the
overlapped layer buckets, and a sharded run's buffers in one node's shared memory."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from ddl.backend import kernel_threads
from ddl.nn import model
from ddl.optim.fused import fused_update
from ddl.params import Flat
from ddl.parallel.reduction import Overlap, Shard, node_memory, overlap, shard_optimizer

if TYPE_CHECKING:
    from ddl.train.state import Setup, TrainState

TAIL = 5  # trailing slots of the gradient buffer (see write_tail)


@dataclass
class StepBuffers:
    """The extended gradient buffer [grads | tail], its named views, and the L2 mask."""

    ext: object
    grads: Flat
    tail: object
    mask: object
    bn_reduce: Optional[Callable]
    fused: Optional[Callable] = None   # the one-pass update (ddl/optim/fused.py), or None: portable
    shard: Optional[Shard] = None      # the optimizer sharded across ranks, or None
    overlap: Optional[Overlap] = None  # the allreduce in layer buckets during backward, or None
    memory: Optional[object] = None    # sharded on one node: the shared buffers (parallel/shared_memory.py)

    @classmethod
    def make(cls, setup: Setup, layout, steps: Optional[int] = None) -> StepBuffers:
        """steps: the run's training steps, when known (whether a fused update pays off)."""
        xp, dtype = setup.backend.xp, setup.backend.dtype(setup.cfg.dtype)
        mask = setup.backend.asarray(layout.mask(), setup.cfg.dtype) if setup.l2 > 0 else None
        reduce = None
        if setup.spec.batchnorm and setup.sync_bn and setup.comm.size > 1:
            reduce = lambda arrays: setup.comm.reduce_list(arrays, tag="bn")  # noqa: E731
        fused = fused_update(setup.opt, setup.backend, layout.size, setup.cfg.fused_update, steps,
                             threads=kernel_threads())
        if fused is not None and mask is None:
            mask = xp.zeros((0,), dtype=dtype)      # unread without L2; the kernel wants an array
        shard, memory = None, None
        if shard_optimizer(setup, layout.size):
            shard = Shard.make(setup.comm, layout.size, xp, dtype, mask)
            memory = node_memory(setup, layout.size + TAIL, layout.size, dtype)
        ext = memory.grads if memory is not None else xp.zeros((layout.size + TAIL,), dtype=dtype)
        grads = Flat(layout, ext[:layout.size], xp)
        buckets = Overlap(setup.comm, grads.buf, model.layer_spans(setup.spec)) if overlap(setup) else None
        return cls(ext, grads, ext[layout.size:], mask, reduce, fused, shard, buckets, memory)

    def hold(self, state: TrainState) -> None:
        """What train() does before its first step: the optimizer state cut to this rank's block
        (sharded), and the parameters moved into the node's one shared buffer (shared memory)."""
        if self.shard is not None:
            state.opt_state = self.shard.take(state.opt_state)
        if self.memory is not None:
            self.memory.fill_params(state.params.buf)
            state.params = Flat(state.params.layout, self.memory.params, np)

    def shares(self, params: Flat) -> bool:
        return self.memory is not None and self.memory.holds_params(params.buf)

    def release(self, state: TrainState, free: bool = True) -> None:
        """After the last step: the parameters copied out of shared memory, whose windows are then
        unmapped (a collective: not after an error, when they stay mapped until the process ends)."""
        if self.memory is None:
            return
        if self.shares(state.params):
            state.params = state.params.copy()
        if free:
            memory, self.memory = self.memory, None
            self.ext = self.grads = self.tail = None
            memory.free()
