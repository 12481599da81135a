"""Rank 0's edges of the training loop: progress and metrics per epoch, checkpoints."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable

from ddl import checkpoint as ckpt
from ddl.failpoints import failpoint
from ddl.config import Config
from ddl.runner.progress import Progress
from ddl.train import Hooks

log = logging.getLogger("ddl")


class EpochHook:
    """Per-epoch edge on rank 0: progress/log lines and MLflow metrics with the diagnosis."""

    def __init__(self, cfg: Config, tracker, enabled: bool):
        self.cfg, self.tracker, self.enabled = cfg, tracker, enabled
        self.best = Best()
        t = cfg.tracking                    # log an epoch when it opens a new bucket of `every`
        cap = -(-cfg.train.epochs // t.max_points) if t.max_points > 0 else 1
        self.every, self.bucket = max(t.log_every, 1, cap), None
        self.progress = Progress(cfg.train.epochs, cfg.train.log_every,
                                 bar=None if cfg.train.progress else False) if enabled else None

    def __call__(self, r: dict) -> None:
        if not self.enabled:
            return
        self.progress(r)
        self.track(r)

    def track(self, r: dict) -> None:
        """Log one record; the tracker skips epochs its run already holds."""
        last = r["epoch"] + 1 == self.cfg.train.epochs
        self.best.see(r)                    # every evaluated epoch, logged or not
        bucket = r["epoch"] // self.every    # (evaluated every k epochs: each evaluation, up to the cap)
        if bucket != self.bucket or last:
            self.bucket = bucket
            metrics = {k: r[k] for k in ("train_cost", "dev_cost", "train_error", "dev_error", "lr",
                                         "samples_per_s", "allreduce_share")}
            metrics.update(train_accuracy=1 - r["train_error"], dev_accuracy=1 - r["dev_error"])
            if "test_error" in r:   # no dev split: the test split is the held-out curve
                metrics.update(test_cost=r["test_cost"], test_error=r["test_error"],
                               test_accuracy=1 - r["test_error"])
            metrics.update(self.best.metrics())
            # a job of several ranks: each host's CPU and memory, the slowest rank (train/resources.py)
            metrics.update({k: v for k, v in r.items() if k.startswith(("host/", "perf/slowest"))})
            # the tracker derives avoidable_bias, variance and the diagnosis tag from the errors
            self.tracker.log_epoch(r["epoch"], metrics)

    def close(self) -> None:
        if self.progress:
            self.progress.close()


class Best:
    """The lowest held-out error so far (dev; test where there is no dev split) and after how many
    epochs it was measured."""

    def __init__(self):
        self.split, self.error, self.epoch = None, None, None

    def see(self, r: dict) -> None:
        split = "dev" if math.isfinite(r.get("dev_error", math.nan)) else "test" if "test_error" in r else None
        error = r.get(f"{split}_error", math.nan) if split else math.nan
        if math.isfinite(error) and (self.error is None or error < self.error):
            self.split, self.error, self.epoch = split, error, r["epoch"] + 1

    def metrics(self) -> dict:
        if self.error is None:
            return {}
        return {f"{self.split}_best_error": self.error, f"{self.split}_best_epoch": self.epoch}


def resolve(run_id):
    """A run id, or a function giving it (a tracking worker's run: asked when first needed)."""
    return run_id() if callable(run_id) else run_id


def make_hooks(cfg: Config, comm, backend, run_dir: Path, ds, run_id, tracker, fixed: dict,
               on_start=lambda step_variant: None) -> tuple[Hooks, Callable]:
    """Rank 0's edges: the run-directory line once the step is built (`on_start`), progress and
    tracking per epoch, checkpoints (with `fixed`, the settings a resume must keep, and the MLflow
    run id, or a function giving it) written by rank 0 while the other ranks wait. Also returns
    `write(state, reason)`, the checkpoint rank 0 writes alone (what a stall ends with)."""
    rank0 = comm.rank == 0

    def write(state, reason: str) -> None:
        """Rank 0 alone, no collective."""
        if rank0:
            path = run_dir / "checkpoints" / ckpt.checkpoint_name(state.epoch, state.step)
            ckpt.save_npz(path, ckpt.state_arrays(state, backend, ds.normalizer),
                          ckpt.state_meta(state, {"run_id": resolve(run_id), "reason": reason, **fixed}))
            if reason == "periodic":
                ckpt.prune(run_dir, cfg.checkpoint.keep)
            log.info("checkpoint (%s) written: %s", reason, path)

    def save(state, reason: str) -> None:
        failpoint("checkpoint", comm.rank, state.epoch)       # tests only: while rank 0 writes
        write(state, reason)
        comm.barrier()

    hooks = Hooks(on_start=on_start if rank0 else _quiet, on_epoch=EpochHook(cfg, tracker, rank0),
                  checkpoint=save, checkpoint_every=cfg.checkpoint.every, stop_after=pruning(cfg, comm))
    return hooks, write


def pruning(cfg: Config, comm):
    """A search trial's pruner (ddl/search/study.py), asked after each evaluated epoch; nothing
    (and no collective) for a run that is not a trial."""
    if cfg.search.trial < 0:
        return lambda record: ""
    from ddl.search.study import Pruning  # noqa: PLC0415 - Optuna only for a search's trials

    return Pruning(cfg.search, comm, cfg.train.epochs)


def _quiet(step_variant: str) -> None:
    """Ranks other than 0 say nothing of the run."""
