"""ddl.optim.shards: the blocks each rank updates when the optimizer is sharded, and the step's
pieces on one process (SerialComm): a world of one's block is the whole buffer, so the sharded
step is the unsharded one exactly (the N-rank runs are in test_parallel.py)."""
import numpy as np
import pytest

from ddl.backend import get_backend
from ddl.config import Config, DataConfig
from ddl.data.dataset import load_dataset
from ddl.optim import shards
from ddl.optim.optimizers import make_optimizer
from ddl.optim.schedules import make_schedule
from ddl.parallel import SerialComm
from ddl.runner.experiment import build_spec, initial_state
from ddl.train import Setup, train


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 123, 1000, 1 << 20])
@pytest.mark.parametrize("ranks", [1, 2, 3, 4, 7, 64])
def test_blocks_cover_the_buffer_once_in_rank_order_on_aligned_starts(size, ranks):
    counts = shards.block_counts(size, ranks)
    assert len(counts) == ranks and sum(counts) == size and min(counts) >= 0
    starts = [shards.bounds(counts, r)[0] for r in range(ranks)]
    assert all(s % shards.ALIGN == 0 or c == 0 for s, c in zip(starts, counts))
    # equal blocks but the last; never more than one block of padding's worth apart
    assert len(set(counts[:-1])) <= 1 or counts.count(0) > 0
    assert max(counts) - min(counts) <= -(-size // ranks) + shards.ALIGN


def test_bounds_and_take():
    counts = shards.block_counts(123, 4)
    assert counts == (32, 32, 32, 27)
    assert [shards.bounds(counts, r) for r in range(4)] == [(0, 32), (32, 64), (64, 96), (96, 123)]
    v = np.arange(123.0)
    got = shards.take({"v": v, "t": 5}, 32, 64, lambda a: a.copy(), 123)
    assert got["t"] == 5 and np.array_equal(got["v"], np.arange(32.0, 64.0))
    assert not np.shares_memory(got["v"], v)
    with pytest.raises(ValueError, match="not whole"):       # a block given where the whole is due
        shards.take({"v": v[:32]}, 32, 64, lambda a: a.copy(), 123)
    with pytest.raises(ValueError, match="ranks must be >= 1"):
        shards.block_counts(10, 0)


def test_serial_reduce_scatter_and_allgather_are_identity_and_count():
    comm = SerialComm()
    buf, out, tail = np.arange(6.0), np.zeros(6), np.array([2.0, 3.0])
    assert comm.reduce_scatter_sum(buf, out, (6,), tail=tail) is out
    assert np.array_equal(out, buf) and np.array_equal(tail, [2.0, 3.0])
    assert comm.allgather(buf, (6,)) is buf and np.array_equal(buf, np.arange(6.0))
    assert comm.counts == {"grad": 1, "params": 1} and comm.allreduce_count == 2
    with pytest.raises(ValueError, match="block counts"):
        comm.allgather(buf, (5,))
    with pytest.raises(ValueError, match="this rank's block has 6 elements"):
        comm.reduce_scatter_sum(buf, np.zeros(5), (6,))


@pytest.mark.parametrize("opt", ["gd", "momentum", "rmsprop", "adam"])
@pytest.mark.parametrize("fused", ["off", "on"])
def test_train_sharded_on_one_process_is_unsharded_bit_for_bit_and_returns_whole_state(opt, fused):
    if fused == "on":
        pytest.importorskip("numba")
    got = {}
    for shard in ("on", "off"):
        cfg = Config(data=DataConfig(name="moons", m=150, dev_fraction=0.2))
        cfg.model.hidden, cfg.model.l2, cfg.optimizer.name = [6, 4], 0.1, opt
        cfg.train.epochs, cfg.train.batch_size, cfg.train.dtype = 3, 16, "float64"
        cfg.train.fused_update, cfg.train.shard_optimizer = fused, shard
        backend, ds = get_backend("numpy"), load_dataset(cfg.data)
        spec = build_spec(cfg, ds)
        setup = Setup(backend, SerialComm(), spec, make_optimizer(opt), make_schedule("constant", 0.01),
                      cfg.train, cfg.model.l2)
        state = train(ds, setup, initial_state(cfg, spec, backend, setup.opt))
        got[shard] = state
        assert setup.comm.counts.get("params", 0) == (3 * 8 if shard == "on" else 0)
    on, off = got["on"], got["off"]
    assert np.array_equal(on.params.buf, off.params.buf)
    assert on.opt_state.keys() == off.opt_state.keys()
    for k, v in off.opt_state.items():
        assert np.array_equal(on.opt_state[k], v), k      # whole again after train()
