"""The training loop: epochs of data-parallel mini-batch steps, read top to bottom.

Every rank runs `train()` on its own slice of each global mini-batch. One step (step.py) is:
forward/backward on the local columns -> the one collective of [gradient sums | count, loss,
flags] -> the update, the same on every rank. Every rank sees the same reduced buffer, so every
rank takes the same skip/stop decision at the same step. Which collective (one allreduce, the
optimizer sharded through MPI or through the node's shared memory, nothing for a world of one) is
decided once, when train() builds the step's buffers (policy.py, buffers.py). With the optimizer
sharded, the state is whole outside `train()`: cut into blocks at the start, gathered for
checkpoints and at the end.
"""
from __future__ import annotations

import math
import time
from typing import Optional

import numpy as np

from ddl.backend import make_key
from ddl.data.shard import epoch_batches, n_steps
from ddl.failpoints import failpoint
from ddl.train import early_stopping, policy, resources
from ddl.train.buffers import StepBuffers
from ddl.train.evaluate import evaluate_split
from ddl.train.nonfinite import check_divergence, handle_nonfinite
from ddl.train.state import Hooks, Setup, TrainState
from ddl.train.step import train_step


def train(ds, setup: Setup, state: TrainState, hooks: Optional[Hooks] = None) -> TrainState:
    """Run epochs `state.epoch .. cfg.epochs-1` (resuming at `state.step`); returns the final state."""
    hooks, cfg = hooks or Hooks(), setup.cfg
    check_start(ds, setup)
    sync_params(setup, state)
    steps = (cfg.epochs - state.epoch) * n_steps(ds.train.m, cfg.batch_size)
    bufs = StepBuffers.make(setup, state.params.layout, steps, ds.train.m)
    bufs.hold(state)                              # sharded: from here on this rank holds its block
    hooks.on_start(setup.comm.describe + bufs.reduction.describe + bufs.describe)   # as built
    try:
        signalled = run_epochs(ds, setup, state, bufs, hooks)
    except BaseException:
        bufs.release(state, free=False)           # no collective: another rank may be gone
        raise
    bufs.release(state)
    if not signalled:
        early_stopping.restore_best(state)
    return bufs.whole(state)


def run_epochs(ds, setup: Setup, state: TrainState, bufs: StepBuffers, hooks: Hooks) -> bool:
    """The epochs of `train`, on buffers it made; `state` is updated in place. True: stopped by a
    signal (after its checkpoint)."""
    cfg, comm = setup.cfg, setup.comm
    timer, sampler = Timer(comm), resources.Sampler(comm)
    batches_of = epoch_batches(ds.train.m, cfg.batch_size, cfg.seed, comm.rank, comm.size)
    for epoch in range(state.epoch, cfg.epochs):
        lr = setup.schedule(epoch)
        batches = batches_of(epoch)
        for step in range(state.step, len(batches)):
            X, y = setup.batch(ds.train, batches[step])
            X = failpoint("step", comm.rank, epoch * len(batches) + step, X)     # tests only
            count, _, bad, stop = train_step(setup, state, bufs, X, y, batches[step],
                                             make_key(cfg.seed, epoch, step), lr)
            state.step = step + 1
            timer.examples += count
            if bad:
                handle_nonfinite(setup, state, epoch, step, bad)
            if stop:
                state.stopped = "signal"
                hooks.checkpoint(bufs.whole(state), "signal")
                return True
        state.epoch, state.step = epoch + 1, 0
        # evaluate, checkpoint
        if state.epoch % max(cfg.eval_every, 1) == 0 or state.epoch == cfg.epochs:
            failpoint("eval", comm.rank, state.epoch)                           # tests only
            record = epoch_record(ds, setup, state, epoch, lr, timer.lap())
            state.history.append(record)
            hooks.on_epoch({**record, **resources.gather(comm, sampler)})   # collective: each host's use
            check_divergence(setup, state, record)
            timer.restart()
            if early_stopping.update(state, record, cfg):
                break
            why = hooks.stop_after(record)            # a search's pruner: the same on every rank
            if why:
                state.stopped = why
                break
        if hooks.checkpoint_every and state.epoch % hooks.checkpoint_every == 0:
            hooks.checkpoint(bufs.whole(state), "periodic")
    return False


