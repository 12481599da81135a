"""The training loop: epochs of data-parallel mini-batch steps, read top to bottom.

Every rank runs `train()` on its own slice of each global mini-batch. One step is:
forward/backward on the local columns -> ONE allreduce of [gradient sums | count, loss, flags] ->
divide by the global count, add L2 once, optimizer update. Every rank sees the same reduced buffer,
so optimizer state stays identical everywhere without being sent, and every rank takes the same
skip/stop decision at the same step. A 1-rank run is the same code with `SerialComm`.

With the optimizer sharded (`train.shard_optimizer`, ddl/parallel/reduction.py) the allreduce is split
in its two halves around the update: a reduce-scatter gives each rank its block of the summed
gradients (and every rank the whole tail), each rank updates its block of the parameters and
optimizer state, and an allgather of the parameters ends the step. Outside `train()` the state is
whole: it is cut into blocks at the start and gathered for checkpoints and at the end.
With every rank on one node the two halves go through memory that every rank maps
(`train.shared_memory`, ddl/parallel/shared_memory.py): the parameters are one shared buffer while
`train()` runs, and each rank sums its block from every rank's shared gradient segment.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Optional

import numpy as np

from ddl import failpoints as faults
from ddl.backend import make_key
from ddl.data.shard import shard_batches
from ddl.nn import model
from ddl.parallel.reduction import overlap, shard_optimizer
from ddl.train import early_stopping
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
    steps = (cfg.epochs - state.epoch) * -(-ds.train.m // cfg.batch_size)
    bufs = StepBuffers.make(setup, state.params.layout, steps)
    bufs.hold(state)                              # sharded: from here on this rank holds its block
    try:
        signalled = run_epochs(ds, setup, state, bufs, hooks)
    except BaseException:
        bufs.release(state, free=False)           # no collective: another rank may be gone
        raise
    bufs.release(state)
    if not signalled:
        early_stopping.restore_best(state)
    return whole(setup, bufs, state)


def run_epochs(ds, setup: Setup, state: TrainState, bufs: StepBuffers, hooks: Hooks) -> bool:
    """The epochs of `train`, on buffers it made; `state` is updated in place. True: stopped by a
    signal (after its checkpoint)."""
    cfg, comm = setup.cfg, setup.comm
    timer = Timer(comm)
    fault = faults.from_env()                     # test-only; None in every real run
    watch = getattr(comm, "stall_watch", None)    # MPI: name ranks that do not arrive
    if watch is not None:
        watch.timeout, watch.on_stall = cfg.stall_timeout, cfg.on_stall
        watch.on_abort = lambda: hooks.checkpoint_alone(state, "stall")   # the state before the step
    for epoch in range(state.epoch, cfg.epochs):
        lr = setup.schedule(epoch)
        batches = shard_batches(ds.train.m, cfg.batch_size, epoch, cfg.seed, comm.rank, comm.size)
        for step in range(state.step, len(batches)):
            key = make_key(cfg.seed, epoch, step)
            if watch is not None:
                watch.position = f"epoch {epoch} step {step}"
            poison = fault is not None and fault.due(comm.rank, epoch * len(batches) + step) \
                and fault.strike()
            count, loss_sum, bad, stop = train_step(ds, setup, state, bufs, batches[step], key, lr,
                                                    poison)
            state.step = step + 1
            timer.examples += count
            if bad:
                handle_nonfinite(setup, state, epoch, step, bad)
            if stop:
                state.stopped = "signal"
                hooks.checkpoint(whole(setup, bufs, state), "signal")
                return True
        state.epoch, state.step = epoch + 1, 0
        if state.epoch % max(cfg.eval_every, 1) == 0 or state.epoch == cfg.epochs:
            if fault is not None and fault.due(comm.rank, state.epoch, "eval"):
                fault.strike()
            record = epoch_record(ds, setup, state, epoch, lr, timer.lap())
            state.history.append(record)
            hooks.on_epoch(record)
            check_divergence(setup, state, record)
            timer.restart()
            if early_stopping.update(state, record, cfg):
                break
        if hooks.checkpoint_every and state.epoch % hooks.checkpoint_every == 0:
            hooks.checkpoint(whole(setup, bufs, state), "periodic")
    return False


def whole(setup: Setup, bufs: StepBuffers, state: TrainState) -> TrainState:
    """The state with its whole optimizer state (gathered from every rank's block: a collective;
    `state` itself keeps its block) and parameters of its own (a copy of the node's shared ones),
    or `state` itself when the optimizer is not sharded."""
    if bufs.shard is None:
        return state
    params = state.params.copy() if bufs.shares(state.params) else state.params
    return dataclasses.replace(state, params=params,
                               opt_state=bufs.shard.gather(setup.comm, state.opt_state))


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
    shard_optimizer(setup, model.layout(setup.spec).size)      # their modes, and what `on` needs
    overlap(setup)


def sync_params(setup: Setup, state: TrainState) -> None:
    """Every rank starts from rank 0's parameters: broadcast once, then check they are equal."""
    comm, backend = setup.comm, setup.backend
    if comm.size == 1:
        return
    backend.synchronize()
    comm.bcast_array(state.params.buf, root=0)
    host = backend.to_numpy(state.params.buf).astype(np.float64)
    local = np.array([host.sum(), (host * host).sum(), 1.0])
    total = comm.allreduce_sum(local.copy(), tag="check")
    if not np.allclose(total[:2], local[:2] * comm.size, rtol=1e-9, atol=0):
        raise RuntimeError("ranks disagree on the initial parameters after the broadcast")
