"""Test-only fault injection, for the reliability suite: `DDL_FAULT=<kind>@rank=<r>,step=<s>`
makes rank r, at its global training step s (counted from 0 across epochs), do one of:

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
from dataclasses import dataclass
from typing import Optional

ENV = "DDL_FAULT"
_SPEC = re.compile(r"^(raise|exit|nan|stall=(?P<secs>[0-9.]+))@rank=(?P<rank>\d+),step=(?P<step>\d+)$")


@dataclass(frozen=True)
class Fault:
    kind: str
    rank: int
    step: int
    seconds: float = 0.0

    def due(self, rank: int, step: int) -> bool:
        return rank == self.rank and step == self.step

    def strike(self) -> bool:
        """Do the fault; True when the caller must make its loss NaN."""
        if self.kind == "raise":
            raise RuntimeError(f"injected fault ({ENV}) at step {self.step}")
        if self.kind == "exit":
            os._exit(3)
        if self.kind == "stall":
            time.sleep(self.seconds)
        return self.kind == "nan"


def from_env() -> Optional[Fault]:
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    match = _SPEC.match(value)
    if not match:
        raise ValueError(f"{ENV}={value!r}: expected <raise|exit|nan|stall=SECONDS>@rank=R,step=S")
    kind = value.split("@")[0].split("=")[0]
    return Fault(kind, int(match["rank"]), int(match["step"]), float(match["secs"] or 0))
