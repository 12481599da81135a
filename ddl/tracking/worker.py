"""The tracking worker: the MLflow client of one `ddl-train` invocation, in a process of its own.

Importing MLflow and opening its store take a second or two; a short run would wait that long
before its first step. Rank 0 therefore starts this worker as soon as the invocation begins
(ddl/__main__.py: MLflow loads here while Hydra composes the config and the data loads) and hands
it every run of the invocation as it comes (a single run, a sweep's parent and each of its
points) as JSON lines on a pipe. It answers, on its stdout, only an opening (the run's id, or the
error); every other order is written and never waited for, until "close", which is answered by
this process exiting once everything is delivered. Each run is an in-process `Tracker` here (its
outbox, backoff and unsent.jsonl included).

It runs in its own session, so mpiexec, a terminal's Ctrl-C and the job's own exit leave it alone.
When the pipe closes without "close" (rank 0 killed, the job aborted), it delivers what it was
sent and ends each run it guards that is still RUNNING and still this job's: FAILED, with the
error a failing rank left in the run directory (`failed.rank<r>.json`), else the reason.

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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

CALLS = ("log_epoch", "flush", "set_tags", "log_artifact", "end")
# Packages MLflow imports when they are installed, for features this process never uses (datasets,
# evaluation): the worker sees what ddl's base install has (mlflow-skinny needs neither), and
# MLflow loads 0.27 s faster where they are there (measured: import mlflow 0.93 -> 0.67 s).
UNUSED = ("pandas", "pyarrow")
log = logging.getLogger("ddl")


class Hidden(importlib.abc.MetaPathFinder):
    """Imports of these packages fail as if they were not installed (in this process only)."""

    def __init__(self, names):
        self.names = frozenset(names)

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r} (not loaded by the tracking worker)",
                                      name=name)
        return None


@dataclass
class Run:
    """A run this worker records: its Tracker, and what its orphan's end needs."""

    tracker: object
    order: dict
    ended: bool = False


def answer(message: dict) -> None:
    """An answer to rank 0; a rank 0 that is gone (killed while the run opened) is not an error:
    its runs are then ended as orphans when the pipe closes."""
    try:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()
    except OSError:
        pass


class Logs:
    """The worker's warnings (an outage, what was not delivered) on the console and in the
    current run's train.log."""

    def __init__(self):
        from ddl.config import RedactingFilter  # noqa: PLC0415

        self.filter, self.file = RedactingFilter(), None
        self.console = self._handler(logging.StreamHandler(sys.stderr), "")
        log.addHandler(self.console)
        log.setLevel(logging.WARNING)
        log.propagate = False

    def _handler(self, h: logging.Handler, prefix: str) -> logging.Handler:
        h.setFormatter(logging.Formatter(prefix + "%(asctime)s %(levelname)s %(name)s: %(message)s",
                                         datefmt="%H:%M:%S"))
        h.addFilter(self.filter)
        return h

    def to(self, run_dir: Optional[str], prefix: str) -> None:
        self._handler(self.console, prefix)
        if self.file is not None:
            log.removeHandler(self.file)
            self.file.close()
            self.file = None
        if run_dir and Path(run_dir).is_dir():
            self.file = self._handler(logging.FileHandler(Path(run_dir) / "train.log"), prefix)
            log.addHandler(self.file)


def open_run(order: dict):
    """The order's Tracker: a run created or resumed ("open"), or a sweep's parent, found by its
    key or created ("parent")."""
    from ddl.config import TrackingConfig  # noqa: PLC0415
    from ddl.tracking import liveness, runs  # noqa: PLC0415
    from ddl.tracking.tracker import Tracker  # noqa: PLC0415

    cfg = TrackingConfig(**order["tracking"])
    if order["op"] == "parent":
        # found (a sweep resumed in its directory: RUNNING again) or created
        tracker = Tracker.reopen(cfg, runs.parent_for_key(cfg, order["name"], order["sweep_key"]))
        if order.get("guard"):
            liveness.beat(tracker, None)
    else:
        tags = {**order["tags"], liveness.TAG: liveness.stamp()}     # its first beat
        tracker = Tracker.start(cfg, order["params"], tags, run_id=order.get("run_id"),
                                nested_in=order.get("nested_in"))
        if order.get("run_dir"):
            tracker.keep_unsent_in(order["run_dir"])
    liveness.end_stale_once(cfg, keep=tracker.run_id)
    return tracker


def reason(order: dict) -> str:
    hosts = (order.get("tags") or {}).get("ddl.hosts")
    where = f"out_dir={order['run_dir']}" if order.get("run_dir") else "the same out_dir"
    if hosts:       # several hosts: MPICH tears the job down without saying which one went
        return (f"the job ended without ending this run: a host of the job was lost (a node failure, "
                f"its link down) or one of its ranks was killed (SIGKILL, the out-of-memory killer) "
                f"before it could report; the job ran on {hosts} (rank 0 was pid {order['rank0_pid']}); "
                f"the launcher's lines above it name the host where it can (srun: 'Node failure on "
                f"…'). Resume it from its newest checkpoint with checkpoint.resume=auto and {where}, "
                f"on the hosts that are left if need be: fewer ranks train the same model.")
    return (f"the job ended without ending this run: a rank was killed (SIGKILL, the out-of-memory "
            f"killer, a cancelled job) or crashed before it could report (rank 0 was pid "
            f"{order['rank0_pid']}). Resume it from its newest checkpoint with "
            f"checkpoint.resume=auto and {where}.")


