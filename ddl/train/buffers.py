"""The step's buffers and variants, built once per `train()` and never asked which they are: the
reduction (a strategy owning [gradients | tail], ddl/train/policy.py chooses it), the gradients'
named views, the L2 mask, batch norm's reduce, the update (fused or portable), and the forms of
backward and of the tail that fit the backend.

The tail (TAIL slots after the gradients) carries the step's verdicts through the collective:
    [count, loss (0 if non-finite), 1 if the loss is non-finite, sum of the gradients, stop]
After the sum over ranks slot 2 counts the ranks with a non-finite loss, and a NaN/Inf in any
rank's gradient makes slot 3 non-finite: one read of the tail gives every rank the verdict.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ddl.backend import kernel_threads
from ddl.data.shard import widest_slice
from ddl.nn import losses, model
from ddl.nn.compiled import compiled_pass
from ddl.optim.update import make_update
from ddl.params import Flat
from ddl.train import policy
from ddl.train.state import Setup, TrainState

TAIL = 5


@dataclass
class StepBuffers:
    reduction: object
    grads: Flat
    tail: object
    mask: object
    update: Callable          # update(p, g, state, lr, count, mask) -> new state (ddl/optim/update.py)
    forward_backward: Callable  # (params, X, y, idx, key, bn_state) -> (loss, new bn state); grads filled
    write_tail: Callable      # write_tail(count, loss, stop): the tail, without reading anything back
    to_host: Callable
    describe: str = ""        # for the run-directory line: which pass (the reduction says its own)

    @classmethod
    def make(cls, setup: Setup, layout, steps: Optional[int] = None,
             examples: Optional[int] = None) -> StepBuffers:
        """steps: the run's training steps, when known (whether a fused update or the compiled pass
        pays off); examples: the training split's, when known (how wide a batch can be).
        Collective (the reduction's buffers may be the node's shared memory)."""
        backend, cfg = setup.backend, setup.cfg
        mask = backend.asarray(layout.mask(), cfg.dtype) if setup.l2 > 0 else None
        bn_reduce = None
        if setup.spec.batchnorm and setup.sync_bn and setup.comm.size > 1:
            bn_reduce = lambda arrays: setup.comm.reduce_list(arrays, tag="bn")  # noqa: E731
        reduction = policy.make_reduction(cfg, setup.comm, backend, layout.size, TAIL)
        update = make_update(setup.opt, backend, layout.size, setup.l2, cfg.dtype, cfg.fused_update,
                             steps, threads=kernel_threads(blas=setup.threads))
        grads = Flat(layout, reduction.grads, backend.xp)
        host = backend.xp is np     # NumPy writes dW, db straight into the buffer (its out=)
        backward = backward_into(grads, bn_reduce) if host else backward_assign(grads, bn_reduce)
        compiled = compiled_pass(setup.spec, backend, widest_slice(cfg.batch_size, setup.comm.size, examples),
                                 cfg.compiled_pass, steps)
        return cls(reduction, grads, reduction.tail, mask, update,
                   portable_pass(setup, backward, bn_reduce) if compiled is None else into(compiled, grads.buf),
                   host_tail(reduction.tail, grads.buf) if host else device_tail(backend.xp, reduction.tail, grads.buf),
                   backend.to_numpy,
                   "" if compiled is None else "; forward and backward in one compiled call (train.compiled_pass)")

    def hold(self, state: TrainState) -> None:
        """What train() does before its first step: the optimizer state cut to this rank's block
        (sharded), and the parameters moved into the node's one shared buffer (shared memory)."""
        state.opt_state = self.reduction.take(state.opt_state)
        state.params = Flat(state.params.layout, self.reduction.place(state.params.buf), state.params.xp)

    def verdict(self) -> tuple[float, float, float, bool]:
        """The step's global (count, loss sum, non-finite flag, stop flag), from ONE host read
        of the summed tail."""
        count, loss_sum, bad_losses, grad_sum, stop = (float(v) for v in self.to_host(self.tail))
        bad = bad_losses if bad_losses else float(not math.isfinite(grad_sum))
        return count, loss_sum, bad, bool(stop)

    def whole(self, state: TrainState) -> TrainState:
        """The state with its whole optimizer state (gathered from every rank's block: a
        collective when sharded; `state` itself keeps its block) and parameters of its own."""
        whole = self.reduction.whole(state.opt_state)
        own = self.reduction.own(state.params.buf)
        if whole is state.opt_state and own is state.params.buf:
            return state
        params = Flat(state.params.layout, own, state.params.xp)
        return dataclasses.replace(state, params=params, opt_state=whole)

    def release(self, state: TrainState, free: bool = True) -> None:
        """After the last step: the parameters copied out of shared memory, which is then
        unmapped (a collective: not after an error, when it stays mapped until the process ends)."""
        own = self.reduction.own(state.params.buf)
        if own is not state.params.buf:
            state.params = Flat(state.params.layout, own, state.params.xp)
        if free:
            self.reduction.free()


