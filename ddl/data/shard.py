"""Shards and mini-batches for data parallelism: pure functions, no MPI needed.

Each epoch has ONE global permutation of the m training rows, drawn from
default_rng([seed, epoch]) and therefore identical on every rank. It is cut into global batches of
`batch_size` rows (the last, partial batch is kept), and each global batch is cut into `world_size`
contiguous slices whose sizes differ by at most one (`rank_slice`). So, at every step, the union
over ranks of their slices is exactly the batch a 1-rank run uses at that step, for any world size:
this is what makes N-rank training equal 1-rank training.

Edge cases, chosen and tested:
- batch_size >= m means full-batch gradient descent: one step per epoch holding all m rows, in
  the split's order, as the course's full-batch loops take them (no shuffle: the step sums over
  every row whatever their order); `epoch_batches` makes that batch once per run.
- world_size > the rows of a global batch is supported: some ranks get a zero-row slice at that
  step. Such a rank must still take part in the step's allreduce with a zero gradient sum, so
  no rank waits forever; the loss and gradient must therefore be SUMS over local rows divided by
  the GLOBAL batch size (len of the global batch), never means over local rows.
- Evaluation is sharded with `eval_shard` (contiguous ranges, possibly empty); every rank reports
  (sum of loss, number correct, count) and those sums are reduced (ddl/train/evaluate.py), never
  per-rank means, so uneven or empty shards weigh correctly.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ddl.data.errors import DataError


def _check(m: int, batch_size: int | None = None, rank: int = 0, world_size: int = 1) -> None:
    if m < 0:
        raise DataError(f"number of rows m must be >= 0, got {m}")
    if batch_size is not None and batch_size < 1:
        raise DataError(f"batch_size must be >= 1 (larger than the training set = full batch), "
                        f"got {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise DataError(f"rank must be in 0..world_size-1 with world_size >= 1, "
                        f"got rank {rank} of {world_size}")


def rank_slice(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous share of n items; shares differ in size by at most one."""
    _check(n, rank=rank, world_size=world_size)
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def epoch_permutation(m: int, epoch: int, seed: int) -> np.ndarray:
    """The epoch's global order of rows 0..m-1 (int64), from default_rng([seed, epoch])."""
    _check(m)
    if seed < 0 or epoch < 0:
        raise DataError(f"seed and epoch must be >= 0, got seed {seed}, epoch {epoch}")
    return np.random.default_rng([seed, epoch]).permutation(m).astype(np.int64)


def n_steps(m: int, batch_size: int) -> int:
    """Steps per epoch: ceil(m / batch_size) (1 when batch_size >= m > 0, 0 when m == 0)."""
    _check(m, batch_size)
    return -(-m // batch_size)


def global_batches(m: int, batch_size: int, epoch: int, seed: int) -> list[np.ndarray]:
    """The epoch's global mini-batches: row indices into the training split, last one partial."""
    _check(m, batch_size)
    if batch_size >= m:
        return [np.arange(m, dtype=np.int64)] if m else []
    perm = epoch_permutation(m, epoch, seed)
    return [perm[s:s + batch_size] for s in range(0, m, batch_size)]


def shard_batches(m: int, batch_size: int, epoch: int, seed: int,
                  rank: int, world_size: int) -> list[np.ndarray]:
    """This rank's slice of every global batch of the epoch (int64 row indices, possibly empty)."""
    _check(m, batch_size, rank, world_size)
    out = []
    for batch in global_batches(m, batch_size, epoch, seed):
        start, stop = rank_slice(len(batch), rank, world_size)
        out.append(batch[start:stop])
    return out


def widest_slice(batch_size: int, world_size: int, m: Optional[int] = None) -> int:
    """The most rows one rank's slice of a global batch holds (`rank_slice`): ceil(b / world_size)
    for a global batch of b = batch_size rows, or of the split's m rows (at least 1) when fewer."""
    b = batch_size if m is None else min(batch_size, max(m, 1))
    return -(-b // world_size)


def epoch_batches(m: int, batch_size: int, seed: int, rank: int, world_size: int):
    """epoch -> `shard_batches(m, batch_size, epoch, seed, rank, world_size)`, chosen once: a full
    batch is the same every epoch, so it is made once and handed back each time (the same arrays:
    the feeder's last batch is reused too)."""
    if batch_size < m:
        return lambda epoch: shard_batches(m, batch_size, epoch, seed, rank, world_size)
    same = shard_batches(m, batch_size, 0, seed, rank, world_size)
    return lambda epoch: same


def eval_shard(m: int, rank: int, world_size: int) -> np.ndarray:
    """This rank's contiguous rows (int64, possibly empty) of an evaluation split of m rows."""
    return np.arange(*rank_slice(m, rank, world_size), dtype=np.int64)
