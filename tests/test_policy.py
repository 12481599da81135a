"""ddl/train/policy.py: which reduction a run's step uses, decided once from the train config, the
backend and the world, and described as it was actually built (a node without room for shared
buffers goes through MPI, and the description says so). Communicators here are stand-ins that
answer only what the strategies ask of them; the N-rank runs are in test_parallel.py."""
from types import SimpleNamespace

import numpy as np
import pytest

from ddl.backend import get_backend
from ddl.config import TrainConfig
from ddl.parallel import SerialComm
from ddl.parallel.reduction import Allreduce, Local, Sharded
from ddl.train import policy

BIG = policy.SHARD_MIN_SIZE


def world(size: int, buffers=None):
    """A stand-in communicator of `size` ranks, all on one node, whose node has `buffers` (None:
    no room)."""
    from ddl.parallel.nodes import Nodes

    return SimpleNamespace(size=size, rank=0, node_buffers=lambda *args: buffers,
                           nodes=Nodes((0,) * size, ("h1",) * size))


@pytest.mark.parametrize("mode, backend, size, params, sharded", [
    ("auto", "numpy", 1, BIG, False),          # a world of one has nothing to shard
    ("auto", "numpy", 2, BIG, True),
    ("auto", "numpy", 2, BIG - 1, False),      # small: one allreduce beats two half-collectives
    ("auto", "cupy", 2, BIG, False),           # NumPy only
    ("on", "numpy", 1, 10, True),
    ("off", "numpy", 4, BIG, False),
])
def test_when_the_optimizer_is_sharded(mode, backend, size, params, sharded):
    cfg = TrainConfig(shard_optimizer=mode)
    assert policy.shards(cfg, backend, size, params) is sharded


def test_what_sharding_needs_is_refused_when_asked_for():
    with pytest.raises(ValueError, match="train.shard_optimizer=on needs the NumPy backend"):
        policy.shards(TrainConfig(shard_optimizer="on"), "cupy", 2, BIG)
    with pytest.raises(ValueError, match="on needs train.on_stall=wait"):
        policy.shards(TrainConfig(shard_optimizer="on", on_stall="abort"), "numpy", 2, BIG)
    assert not policy.shards(TrainConfig(on_stall="abort"), "numpy", 2, BIG)    # auto: off
    with pytest.raises(ValueError, match="train.shared_memory must be auto or off"):
        policy.shards(TrainConfig(shared_memory="on"), "numpy", 2, BIG)


def test_the_strategy_built_is_the_one_described():
    backend = get_backend("numpy")
    local = policy.make_reduction(TrainConfig(), SerialComm(), backend, BIG, 5)
    assert type(local) is Local and local.describe == "" and local.ext.shape == (BIG + 5,)
    plain = policy.make_reduction(TrainConfig(), world(2), backend, 10, 5)
    assert type(plain) is Allreduce and plain.describe == ""
    no_room = policy.make_reduction(TrainConfig(), world(2), backend, BIG, 5)
    assert type(no_room) is Sharded
    assert no_room.describe == "; optimizer sharded across 2 ranks (train.shard_optimizer)"
    through_mpi = policy.make_reduction(TrainConfig(shared_memory="off"), world(2, buffers="unused"),
                                        backend, BIG, 5)
    assert type(through_mpi) is Sharded and "shared memory" not in through_mpi.describe


def test_a_sharded_block_is_this_ranks_share_of_every_buffer():
    reduction = Sharded(world(3), np, np.float64, 100, 5)
    params, mask = np.arange(100.0), np.ones(100)
    p, g, m = reduction.block(params, mask)
    assert (reduction.lo, reduction.hi) == (0, 48) and p.base is params and g is reduction.g
    assert p.shape == g.shape == m.shape == (48,)
    placeholder = np.zeros(0)                          # no L2: the fused kernel's unread mask
    assert reduction.block(params, placeholder)[2] is placeholder