def orphaned(run: Run) -> None:
    """The pipe closed without "close": deliver what came, then end the run, unless it ended or
    a later job (a resume) took it over."""
    from ddl.tracking import notes  # noqa: PLC0415

    tracker, order = run.tracker, run.order
    tracker.flush()
    if run.ended:                                   # its end came: delivered now, or kept
        if not tracker.outbox.deliver(final=True):
            tracker.outbox.report_undelivered()
        return
    if not order.get("guard", True):
        return
    note = notes.failure_note(order.get("run_dir"))
    note = note if note and note.get("job") == order.get("job") else None
    try:
        status, job = tracker.current()
        if status != "RUNNING" or (order.get("job") and job != order.get("job")):
            return
    except Exception:  # noqa: BLE001 - an unreachable store: the end goes to the spool, for replay
        pass
    if note:
        tracker.end("FAILED", note["error"], "failed",
                    f"The traceback is in {note.get('log', 'train.log')} in the run directory.")
        log.warning("MLflow run %s was left RUNNING by the job; marked FAILED", tracker.run_id)
        return
    why = reason(order)
    tracker.end("FAILED", why, "killed", "")
    # the console may be gone with the job (MPICH's proxies): train.log keeps the line too
    log.warning("MLflow run %s was left RUNNING by the job; marked FAILED: %s", tracker.run_id, why)


def end_run(order: dict) -> None:
    """End a run this process did not open (its worker died): FAILED with the reason."""
    from ddl.config import TrackingConfig  # noqa: PLC0415
    from ddl.tracking.tracker import Tracker  # noqa: PLC0415

    tracker = Tracker.attach(TrackingConfig(**order["tracking"]), order["run_id"])
    if order.get("run_dir"):
        tracker.keep_unsent_in(order["run_dir"])
    tracker.end(order["status"], order.get("error"), order.get("stopped"), order.get("where", ""))


def lines() -> queue.Queue:
    """stdin's lines (then None), read by a thread from the start: rank 0 never blocks on a full
    pipe while this process imports MLflow or waits for the store."""
    inbox: queue.Queue = queue.Queue()

    def read():
        for line in sys.stdin:
            inbox.put(line)
        inbox.put(None)
    threading.Thread(target=read, name="ddl-orders", daemon=True).start()
    return inbox


def serve(orders: queue.Queue, logs: Logs) -> bool:
    """Carry out the orders, beating for the open runs meanwhile (ddl/tracking/liveness.py); True
    when they ended with "close", False at a bare end of the pipe (then every run it guards is
    ended as an orphan)."""
    from ddl.tracking import liveness  # noqa: PLC0415

    runs: dict[str, Run] = {}
    next_beat = time.monotonic() + liveness.HEARTBEAT_S
    while True:
        try:
            line = orders.get(timeout=max(next_beat - time.monotonic(), 0.0))
        except queue.Empty:
            beat(runs, liveness)
            next_beat = time.monotonic() + liveness.HEARTBEAT_S
            continue
        if line is None:
            break
        message = json.loads(line)
        if message["op"] == "close":
            return True
        try:
            handle(message, runs, logs)
        except Exception as err:  # noqa: BLE001 - one order's failure does not end the others
            log.warning("MLflow %s failed: %s: %s", message.get("name", message["op"]), type(err).__name__, err)
    for run in runs.values():
        try:
            orphaned(run)
        except Exception as err:  # noqa: BLE001 - the next run is still worth ending
            log.warning("could not end MLflow run %s: %s: %s", run.tracker.run_id, type(err).__name__, err)
    return False


def beat(runs: dict, liveness) -> None:
    """A beat for each run this worker guards and that has not ended."""
    for run in runs.values():
        if run.order.get("guard", True) and not run.ended:
            try:
                liveness.beat(run.tracker, run.order.get("run_dir"))
            except Exception as err:  # noqa: BLE001 - the next beat may get through
                log.warning("MLflow heartbeat of run %s failed: %s", run.tracker.run_id, err)


def handle(message: dict, runs: dict, logs: Logs) -> None:
    """One order: open a run (answered), call its tracker, or end a run opened elsewhere."""
    op, key = message["op"], message.get("key")
    if op in ("open", "parent"):
        logs.to(message.get("run_dir"), message.get("prefix", ""))
        try:
            run = runs[key] = Run(open_run(message), message)
        except Exception as err:  # noqa: BLE001 - said to rank 0, which decides
            tracking_error = type(err).__name__ == "TrackingError"     # its own words say what failed
            answer({"key": key, "error": str(err) if tracking_error else f"{type(err).__name__}: {err}",
                    "tracking_error": tracking_error})
            return
        answer({"key": key, "run_id": run.tracker.run_id, "experiment_id": run.tracker.experiment_id,
                "parent": run.tracker.parent})
        _warm_schema_cache(message["tracking"]["uri"])
    elif op == "call" and key in runs and message["name"] in CALLS:
        run = runs[key]
        run.ended = run.ended or message["name"] == "end"
        getattr(run.tracker, message["name"])(*message["args"])
    elif op == "end_run":
        end_run(message)


def main() -> int:
    # The terminal's Ctrl-C is for the job; so is the SIGTERM that ends a whole job (SLURM's scancel,
    # a container's stop): the ranks stop at a step and end the run, and this process delivers it
    # and exits when rank 0 closes the pipe (or, rank 0 gone, ends the run itself)
    for stop in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(stop, signal.SIG_IGN)
    orders = lines()
    sys.meta_path.insert(0, Hidden(UNUSED))
    from ddl.tracking import store  # noqa: F401, PLC0415 - MLflow's import, while rank 0 works
    import mlflow  # noqa: F401, PLC0415

    serve(orders, Logs())
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
