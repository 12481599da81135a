"""The learning-rate range test: the course's "try α on a log scale" in one short run.

    ddl-train lr_range.enabled=true data=moons            # 1e-6 .. 10 over 100 steps

The rate grows geometrically at every step, from `lr_range.start` to `lr_range.end` over
`lr_range.steps` data-parallel steps (the run's optimizer, batches and ranks; the parameters go on
from step to step). The training loss of each step is smoothed (an exponential moving average with
bias correction), and the test stops early once it exceeds 4x its lowest value. The suggested
range runs from the rate where the smoothed loss has first fallen 5 % below where it started (learning
begins) to the rate of its minimum (beyond it, training diverges); it is printed with the search
command that takes it, written to lr_range.json and lr_range.png, and tagged on the MLflow run
(`ddl.lr_range.low`, `ddl.lr_range.high`) with the loss curve (`lr_range/loss`, `lr_range/lr`).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from ddl.atomic import write_text_atomic
from ddl.backend import make_key
from ddl.config import Config
from ddl.data.shard import shard_batches
from ddl.train.buffers import StepBuffers
from ddl.train.step import train_step

log = logging.getLogger("ddl")
SMOOTH, DIVERGED, STARTED = 0.9, 4.0, 0.95


def rates(start: float, end: float, steps: int) -> list[float]:
    """`steps` rates from `start` to `end`, each the last times the same factor."""
    return [start * (end / start) ** (k / max(steps - 1, 1)) for k in range(steps)]


def sweep_rates(setup, ds, state, cfg) -> list[tuple[float, float]]:
    """[(rate, the step's mean training loss over every rank's columns)], one per step, until the
    loss is not finite or exceeds DIVERGED x its smoothed minimum."""
    comm, tcfg = setup.comm, setup.cfg
    schedule = rates(cfg.start, cfg.end, cfg.steps)
    bufs = StepBuffers.make(setup, state.params.layout, len(schedule), ds.train.m)
    bufs.hold(state)
    curve, epoch, batches, step, lowest = [], 0, [], 0, math.inf
    for k, lr in enumerate(schedule):
        if step == len(batches):                   # the next epoch's shuffle, as train() would
            batches = shard_batches(ds.train.m, tcfg.batch_size, epoch, tcfg.seed, comm.rank, comm.size)
            epoch, step = epoch + 1, 0
        X, y = setup.batch(ds.train, batches[step])
        count, loss_sum, bad, _ = train_step(setup, state, bufs, X, y, batches[step],
                                             make_key(tcfg.seed, epoch - 1, step), lr)
        step += 1
        loss = loss_sum / count if count and not bad else math.inf
        curve.append((lr, loss))
        smoothed = smooth([v for _, v in curve])[-1]
        lowest = min(lowest, smoothed)
        if not math.isfinite(loss) or smoothed > DIVERGED * lowest:
            break
    bufs.release(state)
    return curve


def smooth(losses: list[float]) -> list[float]:
    """The exponential moving average of the losses (SMOOTH), with bias correction; a loss that
    is not finite counts as DIVERGED x the worst finite one."""
    out, avg, worst = [], 0.0, 0.0
    for k, value in enumerate(losses, 1):
        worst = max(worst, value) if math.isfinite(value) else worst
        value = value if math.isfinite(value) else DIVERGED * (worst or 1.0)
        avg = SMOOTH * avg + (1 - SMOOTH) * value
        out.append(avg / (1 - SMOOTH ** k))
    return out


def suggest(curve: list[tuple[float, float]]) -> tuple[float, float]:
    """(low, high): from where the smoothed loss first falls STARTED x below its start to its
    minimum; low is high / 100 when the loss never fell that far before its minimum."""
    lrs, smoothed = [lr for lr, _ in curve], smooth([v for _, v in curve])
    best = min(range(len(smoothed)), key=smoothed.__getitem__)
    high = lrs[best]
    low = next((lrs[k] for k in range(best + 1) if smoothed[k] < STARTED * smoothed[0]), None)
    return (low if low is not None and low < high else high / 100), high


def measure(cfg: Config, setup, ds, state, tracker, run_dir: Path) -> dict:
    """The range test as a run's body (ddl/runner/experiment.py builds the run and its tracking,
    and ends it FAILED on an error): the rates swept, rank 0's line, files and tracking. Returns
    {"low", "high", "steps"}."""
    from ddl.runner.summary import upload_log  # noqa: PLC0415 - summary is the run's end

    comm, r = setup.comm, cfg.lr_range
    if comm.rank == 0:
        log.info("learning-rate range test: α from %.3g to %.3g over %d steps (world size %d, %s); "
                 "run directory %s", r.start, r.end, r.steps, comm.size, cfg.optimizer.name, run_dir)
    curve = sweep_rates(setup, ds, state, r)
    low, high = suggest(curve)
    if comm.rank == 0:
        report(cfg, run_dir, curve, low, high, tracker)
        upload_log(tracker, run_dir)
    tracker.end("FINISHED")
    return {"low": low, "high": high, "steps": len(curve)}


def report(cfg: Config, run_dir: Path, curve, low: float, high: float, tracker) -> None:
    """lr_range.json, lr_range.png, the line with the search that takes the range, the tags."""
    from ddl.runner import plots  # noqa: PLC0415 - matplotlib at the end only

    smoothed = smooth([v for _, v in curve])
    write_text_atomic(run_dir / "lr_range.json", json.dumps(
        {"lr": [lr for lr, _ in curve], "loss": [v if math.isfinite(v) else None for _, v in curve],
         "smoothed": smoothed, "low": low, "high": high, "optimizer": cfg.optimizer.name}, indent=1) + "\n")
    plots.lr_range_png([lr for lr, _ in curve], smoothed, low, high, run_dir / "lr_range.png")
    log.info("learning-rate range test (%s, %d steps): the loss falls from α = %.3g to its minimum at "
             "α = %.3g. Search there: ddl-train -m hydra/sweeper=search optimizer.lr='tag(log, "
             "interval(%.3g, %.3g))'", cfg.optimizer.name, len(curve), low, high, low, high)
    for k, (lr, loss) in enumerate(curve):
        if math.isfinite(loss):
            tracker.log_epoch(k, {"lr_range/lr": lr, "lr_range/loss": loss, "lr_range/smoothed": smoothed[k]})
    tracker.set_tags({"ddl.lr_range.low": f"{low:.4g}", "ddl.lr_range.high": f"{high:.4g}"})
    for name in ("lr_range.json", "lr_range.png"):
        tracker.log_artifact(str(run_dir / name))
