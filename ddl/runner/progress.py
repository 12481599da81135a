"""What rank 0 shows while training: a one-line progress bar in a terminal, log lines otherwise."""
from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import time

log = logging.getLogger("ddl.progress")  # the console handler hides it while a bar is drawn


_BAR = {"active": False, "open": None}    # open: the stream whose last line is the bar, unended


def hide_while_bar(record: logging.LogRecord) -> bool:
    """Console filter: epoch lines go to the log file only while the bar shows them on screen;
    any other line (a warning, Ctrl-C's) starts on a line of its own, below the bar."""
    if _BAR["active"] and record.name == "ddl.progress":
        return False
    end_bar_line()
    return True


def end_bar_line() -> None:
    """End the bar's line, if one is drawn and not yet ended (the next line would be glued to it)."""
    stream, _BAR["open"] = _BAR["open"], None
    if stream is not None:
        stream.write("\n")
        stream.flush()


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def epoch_fields(r: dict, epochs: int) -> list[str]:
    """The epoch's fields, most important first; the held-out split is dev, or test when the run
    has no dev split."""
    held = "test" if "test_error" in r else "dev"
    return [f"epoch {r['epoch'] + 1}/{epochs}", f"train err {_fmt(r['train_error'])}",
            f"{held} err {_fmt(r[f'{held}_error'])}", f"train cost {_fmt(r['train_cost'])}",
            f"{held} cost {_fmt(r[f'{held}_cost'])}", f"lr {r['lr']:.3g}",
            f"{r['samples_per_s']:.0f} samples/s"]


def epoch_line(r: dict, epochs: int) -> str:
    return "  ".join(epoch_fields(r, epochs))


def bar_line(done: int, epochs: int, fields: list[str], columns: int) -> str:
    """`[####....] fields` in at most columns - 1 characters (the last column would wrap on some
    terminals): the least important fields go first, then the bar narrows, then the text is cut."""
    room = max(columns - 1, 1)
    for keep in range(len(fields), 0, -1):
        text = "  ".join(fields[:keep])
        for width in (24, 16, 10):
            if width + 3 + len(text) <= room:
                fill = int(width * done / max(epochs, 1))
                return f"[{'#' * fill}{'.' * (width - fill)}] {text}"
    return fields[0][:room]


def terminal_columns(stream) -> int:
    """The terminal's width (80 when it does not say: a pseudo-terminal may report 0)."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        columns = 0
    return columns if columns > 0 else shutil.get_terminal_size((80, 24)).columns


class Progress:
    """Per-epoch reporting on rank 0; `bar` only when stderr is a terminal (quiet in batch logs)."""

    def __init__(self, epochs: int, log_every: int = 0, bar: bool | None = None, stream=None):
        self.epochs, self.stream = epochs, stream or sys.stderr
        self.log_every = log_every or max(1, epochs // 20)
        self.bar = self.stream.isatty() if bar is None else bar
        _BAR["active"] = self.bar
        self.t0, self.drawn = time.perf_counter(), 0

    def __call__(self, r: dict) -> None:
        done = r["epoch"] + 1
        if self.bar:
            columns = terminal_columns(self.stream)
            line = bar_line(done, self.epochs, epoch_fields(r, self.epochs), columns)
            pad = min(self.drawn, max(columns - 1, 1))   # blank what a longer line left behind
            self.stream.write("\r" + line.ljust(pad))
            self.drawn = len(line)
            self.stream.flush()
            _BAR["open"] = self.stream
            if done == self.epochs:
                end_bar_line()
        if done % self.log_every == 0 or done == self.epochs or done == 1:
            log.info(epoch_line(r, self.epochs))

    def close(self) -> None:
        _BAR["active"] = False
        end_bar_line()
