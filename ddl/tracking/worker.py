"""The tracking worker: a run's MLflow client in a process of its own, beside training.

Importing MLflow and opening its store take a second or two; a short run would wait that long
before its first step. Rank 0 therefore starts this worker as soon as it knows the run is tracked
(it imports MLflow at once, while rank 0 loads the data and builds the network), sends it the
run's orders as JSON lines on a pipe, and never waits for it until it needs the run's id (a
checkpoint, the end). The worker runs the in-process `Tracker` (its outbox, backoff and
unsent.jsonl included) and answers once, on its stdout, with the run's id or the error.

It runs in its own session, like the guard (ddl/tracking/guard.py), whose duty it takes over: when
the pipe closes without "close" (rank 0 killed, the job aborted), it delivers what it was sent and
marks the run FAILED with the reason, unless the run already ended.

    python -m ddl.tracking.worker        (started by ddl.tracking.link; orders on stdin)
"""
from __future__ import annotations

import importlib.abc
import json
import logging
import os
import queue
import signal
import sys
import threading
from pathlib import Path
from typing import Iterator, Optional

CALLS = ("log_epoch", "flush", "set_tags", "log_artifact", "log_text", "end")
# Packages MLflow imports when they are installed, for features this process never uses (datasets,
# evaluation): the worker sees what ddl's base install has (mlflow-skinny needs neither), and
# MLflow loads 0.27 s faster where they are there (measured: import mlflow 0.93 -> 0.67 s).
UNUSED = ("pandas", "pyarrow")


class Hidden(importlib.abc.MetaPathFinder):
    """Imports of these packages fail as if they were not installed (in this process only)."""

    def __init__(self, names):
        self.names = frozenset(names)

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r} (not loaded by the tracking worker)",
                                      name=name)
        return None


def answer(message: dict) -> None:
    """The one answer to rank 0; a rank 0 that is gone (killed while the run opened) is not an
    error: the run is then ended as an orphan when the pipe closes."""
    try:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()
    except OSError:
        pass


def log_to(run_dir: Optional[str], prefix: str) -> None:
    """The worker's warnings (an outage, what was not delivered) on the console and in train.log."""
    from ddl.config import RedactingFilter  # noqa: PLC0415

    logger = logging.getLogger("ddl")
    fmt = logging.Formatter(prefix + "%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    handlers = [logging.StreamHandler(sys.stderr)]
    if run_dir:
        handlers.append(logging.FileHandler(Path(run_dir) / "train.log"))
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(RedactingFilter())
        logger.addHandler(h)
    logger.setLevel(logging.WARNING)
    logger.propagate = False


def open_run(order: dict):
    """The run's Tracker (created or resumed) from the "open" order."""
    from ddl.config import TrackingConfig  # noqa: PLC0415
    from ddl.tracking.tracker import Tracker  # noqa: PLC0415

    cfg = TrackingConfig(**order["tracking"])
    tracker = Tracker.start(cfg, order["params"], order["tags"], run_id=order.get("run_id"),
                            nested_in=order.get("nested_in"))
    tracker.keep_unsent_in(order["run_dir"])
    return tracker


def orphaned(tracker, order: dict) -> None:
    """The pipe closed without "close": deliver what came, then end the run as the guard would."""
    from ddl.tracking import guard  # noqa: PLC0415

    tracker.flush()
    if any(e["op"] == "end" for e in tracker.outbox.entries):   # its end came, undelivered
        if not tracker.outbox.deliver(final=True):
            tracker.outbox.report_undelivered()                 # kept in the spool, for replay
        return
    guard_order = {"uri": order["tracking"]["uri"], "run_id": tracker.run_id, "run_dir": order["run_dir"],
                   "rank0_pid": order["rank0_pid"], "job": order["tags"].get("ddl.job")}
    try:
        guard.end_orphan(guard_order)
    except Exception as err:  # noqa: BLE001 - unreachable store: the end goes to the spool
        guard.spool_end(guard_order, err)


def lines() -> Iterator[str]:
    """stdin's lines, read by a thread from the start: rank 0 never blocks on a full pipe while
    this process imports MLflow or waits for the store."""
    inbox: queue.Queue = queue.Queue()

    def read():
        for line in sys.stdin:
            inbox.put(line)
        inbox.put(None)
    threading.Thread(target=read, name="ddl-orders", daemon=True).start()
    return iter(inbox.get, None)                 # started now, not at the first next()


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # the terminal's Ctrl-C is for the job
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    orders = lines()
    sys.meta_path.insert(0, Hidden(UNUSED))
    from ddl.tracking import store  # noqa: F401, PLC0415 - MLflow's import, while rank 0 works
    import mlflow  # noqa: F401, PLC0415

    tracker, order = None, None
    for line in orders:
        message = json.loads(line)
        if message["op"] == "open":
            order = message
            log_to(order["run_dir"], order.get("prefix", ""))
            try:
                tracker = open_run(order)
            except Exception as err:  # noqa: BLE001 - said to rank 0, which decides
                answer({"error": f"{type(err).__name__}: {err}",
                        "tracking_error": type(err).__name__ == "TrackingError"})
                return 0
            answer({"run_id": tracker.run_id, "experiment_id": tracker.experiment_id,
                    "parent": tracker.parent})
            _warm_schema_cache(order["tracking"]["uri"])
        elif message["op"] == "call" and tracker is not None and message["name"] in CALLS:
            try:
                getattr(tracker, message["name"])(*message["args"])
            except Exception as err:  # noqa: BLE001 - one call's failure does not end the run
                logging.getLogger("ddl").warning("MLflow %s failed: %s: %s", message["name"],
                                                 type(err).__name__, err)
        elif message["op"] == "close":
            return 0
    if tracker is not None and order is not None:           # EOF without "close"
        orphaned(tracker, order)
    return 0


def _warm_schema_cache(uri: str) -> None:
    """The installed MLflow's schema head, cached on disk, lets the next run check its SQLite store
    without importing MLflow (store.precheck)."""
    if uri.startswith("sqlite:"):
        from ddl.tracking import schema  # noqa: PLC0415

        try:
            schema.known_revisions()
        except Exception:  # noqa: BLE001 - a cache only
            pass


def leave(code: int) -> None:
    """Exit at once once everything is delivered: MLflow's exit handlers (its telemetry's flush)
    would add a few tenths of a second to the end of every run, which waits for this process."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    leave(main())
