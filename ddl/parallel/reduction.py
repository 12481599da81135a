"""How one step's gradients travel between ranks, besides the one allreduce of the whole buffer.

Three switches of `train` (the trainer, ddl/train.py, holds the collectives in view):

    shard_optimizer   a reduce-scatter gives each rank its block of the summed gradients, each
                      rank updates its block of the parameters and optimizer state, an allgather
                      of the parameters ends the step (`Shard`; the block math: ddl/optim/shards.py)
    overlap           each layer's gradients in an allreduce of their own, started as soon as
                      backward has finished the layer (`Overlap`)
    shared_memory     sharded with every rank on one node: the reduce-scatter reads the other
                      ranks' gradients from shared memory, the allgather is a barrier over one
                      shared parameter buffer (`node_memory`; ddl/parallel/shared_memory.py)

All are NumPy-only and all keep N ranks equal to one rank up to the order of the sums.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ddl.optim import shards

if TYPE_CHECKING:
    from ddl.train.state import Setup


SHARD_MODES = ("auto", "on", "off")
SHARD_MIN_SIZE = 1 << 16    # auto: parameters below which one allreduce beats two half-collectives


def shard_optimizer(setup: Setup, size: int) -> bool:
    """Whether this run shards the optimizer across its ranks (`train.shard_optimizer`): auto = with
    more than one rank, the NumPy backend, at least SHARD_MIN_SIZE parameters and on_stall=wait;
    on = always (a world of one too: its block is the whole buffer), off = never."""
    mode, cfg = setup.cfg.shard_optimizer, setup.cfg
    if mode not in SHARD_MODES:
        raise ValueError(f"train.shard_optimizer must be one of {SHARD_MODES}, got {mode!r}")
    why = None
    if setup.backend.name != "numpy":
        why = f"the NumPy backend (this run has {setup.backend.name!r})"
    elif cfg.on_stall == "abort":
        why = ("train.on_stall=wait: a stalled job's checkpoint is written by rank 0 alone, which "
               "holds only its block of the optimizer state")
    if mode == "on" and why:
        raise ValueError(f"train.shard_optimizer=on needs {why}; set train.shard_optimizer=off")
    if mode == "auto":
        return why is None and setup.comm.size > 1 and size >= SHARD_MIN_SIZE and cfg.overlap != "on"
    return mode == "on"


def node_memory(setup: Setup, ext_size: int, size: int, dtype):
    """A sharded run's buffers in the node's shared memory (`train.shared_memory`: auto = where
    every rank is on one node and its shared memory has room; off = through MPI), or None.
    Collective."""
    mode = setup.cfg.shared_memory
    if mode not in ("auto", "off"):
        raise ValueError(f"train.shared_memory must be auto or off, got {mode!r}")
    if mode == "off":
        return None
    return setup.comm.node_memory(ext_size, size, dtype)


def overlap(setup: Setup) -> bool:
    """Whether each layer's gradients are reduced while backward computes the layers below
    (`train.overlap`: off | on; on needs the NumPy backend and does nothing in a world of one)."""
    mode = setup.cfg.overlap
    if mode not in ("on", "off"):
        raise ValueError(f"train.overlap must be on or off, got {mode!r}")
    if mode == "on" and setup.backend.name != "numpy":
        raise ValueError(f"train.overlap=on needs the NumPy backend (this run has {setup.backend.name!r}); "
                         "set train.overlap=off")
    return mode == "on" and setup.comm.size > 1


@dataclass
class Overlap:
    """The step's gradient allreduce in per-layer buckets, each started as soon as backward has
    finished its layer (the last layer first), so the sums travel while the layers below are
    computed; the tail follows once backward is done, and `finish` waits for all of them."""

    comm: object
    buf: object                 # the flat gradient buffer
    spans: dict                 # layer -> [lo, hi) in it
    pending: list = field(default_factory=list)
    local_sum: float = 0.0      # this rank's gradient sum (the non-finite check), bucket by bucket

    def start(self, layer: int) -> None:
        lo, hi = self.spans[layer]
        bucket = self.buf[lo:hi]
        self.local_sum += float(bucket.sum())       # before the reduction overwrites it
        self.pending.append(self.comm.start_allreduce(bucket, tag="grad"))
        self.comm.progress(self.pending)

    def finish(self, tail) -> None:
        self.pending.append(self.comm.start_allreduce(tail, tag="tail"))
        self.comm.finish(self.pending, tag="grad")
        self.pending, self.local_sum = [], 0.0


@dataclass
class Shard:
    """This rank's block [lo, hi) of the flat buffers, and the buffer it receives its gradients in."""

    counts: tuple
    lo: int
    hi: int
    g: object           # this rank's block of the summed gradients (the reduce-scatter's output)
    mask: object        # its block of the L2 mask
    xp: object

    @classmethod
    def make(cls, comm, size: int, xp, dtype, mask) -> Shard:
        counts = shards.block_counts(size, comm.size)
        lo, hi = shards.bounds(counts, comm.rank)
        return cls(counts, lo, hi, xp.zeros((hi - lo,), dtype=dtype),
                   mask[lo:hi] if mask is not None and mask.shape[0] == size else mask, xp)

    def take(self, opt_state: dict) -> dict:
        return shards.take(opt_state, self.lo, self.hi, lambda a: a.copy(), sum(self.counts))

    def gather(self, comm, opt_state: dict) -> dict:
        """The whole optimizer state on every rank (one allgather per state array)."""
        out = {}
        for k, v in opt_state.items():
            if isinstance(v, (int, float)):
                out[k] = v
                continue
            full = self.xp.zeros((sum(self.counts),), dtype=v.dtype)
            full[self.lo:self.hi] = v
            out[k] = comm.allgather(full, self.counts, tag="state")
        return out
