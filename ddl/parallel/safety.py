"""Collective safety and rank-aware logging.

A rank that dies with an unhandled exception while the others sit in an allreduce would hang the
whole job until the scheduler kills it. `install_abort_handler` turns such an exception into a
short "[rank R] Type: message" line plus traceback on stderr, then MPI_Abort, so `mpiexec` ends
within seconds with a non-zero status.
"""
from __future__ import annotations

import logging
import sys
import threading
import traceback

from ddl.config import RedactingFilter, redact

LOGGER_NAME = "ddl"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


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


def setup_logging(comm, level: str | int = "INFO", stream=None) -> logging.Logger:
    """Configure the "ddl" logger: rank 0 logs at `level`, other ranks at WARNING and above.

    With size > 1 every line starts with "[rank R]". Calling it again replaces the handler. The
    logger does not propagate, so a root handler (e.g. Hydra's) does not print each line twice.
    """
    wanted = _level_number(level)
    logger = logging.getLogger(LOGGER_NAME)
    for h in [h for h in logger.handlers if getattr(h, "_ddl_rank_handler", False)]:
        logger.removeHandler(h)
    prefix = f"[rank {comm.rank}] " if comm.size > 1 else ""
    handler = logging.StreamHandler(stream)
    fmt = prefix + "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler.setFormatter(logging.Formatter(fmt, datefmt="%H:%M:%S"))
    handler._ddl_rank_handler = True
    handler.addFilter(RedactingFilter())
    logger.addHandler(handler)
    logger.setLevel(wanted if comm.rank == 0 else max(wanted, logging.WARNING))
    logger.propagate = False
    return logger


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    if str(level).upper() not in LEVELS:
        raise ValueError(f"log level must be one of {LEVELS}, got {level!r}")
    return getattr(logging, str(level).upper())
