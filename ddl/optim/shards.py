"""Which block of the flat buffers each rank updates when the optimizer is sharded across ranks.

With sharding (ZeRO's first stage), rank r keeps the optimizer state of, and updates, only the
parameters [lo_r, hi_r): the step's gradient allreduce becomes a reduce-scatter (rank r receives
its block of the summed gradients) and the updated blocks are allgathered, which together move
the same bytes as a ring allreduce while the update's work and state memory divide by the world
size. The update is elementwise, so a block updated alone equals the same block of the whole
update bit for bit. Pure functions of sizes and dicts; the collectives are the trainer's.
"""
from __future__ import annotations

ALIGN = 16        # elements: blocks start on 64-byte lines in float32 (the compiled loop's SIMD width)


def block_counts(size: int, ranks: int, align: int = ALIGN) -> tuple[int, ...]:
    """Elements of each rank's block, in rank order: equal blocks rounded up to `align`, the last
    rank taking what is left (possibly fewer, or none when the buffer is tiny)."""
    if ranks < 1:
        raise ValueError(f"ranks must be >= 1, got {ranks}")
    block = -(-(-(-size // ranks)) // align) * align
    starts = [min(r * block, size) for r in range(ranks + 1)]
    return tuple(starts[r + 1] - starts[r] for r in range(ranks))


def bounds(counts, rank: int) -> tuple[int, int]:
    """[lo, hi) of `rank`'s block."""
    lo = sum(counts[:rank])
    return lo, lo + counts[rank]


def take(state: dict, lo: int, hi: int, copy, size: int) -> dict:
    """The block [lo, hi) of every array of a whole optimizer state (`size` elements each; `copy`
    makes the block its own array, so the whole one can be freed); scalars (Adam's step count)
    are kept as they are."""
    short = {k: v.shape for k, v in state.items() if not isinstance(v, (int, float)) and v.shape != (size,)}
    if short:
        raise ValueError(f"the optimizer state is not whole: {short}, expected ({size},) each")
    return {k: v if isinstance(v, (int, float)) else copy(v[lo:hi]) for k, v in state.items()}
