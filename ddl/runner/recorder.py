"""Rank 0's MLflow edge of an invocation: one tracking worker (ddl/tracking/worker.py) records every
run of it (a single run, a sweep's parent and its points), the store is checked once, and each run
gets a tracker: its handle on the worker, or a null one when it is not tracked.

The numerical run (ddl/runner/experiment.py) calls these; MLflow itself stays in ddl.tracking.
"""
from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import asdict
from typing import Optional

from ddl.config import Config, TrackingConfig

log = logging.getLogger("ddl")


def job_id() -> str:
    """This job among all that ever ran a run (a resumed run is another job): the run's ddl.job
    tag, so the worker of a job that died never ends a run that a later job has taken over."""
    return f"{socket.gethostname()}:{os.getpid()}:{time.time_ns()}"


class Recorder:
    """The invocation's tracking worker (started at once, or when a run first needs it) and the
    stores it has found usable."""

    def __init__(self, link=None):
        self.link, self.usable = link, set()

    def _link(self):
        if self.link is None or self.link.dead:
            from ddl.tracking.link import Link  # noqa: PLC0415

            self.link = Link.start()
        return self.link

    def check(self, cfg: Config) -> Optional[str]:
        """Before any work: is the tracking store usable, and must training wait for the worker's
        answer? "ready": no (the store is known good: checked without MLflow, or by an earlier run
        of this invocation); "await": yes (a server, or a store only MLflow can vouch for). A bad
        store stops the run here, unless tracking.on_error=continue (then None: untracked)."""
        from ddl import tracking  # noqa: PLC0415 - no MLflow: sqlite3 and files only

        t = cfg.tracking
        if (t.uri, t.experiment) in self.usable:
            return "ready"
        try:
            return "ready" if tracking.precheck(t.uri, t.experiment) else "await"
        except tracking.TrackingError as err:
            return untracked(cfg, err)

    def open(self, cfg: Config, comm, backend, how: Optional[str], run_id: Optional[str],
             parent_run_id: Optional[str], tags: dict, run_dir, job: str):
        """The run's tracker, created or (`run_id` from a checkpoint) resumed; a null one with
        tracking off or a store refused with tracking.on_error=continue."""
        from ddl import tracking  # noqa: PLC0415

        if not cfg.tracking.enabled or how is None or self._link() is None:
            return tracking.NullTracker(run_id)
        tags = {"ddl.world_size": str(comm.size), "ddl.backend": backend.name, "ddl.job": job, **tags}
        if comm.nodes.count > 1:                    # which hosts: a lost one is named by them
            tags["ddl.hosts"] = comm.nodes.describe()
        tracker = self.link.open(cfg.tracking, tracking.flatten_config(asdict(cfg)), tags, run_id=run_id,
                                 nested_in=parent_run_id, run_dir=run_dir, job=job,
                                 prefix="[rank 0] " if comm.size > 1 else "")
        if how == "await" or run_id is not None:   # what only MLflow can refuse, refused before training
            try:
                tracker.run_id
            except tracking.TrackingError as err:
                untracked(cfg, err)
                return tracking.NullTracker(run_id)
        self.usable.add((cfg.tracking.uri, cfg.tracking.experiment))
        return tracker

    def parent(self, cfg: TrackingConfig, name: str, key: str, guard: bool):
        """A sweep's parent run (found by the sweep's key, or created)."""
        link = self._link()
        if link is None:
            from ddl.tracking import TrackingError  # noqa: PLC0415

            raise TrackingError("the MLflow tracking worker could not start")
        return link.parent(cfg, name, key, guard=guard)

    def close(self) -> None:
        """The invocation's end: everything the worker was sent is delivered (or reported)."""
        if self.link is not None:
            self.link.close()
            self.link = None


def untracked(cfg: Config, err) -> None:
    """A tracking store that cannot be used: the error, or with tracking.on_error=continue a
    warning and a run without tracking."""
    if cfg.tracking.on_error != "continue":
        raise err
    log.warning("%s; training goes on untracked (tracking.on_error=continue): its history "
                "is in final.npz and summary.json", err)
    cfg.tracking.enabled = False
    return None
