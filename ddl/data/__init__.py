"""Data: from a dataset name or a file to the mini-batch rows each rank trains on.

    cfg = DataConfig(name="flower")            # ddl/config.py: what to load, how to split
    ds = load_dataset(cfg)                     # dataset.py: Dataset(train, dev, test, ...)
    for idx in shard_batches(ds.train.m, 64, epoch, seed, rank, world_size):   # shard.py
        X, y = ds.train.take(idx)              # splits.py: rows (b, n_x), labels (b,)

generated.py (flower, moons, circles, blobs, spirals, synthetic), course.py (catvnoncat, football,
signs), files.py (.npz, .npy, .csv, .h5, .mat), normalize.py (training-split statistics),
errors.py (DataError and the input checks).
"""
from ddl.config import DataConfig
from ddl.data.dataset import Dataset, load_dataset
from ddl.data.errors import DataError
from ddl.data.normalize import Normalizer, fit_normalizer
from ddl.data.shard import epoch_batches, epoch_permutation, eval_shard, global_batches, n_steps, rank_slice, shard_batches
from ddl.data.splits import Split

__all__ = ["DataConfig", "DataError", "Dataset", "Normalizer", "Split", "epoch_batches", "epoch_permutation", "eval_shard", "fit_normalizer", "global_batches", "load_dataset",
           "n_steps", "rank_slice", "shard_batches"]
