"""The rank protocol of one job: every rank executes it, an error becomes one paragraph (and, when
only some ranks saw it, an abort of all), ranks > 0 wait for rank 0's next job, exit codes.

    rank 0:    execute(job) for each job it composes, then bcast {"op": "exit", "code": c}
    rank > 0:  worker_loop(): job = bcast(); execute(job) ... until "exit"
"""
from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path

from ddl.config import redact
from ddl.train.nonfinite import NonFiniteError
from ddl.parallel import signals
from ddl.runner.logs import attach_file_log, error_paragraph, keep_traceback

log = logging.getLogger("ddl")

EXIT_STOPPED = 75  # EX_TEMPFAIL: stopped by a signal after a checkpoint; rerun with checkpoint.resume=auto
EXIT_INTERRUPTED = 130   # the shell's code for Ctrl-C: stopped by SIGINT, after a checkpoint too


def execute(job: dict, comm, recorder=None) -> dict | None:
    """Run one job on this rank (rank 0 records it through `recorder`, ddl/runner/recorder.py);
    errors become one clear paragraph (the traceback in the run's log).

    job: {"cfg": Config, "run_dir", "parent": a sweep's parent run id or None, "multirun": bool,
    "tags": the run's extra tags, "id": this job's id (ddl.job), the same on every rank}."""
    from ddl.runner import experiment, lr_range  # noqa: PLC0415

    run_dir = Path(job["run_dir"])
    handler = attach_file_log(run_dir) if comm.rank == 0 else None
    body = lr_range.measure if job["cfg"].lr_range.enabled else None   # a run, or a range test
    try:
        summary = experiment.run(job["cfg"], comm, run_dir, job, recorder, body)
        if summary.get("stopped") == "signal":
            ctrl_c = signals.stop_signal() == signal.SIGINT
            if comm.rank == 0:         # every rank stopped at this step: one says so
                how = ("" if job["multirun"] else     # a sweep says how to resume all of it, at its end
                       f" Rerun with out_dir={run_dir} checkpoint.resume=auto to continue.")
                log.warning("stopped by %s at epoch %d step %d; checkpoint written in %s.%s",
                            "Ctrl-C" if ctrl_c else "a signal", summary["epoch"], summary["step"],
                            run_dir, how)
            raise SystemExit(EXIT_INTERRUPTED if ctrl_c else EXIT_STOPPED)
        return summary
    except NonFiniteError as e:            # decided from allreduced values: the same on every rank
        fail(job, comm, e, fatal=not job["multirun"], consistent=True)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as e:  # noqa: BLE001 - every other error is reported once and ends the job
        fail(job, comm, e, fatal=not job["multirun"] or comm.size > 1, consistent=False)
    finally:
        if handler:
            log.removeHandler(handler)
            handler.close()
    return None


def fail(job, comm, err: BaseException, fatal: bool, consistent: bool) -> None:
    """Print one paragraph; keep the traceback in the log. Under MPI an error seen by one rank only
    aborts every rank (they may be waiting in a collective), after giving rank 0 the first word."""
    keep_traceback(Path(job["run_dir"]), comm, err)
    msg = error_paragraph(err, comm, job["run_dir"])
    if comm.size > 1 and not consistent:
        if comm.rank != 0:
            # rank 0, which records the run, is about to be killed by the abort: its tracking
            # worker ends the run FAILED with this error, which it reads from the run directory
            from ddl.tracking.notes import leave_note  # noqa: PLC0415 - the failure path only; no MLflow

            leave_note(Path(job["run_dir"]), job.get("id"), comm.rank, redact(f"[rank {comm.rank}] "
                       f"{type(err).__name__}: {err}"), f"train.rank{comm.rank}.log")
            time.sleep(1.0)  # a global error: let rank 0 report and abort for everyone
        print(msg, file=sys.stderr, flush=True)
        comm.abort(1)
        raise SystemExit(1)   # abort normally does not return
    if comm.rank == 0:
        print(msg, file=sys.stderr, flush=True)
    if fatal:
        raise SystemExit(1)


def worker_loop(comm) -> int:
    """Ranks > 0: run each job rank 0 broadcasts, until told to exit (rank 0 decides what follows
    an error: the next sweep point or "exit")."""
    while True:
        job = comm.bcast(None, root=0)
        if job["op"] == "exit":
            return int(job["code"])
        try:
            execute(job, comm)
        except SystemExit:
            pass


def exit_code(e: SystemExit) -> int:
    if e.code is None:
        return 0
    return e.code if isinstance(e.code, int) else 1
