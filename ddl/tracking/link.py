"""Rank 0's end of the tracking worker (ddl/tracking/worker.py): the Tracker interface, off the
training's critical path.

    prewarm()                        # rank 0, tracked run, as early as possible: MLflow loads
    tracker = RemoteTracker.open(cfg, params, tags, run_id=..., nested_in=..., run_dir=...)
    tracker.log_epoch(3, {...})      # a line on a pipe; nothing waits
    tracker.run_id                   # waits for the worker's answer (the first time only)
    tracker.end("FINISHED")          # waits until the worker has delivered everything

Calls are written to the pipe and never answered, except the opening. If the worker dies, ddl
says so once and the run goes on untracked (its history is in final.npz and summary.json).
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import asdict
from typing import Any, Mapping, Optional

from ddl.tracking.store import TrackingError

log = logging.getLogger("ddl")
END_TIMEOUT_S = 300.0           # the final delivery (with MLflow's own retries) must end by then
_PREWARMED: list = []           # a worker started by prewarm(), not yet given a run


def eligible() -> bool:
    """Whether a run should track through a worker: not when this process has MLflow loaded
    already (a sweep's parent opened in-process: its points reuse the client at no cost), nor when
    DDL_TRACKING_INPROCESS=1 asks for the old way."""
    return "mlflow" not in sys.modules and os.environ.get("DDL_TRACKING_INPROCESS") != "1"


def _spawn() -> Optional[subprocess.Popen]:
    try:
        return subprocess.Popen([sys.executable, "-m", "ddl.tracking.worker"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, start_new_session=True, close_fds=True,
                                text=True, bufsize=1)
    except OSError as err:
        log.warning("cannot start the tracking worker (%s); tracking in this process", err)
        return None


OFF = ("tracking=off", "tracking.enabled=false", "tracking.enabled=False", "tracking.enabled=0")
NO_RUN = ("-m", "--multirun", "--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i",
          "--shell-completion", "-sc")


def worth_prewarming(argv) -> bool:
    """A single run from the command line that tracks (as far as its overrides say): the worker
    may start before Hydra composes the config. A sweep tracks in its own process; `--help` and
    `--cfg` run nothing. If the config turns tracking off after all, the unused worker exits
    with this process."""
    args = [a.split("=", 1)[0] if a.startswith("--") else a for a in argv]
    return eligible() and not any(a in OFF or a in NO_RUN for a in args)


def prewarm() -> None:
    """Start the worker now: it imports MLflow while this process does its own start-up."""
    if not _PREWARMED:
        proc = _spawn()
        if proc is not None:
            _PREWARMED.append(proc)


def _send(proc, message: dict) -> bool:
    try:
        proc.stdin.write(json.dumps(message) + "\n")
        return True
    except (OSError, ValueError):      # the worker is gone (or its pipe closed)
        return False


class RemoteTracker:
    """The Tracker's interface; the MLflow work happens in the worker."""

    def __init__(self, proc: subprocess.Popen, cfg):
        self._proc, self._cfg = proc, cfg
        self._answer: Optional[dict] = None
        self._dead = False

    @classmethod
    def open(cls, cfg, params: Mapping[str, Any], tags: Mapping[str, str] = {}, *,
             run_id: Optional[str] = None, nested_in: Optional[str] = None, run_dir=None,
             prefix: str = "") -> Optional["RemoteTracker"]:
        """Send the run's opening to a worker (the prewarmed one, if any); None if none starts."""
        proc = _PREWARMED.pop() if _PREWARMED else _spawn()
        if proc is None:
            return None
        order = {"op": "open", "tracking": asdict(cfg), "params": dict(params), "tags": dict(tags),
                 "run_id": run_id, "nested_in": nested_in, "run_dir": str(run_dir),
                 "rank0_pid": os.getpid(), "prefix": prefix}
        tracker = cls(proc, cfg)
        if not _send(proc, order):
            tracker._lost()
        return tracker

    # ---- the run's identity: the one answer -----------------------------------------------------

    def _opened(self) -> dict:
        """The worker's answer to the opening (waits for it the first time)."""
        if self._answer is None:
            line = self._proc.stdout.readline()     # "" once the worker is gone and said nothing
            self._answer = json.loads(line) if line.strip() else {"error": "the tracking worker exited"}
            if "error" in self._answer:
                self._dead = True
                if self._answer.get("tracking_error"):
                    raise TrackingError(self._answer["error"])
                log.warning("MLflow tracking failed: %s; the run goes on untracked (its history is "
                            "in final.npz and summary.json)", self._answer["error"])
        return self._answer

    @property
    def run_id(self) -> Optional[str]:
        return self._opened().get("run_id")

    @property
    def experiment_id(self) -> Optional[str]:
        return self._opened().get("experiment_id")

    @property
    def parent(self) -> Optional[str]:
        return self._opened().get("parent")

    # ---- calls: written, not answered ----------------------------------------------------------

    def _call(self, name: str, *args) -> None:
        if self._dead:
            return
        if not _send(self._proc, {"op": "call", "name": name, "args": list(args)}):
            self._lost()

    def _lost(self) -> None:
        if not self._dead:
            self._dead = True
            log.warning("the MLflow tracking worker is gone; the run goes on untracked (its history "
                        "is in final.npz and summary.json)")

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        self._call("log_epoch", int(epoch), {k: float(v) for k, v in metrics.items()})

    def flush(self) -> None:
        self._call("flush")

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._call("set_tags", {k: str(v) for k, v in tags.items()})

    def log_artifact(self, path, artifact_path: Optional[str] = None) -> None:
        self._call("log_artifact", os.path.abspath(path), artifact_path)

    def log_text(self, text: str, name: str) -> None:
        self._call("log_text", text, name)

    def keep_unsent_in(self, run_dir) -> None:
        """Given with the opening already."""

    def end(self, status: str = "FINISHED") -> None:
        """The run's end, then wait until the worker has delivered everything (or reported what
        it could not) and exited."""
        self._call("end", status)
        if self._dead:
            return self._end_here(status)
        _send(self._proc, {"op": "close"})
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=END_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            log.error("the MLflow tracking worker did not finish within %.0f s; what it had not "
                      "delivered is in the run directory's unsent.jsonl (python -m "
                      "ddl.tracking.replay)", END_TIMEOUT_S)

    def _end_here(self, status: str) -> None:
        """The worker died after opening the run: end it from here (MLflow loads now), FAILED,
        saying what is missing, so that it is not left RUNNING."""
        run_id = (self._answer or {}).get("run_id")
        if not run_id:
            return
        why = (f"the MLflow tracking worker died during the run (the job ended {status}); metrics "
               "after that are not in the store: final.npz and summary.json in the run directory "
               "hold the whole history")
        try:
            from ddl.tracking.failure import fail_run  # noqa: PLC0415

            fail_run(self._cfg, run_id, why, "train.log")
        except Exception as err:  # noqa: BLE001
            log.warning("could not end MLflow run %s: %s", run_id, err)
