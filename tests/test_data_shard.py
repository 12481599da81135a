"""Sharding: every step's per-rank slices partition the 1-rank global batch, for any world size."""
import numpy as np
import pytest

from ddl.data import (DataError, epoch_batches, epoch_permutation, eval_shard, global_batches,
                      n_steps, rank_slice, shard_batches)

CASES = [(1001, 64), (1000, 64), (10, 3), (7, 100), (1, 1), (64, 64), (65, 64), (5, 2)]


@pytest.mark.parametrize("m,batch", CASES)
@pytest.mark.parametrize("world", range(1, 9))
def test_rank_slices_partition_the_one_rank_batch(m, batch, world):
    one_rank = shard_batches(m, batch, epoch=3, seed=11, rank=0, world_size=1)
    assert [len(b) for b in one_rank] == [len(b) for b in global_batches(m, batch, 3, 11)]
    per_rank = [shard_batches(m, batch, 3, 11, r, world) for r in range(world)]
    # Every rank runs the same number of steps, so nobody waits for an allreduce that never comes.
    assert {len(steps) for steps in per_rank} == {n_steps(m, batch)}
    for step, batch_rows in enumerate(one_rank):
        slices = [per_rank[r][step] for r in range(world)]
        sizes = [len(s) for s in slices]
        assert max(sizes) - min(sizes) <= 1
        assert all(s.dtype == np.int64 for s in slices)
        # Concatenated in rank order they ARE the 1-rank batch: disjoint, complete, same order.
        np.testing.assert_array_equal(np.concatenate(slices), batch_rows)
    everything = np.concatenate(one_rank)
    np.testing.assert_array_equal(np.sort(everything), np.arange(m))


def test_world_larger_than_batch_gives_empty_shards():
    per_rank = [shard_batches(10, 4, 0, 0, r, 8) for r in range(8)]
    last = [per_rank[r][-1] for r in range(8)]  # the last global batch holds 2 rows
    assert [len(s) for s in last] == [1, 1, 0, 0, 0, 0, 0, 0]
    assert all(len(steps) == 3 for steps in per_rank)
    assert last[5].shape == (0,) and last[5].dtype == np.int64


def test_epoch_permutations_differ_and_reproduce():
    perms = [epoch_permutation(1001, e, seed=5) for e in range(4)]
    for e in range(4):
        np.testing.assert_array_equal(perms[e], epoch_permutation(1001, e, seed=5))
        np.testing.assert_array_equal(np.sort(perms[e]), np.arange(1001))
    assert all(not np.array_equal(perms[i], perms[j]) for i in range(4) for j in range(i + 1, 4))
    assert not np.array_equal(perms[0], epoch_permutation(1001, 0, seed=6))


def test_batch_larger_than_training_set_is_full_batch():
    assert n_steps(10, 100) == 1
    (only,) = global_batches(10, 100, 0, 0)
    np.testing.assert_array_equal(only, np.arange(10))             # the split's order, no shuffle
    assert [len(b) for b in global_batches(10, 10, 3, 0)] == [10]
    for rank in range(3):                                           # made once, the same each epoch
        batches_of = epoch_batches(10, 100, 0, rank, 3)
        assert batches_of(5) is batches_of(0)
        assert [b.tolist() for b in batches_of(7)] == [b.tolist() for b in shard_batches(10, 100, 7, 0, rank, 3)]
    mini = epoch_batches(10, 4, 2, 1, 2)                            # mini-batches: shuffled per epoch
    for epoch in range(3):
        assert [b.tolist() for b in mini(epoch)] == [b.tolist() for b in shard_batches(10, 4, epoch, 2, 1, 2)]
    assert n_steps(0, 8) == 0 and global_batches(0, 8, 0, 0) == []


@pytest.mark.parametrize("kwargs", [dict(batch_size=0), dict(rank=3, world_size=3),
                                    dict(rank=0, world_size=0), dict(seed=-1)])
def test_bad_arguments_raise(kwargs):
    args = dict(m=10, batch_size=4, epoch=0, seed=0, rank=0, world_size=1) | kwargs
    with pytest.raises(DataError):
        shard_batches(**args)


@pytest.mark.parametrize("n,world", [(10, 3), (2, 5), (0, 4), (1001, 8)])
def test_rank_slice_and_eval_shard_cover_contiguously(n, world):
    bounds = [rank_slice(n, r, world) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(bounds[r][1] == bounds[r + 1][0] for r in range(world - 1))
    sizes = [b - a for a, b in bounds]
    assert max(sizes) - min(sizes) <= 1
    np.testing.assert_array_equal(np.concatenate([eval_shard(n, r, world) for r in range(world)]),
                                  np.arange(n))


def test_eval_sums_not_means_weigh_uneven_and_empty_shards():
    rng = np.random.default_rng(0)
    loss, correct = rng.random(5), rng.random(5) < 0.5
    sums = []
    for r in range(8):  # 5 rows over 8 ranks: three ranks have nothing
        rows = eval_shard(5, r, 8)
        sums.append((loss[rows].sum(), correct[rows].sum(), len(rows)))
    loss_sum, n_correct, count = (sum(t[i] for t in sums) for i in range(3))   # what evaluate reduces
    assert count == 5
    assert loss_sum / count == pytest.approx(loss.mean(), abs=1e-12)
    assert n_correct / count == pytest.approx(correct.mean(), abs=1e-12)
