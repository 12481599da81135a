"""One data-parallel training step: forward/backward on this rank's columns, the one collective,
the update. Its variants (the forward/backward pass, compiled or portable; the reduction; the
update; the backend's form of the tail) were chosen once, in StepBuffers.make; the step does not
ask which they are."""
from __future__ import annotations

from ddl.parallel import signals
from ddl.train.buffers import StepBuffers
from ddl.train.nonfinite import warn_local_loss
from ddl.train.state import Setup, TrainState


def train_step(setup: Setup, state: TrainState, bufs: StepBuffers, X, y, idx, key: int, lr: float):
    """Forward/backward on this rank's columns X (n_x, b), the batch rows `idx` with labels y;
    [gradient sums | tail] summed over the ranks; the update on every rank.

    Returns the global (count, loss sum, non-finite flag, stop flag) of the step. On a GPU the
    host waits for the device once: the read of the reduced tail (bufs.verdict).
    """
    # forward/backward: everything stays on the device until the tail is read
    loss, bn_new = bufs.forward_backward(state.params, X, y, idx, key, state.bn_state)
    bufs.write_tail(len(idx), loss, signals.requested())
    # the one collective (sharded: this rank's block of the gradients, and the whole tail)
    bufs.reduction.reduce()
    count, loss_sum, bad, stop = bufs.verdict()
    # update, of this rank's block when sharded; a non-finite or empty step is skipped everywhere
    if bad:
        warn_local_loss(setup.backend, loss, len(idx), state.epoch)
    elif count:
        p, g, mask = bufs.reduction.block(state.params.buf, bufs.mask)
        state.opt_state = bufs.update(p, g, state.opt_state, lr, count, mask)
        state.bn_state = state.bn_state if bn_new is None else bn_new
    bufs.reduction.gather(state.params.buf)     # sharded: every rank's block to every rank
    return count, loss_sum, bad, stop
