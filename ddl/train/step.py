"""One data-parallel training step: forward/backward on this rank's columns, the one collective,
the update."""
from __future__ import annotations

import math

import numpy as np

from ddl.nn import losses, model
from ddl.optim.transforms import add_l2
from ddl.parallel import signals
from ddl.train.buffers import StepBuffers
from ddl.train.nonfinite import warn_local_loss
from ddl.train.state import Setup, TrainState


def train_step(ds, setup: Setup, state: TrainState, bufs: StepBuffers, idx, key: int, lr: float,
               poison: bool = False):
    """Forward/backward on this rank's rows `idx`, one allreduce, one update.

    Returns the global (count, loss sum, non-finite flag, stop flag) of the step. On a GPU the
    host waits for the device once: the read of the reduced tail (see `write_tail`).
    """
    backend, comm, spec = setup.backend, setup.comm, setup.spec
    xp = backend.xp
    X, y = setup.batch(ds.train, idx)
    # forward/backward: everything stays on the device until the tail is read
    ZL, caches, bn_new = model.forward(xp, state.params, X, spec, train=True, bn_state=state.bn_state,
                                       key=key, idx=backend.asarray(idx), reduce=bufs.bn_reduce)
    # labels were checked when the data was loaded: no per-step check (a device sync on a GPU)
    Y = losses.encode_targets(xp, y, spec.output, spec.sizes[-1], ZL.dtype, check=False)
    loss = losses.loss_sum(xp, ZL, Y, spec.output)
    if poison:                                    # DDL_FAULT=nan@…: this rank's loss is NaN
        loss = loss * float("nan")
    dZL = losses.loss_grad(xp, ZL, Y, spec.output)
    buckets = bufs.overlap                        # with train.overlap: each layer's sum starts here
    if xp is np:                                  # NumPy writes dW, db straight into the buffer
        model.backward(xp, dZL, caches, spec, reduce=bufs.bn_reduce, out=bufs.grads,
                       on_layer=buckets.start if buckets is not None else None)
    else:
        bufs.grads.assign(model.backward(xp, dZL, caches, spec, reduce=bufs.bn_reduce))
    write_tail(xp, bufs, len(idx), loss, signals.requested(),
               buckets.local_sum if buckets is not None else None)
    shard = bufs.shard
    if buckets is not None:         # the layers' sums are on their way: the tail's, then all done
        buckets.finish(bufs.tail)
    elif shard is not None:         # this rank's block of the summed gradients, and the whole tail
        comm.reduce_scatter_sum(bufs.grads.buf, shard.g, shard.counts, tail=bufs.tail, tag="grad")
    elif comm.size > 1:             # the one collective (none for a world of one: the sum over one
        comm.allreduce_sum(bufs.ext, tag="grad")        # rank is the buffer itself)
    count, loss_sum, bad_losses, grad_sum, stop = (float(v) for v in backend.to_numpy(bufs.tail))
    bad = bad_losses if bad_losses else float(not math.isfinite(grad_sum))
    if bad:
        warn_local_loss(backend, loss, len(idx), state.epoch)
    if bad or count == 0:           # skipped on every rank; sharded, the step still ends together
        if shard is not None:       # (on one node: no rank writes its next gradients while
            comm.allgather(state.params.buf, shard.counts, tag="params")  # another reads them)
        return count, loss_sum, bad, stop
    # update (of this rank's block when sharded: p, g, mask and the optimizer state are blocks)
    p, g, mask = state.params.buf, bufs.grads.buf, bufs.mask
    if shard is not None:
        p, g, mask = p[shard.lo:shard.hi], shard.g, shard.mask
    if bufs.fused is not None:      # the lines below in one pass, bit-identical
        state.opt_state = bufs.fused(p, g, state.opt_state, lr, count, mask, setup.l2 / count)
    else:
        g /= count                  # scratch buffer: overwritten by the next step's gradients
        if setup.l2 > 0:
            g = add_l2(g, p, mask, setup.l2 / count)
        delta, state.opt_state = setup.opt.update(g, state.opt_state, lr, donate=True)
        p -= delta
    if shard is not None:           # every rank's updated block to every rank
        comm.allgather(state.params.buf, shard.counts, tag="params")
    if bn_new is not None:
        state.bn_state = bn_new
    return count, loss_sum, bad, stop


def write_tail(xp, bufs: StepBuffers, count: int, loss, stop: bool, grad_sum=None) -> None:
    """Fill the buffer's tail on the device, without reading anything back:
    [count, loss (0 if non-finite), 1 if the loss is non-finite, sum of the gradients, stop]
    (`grad_sum`: that sum when already taken, bucket by bucket, as the buckets were sent).

    After the allreduce slot 2 counts the ranks with a non-finite loss, and a NaN/Inf in any
    rank's gradient makes slot 3 non-finite: one read of the tail gives every rank the verdict.
    """
    if xp is np:                    # host arrays (lean NumPy): nothing to keep on a device
        value = float(loss)
        finite = math.isfinite(value)
        bufs.tail[:] = (count, value if finite else 0.0, 0.0 if finite else 1.0,
                        bufs.grads.buf.sum() if grad_sum is None else grad_sum, float(stop))
        return
    finite = xp.isfinite(loss)
    verdicts = [xp.where(finite, loss, xp.zeros_like(loss)), xp.astype(xp.logical_not(finite), loss.dtype),
                xp.sum(bufs.grads.buf)]
    tail = bufs.tail
    tail[0] = float(count)
    tail[1:4] = xp.stack(verdicts)          # one device copy: no element is read back here
    tail[4] = float(stop)
