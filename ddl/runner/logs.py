"""Logging for a run, a leaf of the runner: rank-aware console logging, the run directory's
train.log, and the traceback kept there (the console gets one paragraph)."""
from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path

from ddl.config import RedactingFilter, redact

LOGGER_NAME = "ddl"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
log = logging.getLogger(LOGGER_NAME)


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


class RunLog(logging.FileHandler):
    """train.log. A disk that fills up during the run costs the log, not the run: one warning on
    the console, then the file is left as it is (no "--- Logging error ---" per line, no error at
    close)."""

    broken = False

    def emit(self, record) -> None:
        if not self.broken:
            super().emit(record)

    def handleError(self, record) -> None:  # noqa: N802 - logging's name
        err = sys.exc_info()[1]
        if not isinstance(err, OSError):
            super().handleError(record)
        elif not self.broken:
            self.broken = True
            print(f"ddl: warning: {self.baseFilename} cannot be written ({err.strerror or err}); the "
                  "run's log goes on on the console only", file=sys.stderr, flush=True)

    def close(self) -> None:
        try:
            super().close()
        except OSError:           # the last flush, on a full disk: said already, or nothing was lost
            self.stream = None


def attach_file_log(run_dir: Path) -> logging.Handler:
    run_dir.mkdir(parents=True, exist_ok=True)
    h = RunLog(run_dir / "train.log")
    h.setLevel(logging.DEBUG)
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    h.addFilter(RedactingFilter())
    log.addHandler(h)
    return h


def error_paragraph(err: BaseException, comm, run_dir) -> str:
    """The one paragraph a rank prints for an error that ends its run (the traceback is in the log)."""
    where = f"[rank {comm.rank}] " if comm.size > 1 else ""
    log_name = "train.log" if comm.rank == 0 else f"train.rank{comm.rank}.log"
    return redact(f"ddl: error: {where}{type(err).__name__}: {err}\n"
                  f"(run directory {run_dir}; the full traceback is in its {log_name})")


def keep_traceback(run_dir: Path, comm, err: BaseException) -> None:
    """The traceback goes to the run's log file, not the console (once: the tracked run's failure
    path keeps it before uploading the log)."""
    if getattr(err, "_ddl_traceback_kept", False):
        return
    try:
        err._ddl_traceback_kept = True
    except AttributeError:     # an exception type without a __dict__
        pass
    name = "train.log" if comm.rank == 0 else f"train.rank{comm.rank}.log"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / name, "a") as f:
            f.write(redact("".join(traceback.format_exception(err))))
    except OSError:             # nowhere to keep it: show it rather than lose it
        print(redact("".join(traceback.format_exception(err))), file=sys.stderr)
