"""Rank 0's MLflow edge of a run: how the run reaches its store (a tracking worker beside training,
or MLflow in this process), opening or resuming the MLflow run, and its guard.

The numerical run (ddl/runner/experiment.py) calls these; MLflow itself stays in ddl.tracking.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import asdict
from pathlib import Path
from typing import Optional

from ddl.config import Config

log = logging.getLogger("ddl")


def job_id() -> str:
    """This job among all that ever ran a run (a resumed run is another job): the run's ddl.job
    tag, so a guard never ends a run that a later job has taken over."""
    return f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"


def start_guard(cfg: Config, tracker, run_dir: Path, job: str):
    """Rank 0's guard process for its MLflow run (ddl/tracking/guard.py); None untracked."""
    from ddl.tracking.link import RemoteTracker  # noqa: PLC0415

    if not tracker or isinstance(tracker, RemoteTracker):   # a tracking worker guards its run
        return None
    from ddl.tracking.guard import Guard  # noqa: PLC0415 - rank 0, tracking on

    return Guard.start(cfg.tracking.uri, tracker.run_id, run_dir, job)


def check_tracking(cfg: Config) -> Optional[str]:
    """Rank 0, before any work: is the tracking store usable, and how will the run reach it?
    "ready": a tracking worker (ddl/tracking/worker.py) opens the run beside training, the store
    being checked without MLflow; "await": a worker too, but its answer comes before training;
    "inprocess": MLflow in this process (it is loaded already: a sweep's parent). A bad store
    stops the run here, unless tracking.on_error=continue (then None: untracked)."""
    from ddl import tracking  # noqa: PLC0415 - rank 0, only when tracking
    from ddl.tracking import link as remote  # noqa: PLC0415

    t = cfg.tracking
    try:
        if remote.eligible():
            verified = tracking.precheck(t.uri, t.experiment)
            remote.prewarm()                # MLflow loads in the worker while we build the run
            return "ready" if verified else "await"
        tracking.ensure_store(t.uri, t.experiment)
        return "inprocess"
    except tracking.TrackingError as err:
        return untracked(cfg, err)


def untracked(cfg: Config, err) -> None:
    """A tracking store that cannot be used: the error, or with tracking.on_error=continue a
    warning and a run without tracking."""
    if cfg.tracking.on_error != "continue":
        raise err
    log.warning("%s; training goes on untracked (tracking.on_error=continue): its history "
                "is in final.npz and summary.json", err)
    cfg.tracking.enabled = False
    return None


def open_tracking(cfg: Config, comm, backend, run_id, parent_run_id, extra_tags=None, *,
                  how: Optional[str] = "inprocess", run_dir=None):
    """Rank 0's MLflow run, created or (`run_id` from a checkpoint) resumed; None on the other
    ranks and with tracking off. `how`: see check_tracking."""
    if comm.rank != 0 or not cfg.tracking.enabled:
        return None
    from ddl import tracking  # noqa: PLC0415 - rank 0, only when tracking
    from ddl.tracking.link import RemoteTracker  # noqa: PLC0415

    tags = {"ddl.world_size": str(comm.size), "ddl.backend": backend.name, **(extra_tags or {})}
    params = tracking.flatten_config(asdict(cfg))
    worker = None
    if how in ("ready", "await"):
        worker = RemoteTracker.open(cfg.tracking, params, tags, run_id=run_id, nested_in=parent_run_id,
                                    run_dir=run_dir, prefix="[rank 0] " if comm.size > 1 else "")
    if worker is None:
        return tracking.open_tracker(cfg.tracking, params, tags, run_id=run_id, nested_in=parent_run_id)
    if how == "await" or run_id is not None:   # what only MLflow can refuse, refused before training
        try:
            worker.run_id
        except tracking.TrackingError as err:
            return untracked(cfg, err)
    return worker
