"""Which reduction a run's step uses, decided once from (TrainConfig, backend name, world size):

    train.shard_optimizer  auto | on | off   the optimizer sharded across the ranks (auto: more
                           than one rank, the NumPy backend, >= SHARD_MIN_SIZE parameters and
                           on_stall=wait; on: always, a world of one too; off: never)
    train.shared_memory    auto | off        a sharded run with every rank on one node reduces
                           and gathers through the node's shared memory (auto: where it has room)
    train.reduction        auto | flat | node   node: an unsharded run on several nodes sums
                           within each node, then between one rank per node; auto: flat, since
                           ddl's two levels did not beat MPICH's allreduce over shaped links
                           between simulated hosts (README, "Several nodes")

`make_reduction` builds the strategy (ddl/parallel/reduction.py) that the step then calls without
asking which it is; its `describe` is what the run-directory line reports, the decision actually
made (a node whose shared memory has no room falls back to MPI).
"""
from __future__ import annotations

from ddl.config import TrainConfig
from ddl.parallel.reduction import Allreduce, Local, NodeAware, Sharded, SharedSharded

SHARD_MODES = ("auto", "on", "off")
SHARED_MEMORY_MODES = ("auto", "off")
SHARD_MIN_SIZE = 1 << 16    # auto: parameters below which one allreduce beats two half-collectives


def unshardable(cfg: TrainConfig, backend: str) -> str | None:
    """What keeps this run from sharding (None: nothing); `on` with a reason is refused."""
    if cfg.shard_optimizer not in SHARD_MODES:
        raise ValueError(f"train.shard_optimizer must be one of {SHARD_MODES}, got {cfg.shard_optimizer!r}")
    if cfg.shared_memory not in SHARED_MEMORY_MODES:
        raise ValueError(f"train.shared_memory must be auto or off, got {cfg.shared_memory!r}")
    why = None
    if backend != "numpy":
        why = f"the NumPy backend (this run has {backend!r})"
    elif cfg.on_stall == "abort":
        why = ("train.on_stall=wait: a stalled job's checkpoint is written by rank 0 alone, which "
               "holds only its block of the optimizer state")
    if cfg.shard_optimizer == "on" and why:
        raise ValueError(f"train.shard_optimizer=on needs {why}; set train.shard_optimizer=off")
    return why


def shards(cfg: TrainConfig, backend: str, world: int, params: int) -> bool:
    """Whether this run shards the optimizer across its `world` ranks (`params`: its size)."""
    why = unshardable(cfg, backend)
    if cfg.shard_optimizer == "auto":
        return why is None and world > 1 and params >= SHARD_MIN_SIZE
    return cfg.shard_optimizer == "on"


def make_reduction(cfg: TrainConfig, comm, backend, size: int, tail: int):
    """The run's strategy for the step's [gradients (`size`) | tail (`tail`)] buffer. Collective:
    the node's shared buffers are allocated on every rank together."""
    xp, dtype = backend.xp, backend.dtype(cfg.dtype)
    if shards(cfg, backend.name, comm.size, size):
        buffers = comm.node_buffers(size + tail, size, dtype) if cfg.shared_memory == "auto" else None
        if buffers is not None:
            return SharedSharded(comm, buffers, xp, dtype, size, tail)
        return Sharded(comm, xp, dtype, size, tail)
    if comm.size == 1:            # the sum over one rank is the buffer itself
        return Local(xp, dtype, size, tail)
    if node_aware(cfg, backend.name, comm.nodes):
        return NodeAware(comm, comm.node_levels(), xp, dtype, size, tail)
    return Allreduce(comm, xp, dtype, size, tail)


def node_aware(cfg: TrainConfig, backend: str, nodes) -> bool:
    """Whether an unsharded run sums in two levels (`nodes`: the hosts its ranks are on): only
    when asked (`node`; the NumPy backend only: a GPU run's transport is NCCL's or the host
    staging's). auto is flat: measured over shaped links between simulated hosts, ddl's two levels
    did not beat MPICH's own allreduce."""
    if cfg.reduction == "node" and backend != "numpy":
        raise ValueError(f"train.reduction=node needs the NumPy backend (this run has {backend!r}); "
                         "set train.reduction=auto")
    return cfg.reduction == "node"
