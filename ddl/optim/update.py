"""The step's update as one callable, built once: however much is inside (L2, the optimizer, the
compiled one-pass fast path), the caller sees

    update(p, g, state, lr, count, mask) -> new state      # p updated in place; g is scratch

with g the summed gradients of `count` examples (a sum, not yet a mean). The portable update is
the reference: `g /= count`, `add_l2`, the optimizer's pure `update`, `p -= delta`. The fused one
(ddl/optim/fused.py) does the same operations in one pass and is tested bit-identical to it.
"""
from __future__ import annotations

from typing import Callable, Optional

from ddl.optim.fused import fused_update
from ddl.optim.transforms import add_l2


def make_update(opt, backend, size: int, l2: float, dtype: str = "float32", mode: str = "auto",
                steps: Optional[int] = None, threads: int = 1) -> Callable:
    """The update of `opt` with L2 coefficient lambda = `l2`: the fused one where `mode`
    (train.fused_update) and the run (`size` parameters, `steps` steps, `threads`) call for it,
    else the portable one."""
    fused = fused_update(opt, backend, size, mode, steps, threads=threads)
    if fused is None:
        return portable(opt, l2)
    unread = backend.xp.zeros((0,), dtype=backend.dtype(dtype))   # no L2: the kernel wants an array

    def update(p, g, state, lr, count, mask):
        return fused(p, g, state, lr, count, unread if mask is None else mask, l2 / count)
    return update


def portable(opt, l2: float) -> Callable:
    """The reference update, in the course's order: mean gradient, L2's term, the optimizer."""
    def update(p, g, state, lr, count, mask):
        g /= count                  # scratch buffer: overwritten by the next step's gradients
        if l2 > 0:
            g = add_l2(g, p, mask, l2 / count)
        delta, state = opt.update(g, state, lr, donate=True)
        p -= delta
        return state
    return update
