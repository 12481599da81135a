"""Aborting every rank when one fails.

A rank that dies with an unhandled exception while the others sit in an allreduce would hang the
whole job until the scheduler kills it. `install_abort_handler` turns such an exception into a
short "[rank R] Type: message" line plus traceback on stderr, then MPI_Abort, so `mpiexec` ends
within seconds with a non-zero status.
"""
from __future__ import annotations

import sys
import threading
import traceback

from ddl.config import redact

def report_exception(rank: int, exc_type, exc, tb, stream=None) -> None:
    """Write "[rank R] Type: message" and then the traceback to `stream` (stderr by default)."""
    stream = stream or sys.stderr
    print(redact(f"[rank {rank}] {exc_type.__name__}: {exc}"), file=stream)
    stream.write(redact("".join(traceback.format_exception(exc_type, exc, tb))))
    stream.flush()


def install_abort_handler(comm) -> None:
    """Make an unhandled exception on any rank (main thread or other threads) abort all ranks.

    With one process there is nobody to hang, so after the report Python exits normally (status 1,
    atexit handlers still run); with size > 1 it calls `comm.abort(1)`.
    """

    def excepthook(exc_type, exc, tb):
        report_exception(comm.rank, exc_type, exc, tb)
        if comm.size > 1:
            comm.abort(1)

    def thread_excepthook(args):
        if issubclass(args.exc_type, SystemExit):  # threading ignores these too
            return
        excepthook(args.exc_type, args.exc_value, args.exc_traceback)

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
