"""A ~200 MB synthetic .npy pair is read for a whole epoch with flat memory.

A fresh subprocess loads it (NaN scan and normalization statistics streamed in chunks), gathers
every shard batch of one epoch for 2 ranks, and reports its peak RSS growth over the baseline
taken after imports; the growth must stay below 25% of the file size.
"""
import json
import subprocess
import sys


from ddl.data.generated import write_synthetic

M, N_X, CLASSES = 200_000, 256, 10  # float32: 204.8 MB

CHILD = r"""
import json, resource, sys
import numpy as np
from ddl.data import DataConfig, eval_shard, load_dataset, shard_batches

def peak():
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale

base = peak()
ds = load_dataset(DataConfig(name="npy", path=sys.argv[1], dev_fraction=0.1, normalize=True))
seen, total, labels = np.zeros(ds.train.m, bool), np.zeros(ds.n_x), np.zeros(ds.n_classes, int)
for rank in range(2):
    for idx in shard_batches(ds.train.m, 4096, epoch=0, seed=7, rank=rank, world_size=2):
        X, y = ds.train.take(idx)
        seen[idx] = True
        total += X.sum(axis=0, dtype=np.float64)
        labels += np.bincount(y, minlength=ds.n_classes)
dev_rows = sum(len(ds.dev.take(eval_shard(ds.dev.m, r, 2))[1]) for r in range(2))
grown = peak() - base
X, _ = ds.train.take([5, 0])
raw = np.load(sys.argv[1] + "/X.npy", mmap_mode="r")[ds.train.index[[5, 0]]]
print(json.dumps({"growth": grown, "all_seen": bool(seen.all()), "train_m": ds.train.m,
                  "dev_rows": dev_rows, "labels": int(labels.sum()),
                  "max_abs_mean": float(np.abs(total / ds.train.m).max()),
                  "row_err": float(np.abs(ds.normalizer.apply(raw) - X).max())}))
"""


def test_epoch_over_200mb_npy_keeps_memory_flat(tmp_path):
    write_synthetic(tmp_path, M, N_X, CLASSES, seed=1, dtype="float32")
    size = (tmp_path / "X.npy").stat().st_size
    assert size > 200e6
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], check=True,
                         capture_output=True, text=True)
    r = json.loads(out.stdout)
    assert r["all_seen"] and r["train_m"] == 180_000 and r["labels"] == 180_000
    assert r["dev_rows"] == 20_000
    assert r["max_abs_mean"] < 1e-3  # normalized with training statistics: every column ~0
    assert r["row_err"] < 1e-5  # take() returned the right rows (float32 tolerance)
    grown_mb, size_mb = r["growth"] / 1e6, size / 1e6
    assert r["growth"] < 0.25 * size, f"peak RSS grew {grown_mb:.0f} MB for a {size_mb:.0f} MB file"