class Timer:
    """Training throughput between evaluations (evaluation time excluded)."""

    def __init__(self, comm):
        self.comm, self.examples = comm, 0.0
        self.t0, self.ar0 = time.perf_counter(), comm.allreduce_time

    def lap(self) -> dict:
        seconds = time.perf_counter() - self.t0
        share = (self.comm.allreduce_time - self.ar0) / seconds if seconds > 0 else 0.0
        out = {"samples_per_s": self.examples / seconds if seconds > 0 else math.nan,
               "allreduce_share": share, "train_seconds": seconds}
        return out

    def restart(self) -> None:
        self.examples, self.t0, self.ar0 = 0.0, time.perf_counter(), self.comm.allreduce_time


def epoch_record(ds, setup: Setup, state: TrainState, epoch: int, lr: float, timing: dict) -> dict:
    """Metrics after `epoch`: train/dev cost and error in evaluation mode (no dropout, BN running
    statistics; test cost and error too when there is no dev split), plus the training
    throughput since the previous record."""
    train_cost, train_error = evaluate_split(setup, state, ds.train)
    dev_cost, dev_error = evaluate_split(setup, state, ds.dev)
    held_out = {}
    if math.isnan(dev_cost) and ds.test is not None and ds.test.m > 0:
        # no dev split: the test split is the held-out curve (shown and diagnosed, never used to
        # choose: early stopping needs a dev split)
        held_out = dict(zip(("test_cost", "test_error"), evaluate_split(setup, state, ds.test)))
    return {"epoch": epoch, "lr": lr, "train_cost": train_cost, "train_error": train_error,
            "dev_cost": dev_cost, "dev_error": dev_error, **held_out, **timing,
            "skipped_steps": state.skipped_steps}


def check_start(ds, setup: Setup) -> None:
    """What the config asks of this data (train() checks again for callers of the library)."""
    cfg = setup.cfg
    if cfg.batch_size < 1:
        raise ValueError(f"train.batch_size must be an integer >= 1, got {cfg.batch_size}")
    if cfg.epochs < 0:
        raise ValueError(f"train.epochs must be >= 0, got {cfg.epochs}")
    if cfg.on_nonfinite not in ("stop", "skip"):
        raise ValueError(f"train.on_nonfinite must be 'stop' or 'skip', got {cfg.on_nonfinite!r}")
    if cfg.patience > 0 and (ds.dev is None or ds.dev.m == 0):
        raise ValueError("train.patience > 0 (early stopping) needs a dev split: set "
                         "data.dev_fraction > 0 or use a dataset with its own dev set")
    if ds.train.n_x != setup.spec.sizes[0]:
        raise ValueError(f"the data has {ds.train.n_x} features but the network's input layer has "
                         f"{setup.spec.sizes[0]}")
    policy.unshardable(cfg, setup.backend.name)                 # the modes, and what `on` needs


def sync_params(setup: Setup, state: TrainState) -> None:
    """Every rank starts from rank 0's parameters: broadcast once, then check they are equal."""
    comm, backend = setup.comm, setup.backend
    if comm.size == 1:
        return
    backend.synchronize()
    comm.bcast_array(state.params.buf, root=0)
    host = backend.to_numpy(state.params.buf).astype(np.float64)
    local = np.array([host.sum(), (host * host).sum(), 1.0])
    total = comm.sum_host(local.copy(), tag="check")
    if not np.allclose(total[:2], local[:2] * comm.size, rtol=1e-9, atol=0):
        raise RuntimeError("ranks disagree on the initial parameters after the broadcast")