def portable_pass(setup: Setup, backward, bn_reduce):
    """The reference: model.forward, the loss and its gradient, `backward` into the gradients."""
    xp, spec, asarray = setup.backend.xp, setup.spec, setup.backend.asarray

    def run(params, X, y, idx, key, bn_state):
        ZL, caches, bn_new = model.forward(xp, params, X, spec, train=True, bn_state=bn_state,
                                           key=key, idx=asarray(idx), reduce=bn_reduce)
        # labels were checked when the data was loaded: no per-step check (a device sync on a GPU)
        Y = losses.encode_targets(xp, y, spec.output, spec.sizes[-1], ZL.dtype, check=False)
        loss = losses.loss_sum(xp, ZL, Y, spec.output)
        backward(xp, losses.loss_grad(xp, ZL, Y, spec.output), caches, spec)
        return loss, bn_new
    return run


def into(compiled, grads):
    """The compiled pass (ddl/nn/compiled.py) writing the gradients into `grads`."""
    def run(params, X, y, idx, key, bn_state):
        return compiled(params.buf, grads, X, y), None
    return run


def backward_into(grads: Flat, bn_reduce):
    def backward(xp, dZL, caches, spec):
        model.backward(xp, dZL, caches, spec, reduce=bn_reduce, out=grads)
    return backward


def backward_assign(grads: Flat, bn_reduce):
    def backward(xp, dZL, caches, spec):
        grads.assign(model.backward(xp, dZL, caches, spec, reduce=bn_reduce))
    return backward


def host_tail(tail, grads):
    """Host arrays (NumPy): the loss is read here, nothing waits for a device."""
    total = gradient_total(grads)

    def write(count: int, loss, stop: bool) -> None:
        value = float(loss)
        finite = math.isfinite(value)
        tail[:] = (count, value if finite else 0.0, 0.0 if finite else 1.0, total(), float(stop))
    return write


ROW = 1024              # the gradient total's matrix-vector rows (a ones vector of ROW stays in L1)


def gradient_total(grads):
    """() -> the sum of the gradient buffer, which the tail carries for its finiteness (a NaN or
    Inf anywhere makes it NaN or Inf). On a buffer of ROW x 64 or more it is BLAS's matrix-vector
    product of the buffer's rows of ROW with a ones vector, plus np.sum of the rest: the same
    elements summed in another order, ~3x np.sum's speed on the benchmark network (0.10 ms
    against 0.30 ms for 1.86 M float32) and on the rank's BLAS threads."""
    n = grads.shape[0] // ROW * ROW
    if n < ROW * 64:
        return lambda: float(grads.sum())
    rows, rest = grads[:n].reshape(-1, ROW), grads[n:]
    ones, sums = np.ones(ROW, grads.dtype), np.empty(n // ROW, grads.dtype)
    return lambda: float(np.matmul(rows, ones, out=sums).sum()) + float(rest.sum())


def device_tail(xp, tail, grads):
    """Device arrays: the verdicts computed and written on the device, no element read back."""
    def write(count: int, loss, stop: bool) -> None:
        finite = xp.isfinite(loss)
        verdicts = [xp.where(finite, loss, xp.zeros_like(loss)),
                    xp.astype(xp.logical_not(finite), loss.dtype), xp.sum(grads)]
        tail[0] = float(count)
        tail[1:4] = xp.stack(verdicts)          # one device copy
        tail[4] = float(stop)
    return write
