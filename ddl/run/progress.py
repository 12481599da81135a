"""What rank 0 shows while training: a one-line progress bar in a terminal, log lines otherwise."""
from __future__ import annotations

import logging
import math
import sys
import time

log = logging.getLogger("ddl.progress")  # the console handler hides it while a bar is drawn


_BAR = {"active": False}


def hide_while_bar(record: logging.LogRecord) -> bool:
    """Console filter: epoch lines go to the log file only while the bar shows them on screen."""
    return not (_BAR["active"] and record.name == "ddl.progress")


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def epoch_line(r: dict, epochs: int) -> str:
    line = (f"epoch {r['epoch'] + 1}/{epochs}  lr {r['lr']:.3g}  train cost {_fmt(r['train_cost'])}"
            f"  dev cost {_fmt(r['dev_cost'])}  train err {_fmt(r['train_error'])}"
            f"  dev err {_fmt(r['dev_error'])}  {r['samples_per_s']:.0f} samples/s")
    return line


class Progress:
    """Per-epoch reporting on rank 0; `bar` only when stderr is a terminal (quiet in batch logs)."""

    def __init__(self, epochs: int, log_every: int = 0, bar: bool | None = None, stream=None):
        self.epochs, self.stream = epochs, stream or sys.stderr
        self.log_every = log_every or max(1, epochs // 20)
        self.bar = self.stream.isatty() if bar is None else bar
        _BAR["active"] = self.bar
        self.t0 = time.perf_counter()

    def __call__(self, r: dict) -> None:
        done = r["epoch"] + 1
        if self.bar:
            width = 24
            fill = int(width * done / max(self.epochs, 1))
            self.stream.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {epoch_line(r, self.epochs)} ")
            self.stream.flush()
            if done == self.epochs:
                self.stream.write("\n")
        if done % self.log_every == 0 or done == self.epochs or done == 1:
            log.info(epoch_line(r, self.epochs))

    def close(self) -> None:
        _BAR["active"] = False
        if self.bar and self.stream.isatty():
            self.stream.write("\n")
            self.stream.flush()
