"""Test-only fault injection, for the reliability suite: `DDL_FAULT=<kind>@rank=<r>,<where>`
makes rank r do one of the kinds below, where <where> is

    step=<s>        before its global training step s (counted from 0 across epochs)
    eval=<e>        at the evaluation after e epochs, before its collectives
    checkpoint=<e>  at the checkpoint after e epochs: rank 0 inside the file's write (after the
                    temporary file is written, before it is renamed), another rank while rank 0
                    writes

and the kind is one of

    raise        raise RuntimeError("injected fault")
    exit         leave at once with status 3 (os._exit: no cleanup, like a crash)
    nan          make its local loss NaN (the step's non-finite path)
    stall=<sec>  sleep that long before the step (a stalled rank)

Unset (the normal case) it costs one environment read per run. Never set it outside tests.
"""
from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional

ENV = "DDL_FAULT"
_SPEC = re.compile(r"^(raise|exit|nan|stall=(?P<secs>[0-9.]+))@rank=(?P<rank>\d+),"
                   r"(?P<at>step|eval|checkpoint)=(?P<step>\d+)$")
_ARMED: Optional["Fault"] = None   # a fault that strikes inside the next atomic write (ddl/atomic.py)


@dataclass(frozen=True)
class Fault:
    kind: str
    rank: int
    step: int
    seconds: float = 0.0
    at: str = "step"

    def due(self, rank: int, step: int, at: str = "step") -> bool:
        return rank == self.rank and step == self.step and at == self.at

    def strike(self) -> bool:
        """Do the fault; True when the caller must make its loss NaN."""
        if self.kind == "raise":
            raise RuntimeError(f"injected fault ({ENV}) at step {self.step}")
        if self.kind == "exit":
            os._exit(3)
        if self.kind == "stall":
            time.sleep(self.seconds)
        return self.kind == "nan"


@contextmanager
def inside_writes(fault: Optional[Fault]) -> Iterator[None]:
    """Make `fault` strike inside the atomic writes of this block (see `in_write`)."""
    global _ARMED
    _ARMED = fault
    try:
        yield
    finally:
        _ARMED = None


def in_write() -> None:
    """Called by every atomic write between writing its temporary file and renaming it."""
    if _ARMED is not None:
        _ARMED.strike()


def from_env() -> Optional[Fault]:
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    match = _SPEC.match(value)
    if not match:
        raise ValueError(f"{ENV}={value!r}: expected <raise|exit|nan|stall=SECONDS>@rank=R,"
                         "<step|eval|checkpoint>=N")
    kind = value.split("@")[0].split("=")[0]
    return Fault(kind, int(match["rank"]), int(match["step"]), float(match["secs"] or 0), match["at"])
