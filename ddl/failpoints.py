"""Failpoints, for the reliability suite only (after etcd's gofail): named seams in the product that
do nothing unless the test environment arms one with

    DDL_FAULT=<kind>@rank=<r>,<point>=<n>

where <point>=<n> is where rank r does it:

    step=<s>        before its global training step s (counted from 0 across epochs)
    eval=<e>        at the evaluation after e epochs, before its collectives
    checkpoint=<e>  at the checkpoint after e epochs: rank 0 inside the file's write (its temporary
                    file written, not yet renamed), another rank while rank 0 writes

and <kind> is one of

    raise        raise RuntimeError("injected fault")
    exit         leave at once with status 3 (os._exit: no cleanup, like a crash)
    nan          make its batch's inputs NaN (its loss and gradients become non-finite)
    stall=<sec>  sleep that long (a stalled rank)

The seams, one line each: `failpoint("step", ...)` and `failpoint("eval", ...)` in the epoch loop,
`failpoint("checkpoint", ...)` in the runner's checkpoint hook, `failpoint("write", ...)` inside
every atomic write. Unset (every real run), a failpoint costs one environment lookup.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Optional

ENV = "DDL_FAULT"
_SPEC = re.compile(r"^(raise|exit|nan|stall=(?P<secs>[0-9.]+))@rank=(?P<rank>\d+),"
                   r"(?P<at>step|eval|checkpoint)=(?P<step>\d+)$")


@dataclass(frozen=True)
class Fault:
    kind: str
    rank: int
    step: int
    seconds: float = 0.0
    at: str = "step"

    def here(self, point: str, rank: int, n: int, name: str) -> bool:
        """Whether this fault strikes at seam `point` on `rank` at position `n` (or, inside a
        write, the file `name`): a checkpoint's fault on rank 0 strikes inside its file's write."""
        if point == "write":
            return self.at == "checkpoint" and self.rank == 0 and name.startswith(f"ckpt-e{self.step:06d}-")
        if point == "checkpoint" and rank == 0:
            return False
        return point == self.at and rank == self.rank and n == self.step

    def strike(self, value=None):
        """Do the fault; `value` back (nan: made NaN)."""
        if self.kind == "raise":
            raise RuntimeError(f"injected fault ({ENV}) at {self.at} {self.step}")
        if self.kind == "exit":
            os._exit(3)
        if self.kind == "stall":
            time.sleep(self.seconds)
        return value * float("nan") if self.kind == "nan" and value is not None else value


def failpoint(point: str, rank: int = 0, n: int = -1, value=None, *, name: str = ""):
    """`value`, unless DDL_FAULT arms this seam here (then the fault strikes; nan poisons `value`)."""
    if ENV not in os.environ:
        return value
    fault = from_env()
    return fault.strike(value) if fault is not None and fault.here(point, rank, n, name) else value


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
