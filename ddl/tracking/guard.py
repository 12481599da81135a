"""A run's guard: a small process that ends an MLflow run its job could not end.

A rank killed with SIGKILL (or the OOM killer, or a crash in native code) takes rank 0 with it
before any handler runs, and the run would stay RUNNING forever. Rank 0 starts the guard right
after the run opens, in its own session (mpiexec, a terminal's Ctrl-C and the job's exit leave it
alone), and keeps a pipe to it. A job that ends the run says so on the pipe before closing it.
When the pipe closes without that word, the guard marks the run FAILED with the reason, unless
something else already ended it (a failing rank marks it FAILED itself). If the store does not
answer, the end is added to the run's unsent.jsonl for `python -m ddl.tracking.replay`.

    python -m ddl.tracking.guard        (started by `Guard.start`; reads its orders on stdin)

Until the pipe closes it only waits on stdin: it imports MLflow only if it has to end a run.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

CLOSED = "closed"


class Guard:
    """Rank 0's end of the pipe."""

    def __init__(self, proc: subprocess.Popen):
        self._proc = proc

    @classmethod
    def start(cls, uri: str, run_id: str, run_dir, job: Optional[str] = None) -> Optional["Guard"]:
        """A guard for `run_id`, or None when one cannot be started (the run goes on unguarded).
        job: the run's ddl.job tag while this job has it (a later job resuming it changes it)."""
        try:
            proc = subprocess.Popen([sys.executable, "-m", "ddl.tracking.guard"], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True, close_fds=True)
            order = {"uri": uri, "run_id": run_id, "run_dir": str(run_dir), "rank0_pid": os.getpid(),
                     "job": job}
            proc.stdin.write((json.dumps(order) + "\n").encode())     # over the pipe: not in ps
            proc.stdin.flush()
        except OSError:
            return None
        return cls(proc)

    def close(self) -> None:
        """The job ended the run (whatever its status): the guard leaves it alone and exits."""
        try:
            self._proc.stdin.write(f"{CLOSED}\n".encode())
            self._proc.stdin.close()
        except OSError:       # the guard is gone: nothing to tell it
            pass


def reason(rank0_pid: int) -> str:
    return (f"the job ended without ending this run: a rank was killed (SIGKILL, the out-of-memory "
            f"killer, a cancelled job) or crashed before it could report (rank 0 was pid {rank0_pid}). "
            "Resume it from its newest checkpoint with checkpoint.resume=auto and the same out_dir.")


def end_orphan(order: dict) -> None:
    """Mark the run FAILED with the reason if it is still RUNNING; else leave it as it is."""
    from mlflow.entities import RunTag  # noqa: PLC0415

    from ddl.tracking.store import _client  # noqa: PLC0415

    client, run_id, why = _client(order["uri"]), order["run_id"], reason(order["rank0_pid"])
    run = client.get_run(run_id)
    if run.info.status != "RUNNING" or run.data.tags.get("ddl.job") != order.get("job"):
        return                              # ended, or taken over by a job that resumed it
    client.log_batch(run_id, tags=[RunTag("ddl.error", why), RunTag("ddl.stopped", "killed"),
                                   RunTag("mlflow.note.content", f"**FAILED**: {why}")])
    client.set_terminated(run_id, "FAILED")
    _note(order, f"guard: MLflow run {run_id} was left RUNNING by the job; marked FAILED")


def spool_end(order: dict, err: BaseException) -> None:
    """The store did not answer: the end goes where the replay finds it."""
    from ddl.config import redact  # noqa: PLC0415
    from ddl.tracking.outbox import SPOOL  # noqa: PLC0415

    spool = Path(order["run_dir"]) / SPOOL
    why = reason(order["rank0_pid"])
    lines = [] if spool.exists() else [json.dumps({"run_id": order["run_id"], "uri": redact(order["uri"])})]
    lines += [json.dumps({"op": "tags", "tags": {"ddl.error": why, "ddl.stopped": "killed"}}),
              json.dumps({"op": "end", "status": "FAILED"})]
    with open(spool, "a") as f:
        f.write("\n".join(lines) + "\n")
    _note(order, f"guard: could not mark MLflow run {order['run_id']} FAILED ({type(err).__name__}); "
                 f"the end is in {spool}: python -m ddl.tracking.replay {spool.parent}")


def _note(order: dict, line: str) -> None:
    try:
        with open(Path(order["run_dir"]) / "train.log", "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')},000 WARNING ddl: {line}\n")
    except OSError:
        pass


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)     # the terminal's Ctrl-C is for the job
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    first = sys.stdin.readline()
    if not first.strip():
        return 0
    order = json.loads(first)
    if CLOSED in sys.stdin.read().split():         # blocks until the pipe closes
        return 0
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        end_orphan(order)
    except Exception as err:  # noqa: BLE001 - unreachable store, any failure: leave it for the replay
        spool_end(order, err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
