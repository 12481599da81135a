"""Rank 0's link to its invocation's tracking worker (ddl/tracking/worker.py), and each run's
handle on it: the Tracker interface, off the training's critical path.

    link = Link.start()                         # once per invocation (ddl/__main__.py: at once)
    tracker = link.open(cfg, params, tags, run_id=..., nested_in=..., run_dir=..., job=...)
    tracker.log_epoch(3, {...})                 # a line on a pipe; nothing waits
    tracker.run_id                              # waits for the worker's answer (the first time only)
    tracker.end("FINISHED")                     # queued; the worker delivers it
    link.close()                                # the invocation's end: waits until all is delivered

Orders are written to the pipe and never answered, except an opening. If the worker dies, ddl
says so once and the run goes on untracked (its history is in final.npz and summary.json); at its
end a fresh worker marks it FAILED, saying what is missing.
"""
from __future__ import annotations

import itertools
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
OFF = ("tracking=off", "tracking.enabled=false", "tracking.enabled=False", "tracking.enabled=0")
# Hydra's flags that run no job (and make no run directory: ddl/runner/run_dir.py)
NO_RUN = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc")


def worth_prewarming(argv) -> bool:
    """A command line that tracks (as far as its overrides say): the worker may start before Hydra
    composes the config. `--help` and `--cfg` run nothing. If the config turns tracking off after
    all, the unused worker exits with the invocation."""
    args = [a.split("=", 1)[0] if a.startswith("--") else a for a in argv]
    return not any(a in OFF or a in NO_RUN for a in args)


class Link:
    """The worker process and its pipes; answers are read in order and kept by key."""

    def __init__(self, proc: subprocess.Popen):
        self.proc, self.dead, self.answers = proc, False, {}
        self._keys = itertools.count()

    @classmethod
    def start(cls) -> Optional["Link"]:
        """Start the worker now (it imports MLflow while this process does its own start-up);
        None if it cannot start (the runs then go untracked, with a warning)."""
        try:
            proc = subprocess.Popen([sys.executable, "-m", "ddl.tracking.worker"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, start_new_session=True, close_fds=True,
                                    text=True, bufsize=1)
        except OSError as err:
            log.warning("cannot start the MLflow tracking worker (%s); runs go untracked", err)
            return None
        return cls(proc)

    def open(self, cfg, params: Mapping[str, Any], tags: Mapping[str, str] = {}, *,
             run_id: Optional[str] = None, nested_in: Optional[str] = None, run_dir=None,
             job: Optional[str] = None, prefix: str = "") -> "RemoteTracker":
        """A run created (a child of `nested_in`) or resumed (`run_id`); the worker guards it: a
        job that dies leaves it FAILED, not RUNNING."""
        return self._order(cfg, {"op": "open", "params": dict(params), "tags": dict(tags), "run_id": run_id,
                                 "nested_in": nested_in, "run_dir": str(run_dir) if run_dir else None,
                                 "job": job, "guard": True, "prefix": prefix})

    def parent(self, cfg, name: str, sweep_key: str, *, guard: bool, prefix: str = "") -> "RemoteTracker":
        """A sweep's parent run, found by its key or created (jobs of one sweep that start in
        separate processes share it); `guard`: ended FAILED if this invocation dies (only when
        every point runs in it)."""
        return self._order(cfg, {"op": "parent", "name": name, "sweep_key": sweep_key, "guard": guard,
                                 "prefix": prefix, "run_dir": None})

    def end_run(self, cfg, run_id: str, status: str, error: str, run_dir=None) -> None:
        """End a run this worker did not open (one whose own worker died)."""
        self.send({"op": "end_run", "tracking": asdict(cfg), "run_id": run_id, "status": status,
                   "error": error, "stopped": status.lower(), "run_dir": str(run_dir) if run_dir else None,
                   "where": "final.npz and summary.json in the run directory hold the whole history."})

    def _order(self, cfg, order: dict) -> "RemoteTracker":
        key = f"r{next(self._keys)}"
        order.update(key=key, tracking=asdict(cfg), rank0_pid=os.getpid())
        tracker = RemoteTracker(self, key, cfg, order.get("run_dir"))
        if not self.send(order):
            tracker.lost()
        return tracker

    def send(self, message: dict) -> bool:
        if self.dead:
            return False
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            return True
        except (OSError, ValueError):      # the worker is gone (or its pipe closed)
            self.dead = True
            return False

    def answer(self, key: str) -> dict:
        """The worker's answer to the opening `key` (waits for it the first time)."""
        while key not in self.answers:
            line = self.proc.stdout.readline()    # what a worker said before it died is kept
            if not line.strip():          # the worker is gone and said nothing more
                self.dead = True
                return {"error": "the tracking worker exited"}
            message = json.loads(line)
            self.answers[message.pop("key")] = message
        return self.answers[key]

    def close(self, timeout: float = END_TIMEOUT_S) -> None:
        """The invocation's end: wait until the worker has delivered everything (or reported what
        it could not) and exited."""
        self.send({"op": "close"})
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            log.error("the MLflow tracking worker did not finish within %.0f s; what it had not "
                      "delivered is in the run directory's unsent.jsonl (python -m "
                      "ddl.tracking.replay)", timeout)


class RemoteTracker:
    """A run's handle: the Tracker's interface; the MLflow work happens in the worker."""

    def __init__(self, link: Link, key: str, cfg, run_dir=None):
        self.link, self.key, self.cfg, self.run_dir = link, key, cfg, run_dir
        self.gone = False

    # ---- the run's identity: the one answer -----------------------------------------------------

    def _opened(self) -> dict:
        answer = self.link.answer(self.key)
        if "error" in answer and not self.gone:
            self.gone = True
            if answer.get("tracking_error"):
                raise TrackingError(answer["error"])
            log.warning("MLflow tracking failed: %s; the run goes on untracked (its history is "
                        "in final.npz and summary.json)", answer["error"])
        return answer

    @property
    def run_id(self) -> Optional[str]:
        return self._opened().get("run_id")

    @property
    def experiment_id(self) -> Optional[str]:
        return self._opened().get("experiment_id")

    @property
    def parent(self) -> Optional[str]:
        return self._opened().get("parent")

    # ---- orders: written, not answered ---------------------------------------------------------

    def _call(self, name: str, *args) -> None:
        if not self.gone and not self.link.send({"op": "call", "key": self.key, "name": name,
                                                 "args": list(args)}):
            self.lost()

    def lost(self) -> None:
        if not self.gone:
            self.gone = True
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

    def keep_unsent_in(self, run_dir) -> None:
        """Given with the opening already."""

    def end(self, status: str = "FINISHED", error: Optional[str] = None, stopped: Optional[str] = None,
            where: str = "The traceback is in the train.log artifact.") -> None:
        """The run's end (Tracker.end), delivered by the worker. If the worker died after the run
        opened, a fresh one ends it FAILED, saying what is missing, so that it is not left RUNNING."""
        self._call("end", status, error, stopped, where)
        if not self.link.dead:
            return
        run_id = self.link.answers.get(self.key, {}).get("run_id")
        if not run_id:
            return
        fresh = Link.start()
        if fresh is not None:
            fresh.end_run(self.cfg, run_id, "FAILED", f"the MLflow tracking worker died during the run "
                          f"(the job ended {status}); metrics after that are not in the store", self.run_dir)
            fresh.close()
