"""What a step or an evaluation does when training goes wrong without an exception: a NaN/Inf
loss or gradient (decided from the allreduced tail, so every rank alike) and divergence without
NaN (decided from the global costs of the epoch records). Moved out of train.py; train.py
re-exports the names."""
from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from ddl.backend import Backend
    from ddl.train.state import Setup, TrainState

log = logging.getLogger("ddl")


class NonFiniteError(RuntimeError):
    """Raised on every rank at the same step when a loss or gradient is NaN/Inf."""


def warn_local_loss(backend: Backend, loss, count: int, epoch: int) -> None:
    """Name the rank-local cause of a non-finite step (the failure path: one more host read)."""
    value = float(backend.to_numpy(loss))
    if not math.isfinite(value):
        log.warning("non-finite loss %s on %d local examples (epoch %d)", value, count, epoch)


DIVERGE_FLOOR, DIVERGE_WINDOW, DIVERGE_FACTOR = 1000.0, 5, 1000.0


class DivergedError(NonFiniteError):
    """The run diverged without a NaN (a NonFiniteError: handled alike on every rank)."""


def diverging(history: list, cross_entropy: bool) -> Optional[str]:
    """Why the run is diverging without a NaN, or None, from the train costs of its records:
    - a cross-entropy cost above DIVERGE_FLOOR for the last DIVERGE_WINDOW records without
      halving (an untrained classifier scores log(classes), under 2.3 for ten; a course network
      started with huge weights scores ~1000 at first but falls fast, and is not flagged);
    - any cost above DIVERGE_FLOOR and DIVERGE_FACTOR times the lowest it reached before."""
    now = history[-1].get("train_cost") if history else None
    if now is None or not math.isfinite(now) or now <= DIVERGE_FLOOR:
        return None                                      # the usual case: no list is built
    costs = [c for r in history if (c := r.get("train_cost")) is not None and math.isfinite(c)]
    last = costs[-DIVERGE_WINDOW:]
    if (cross_entropy and len(last) == DIVERGE_WINDOW and min(last) > DIVERGE_FLOOR
            and min(last) >= 0.5 * last[0]):
        return (f"the train cost has stayed above {DIVERGE_FLOOR:g} for {DIVERGE_WINDOW} "
                f"evaluations without improving (now {costs[-1]:.4g}; an untrained classifier "
                "scores about 1)")
    best = min(costs[:-1], default=math.inf)
    if costs[-1] > DIVERGE_FACTOR * best:
        return f"the train cost rose to {costs[-1]:.4g} from {best:.4g}"
    return None


def check_divergence(setup: Setup, state: TrainState, record: dict) -> None:
    """Every rank decides alike (the costs are global). stop: end as for a NaN; skip: say it once
    and go on; either way the run is marked diverged."""
    if state.diverged:
        return
    why = diverging(state.history, setup.spec.output in ("sigmoid", "softmax"))
    if why is None:
        return
    state.diverged = True
    where = f"epoch {record.get('epoch', state.epoch - 1)}"
    if setup.cfg.on_nonfinite == "stop":
        raise DivergedError(f"training stopped at {where}: diverging ({why}). Lower "
                             "optimizer.lr, or set train.on_nonfinite=skip to let it go on.")
    if setup.comm.rank == 0:
        log.warning("diverging at %s (%s); going on (train.on_nonfinite=skip). Lower optimizer.lr.",
                    where, why)


def handle_nonfinite(setup: Setup, state: TrainState, epoch: int, step: int, bad: float) -> None:
    """Every rank reaches this at the same step (the verdict came through the allreduce)."""
    where = f"epoch {epoch}, step {step}"
    if setup.cfg.on_nonfinite == "skip":
        state.skipped_steps += 1
        if setup.comm.rank == 0:
            log.warning("skipped %s: non-finite loss or gradient (train.on_nonfinite=skip)", where)
        return
    raise NonFiniteError(
        f"training stopped at {where}: the loss or gradient became NaN/Inf ({int(bad)} rank(s) "
        f"reported a non-finite loss). Lower optimizer.lr, check the data for extreme values, or "
        f"set train.on_nonfinite=skip to skip such steps."
    )
