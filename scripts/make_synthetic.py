#!/usr/bin/env python
"""Write the `synthetic` dataset as OUT/X.npy (m, n_x) and OUT/y.npy (m,) int64, block by block.

Memory stays at one block (at most 8 MB of features) whatever m is; both files appear only once
fully written.
The rows equal load_dataset(DataConfig(name="synthetic", m=M, n_x=N, classes=C, seed=S, ...)).
Train from the files with data.name=npy (or synthetic) data.path=OUT.

    python scripts/make_synthetic.py --m 1000000 --n-x 256 --classes 10 --out /tmp/synth
"""
from __future__ import annotations

import argparse
import sys

from ddl.data.errors import DataError
from ddl.data.generated import write_synthetic


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, required=True, help="number of examples (rows)")
    ap.add_argument("--n-x", type=int, required=True, help="number of features")
    ap.add_argument("--classes", type=int, required=True, help="number of classes (>= 2)")
    ap.add_argument("--out", required=True, help="output folder (created if missing)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--noise", type=float, default=0.0, help="probability a label is random")
    ap.add_argument("--teacher-hidden", type=int, default=32)
    a = ap.parse_args(argv)
    try:
        write_synthetic(a.out, a.m, a.n_x, a.classes, seed=a.seed, noise=a.noise,
                        hidden=a.teacher_hidden, dtype=a.dtype)
    except DataError as e:
        print(f"make_synthetic: {e}", file=sys.stderr)
        return 2
    print(f"wrote {a.out}/X.npy ({a.m}, {a.n_x}) {a.dtype} and {a.out}/y.npy ({a.m},) int64")
    return 0


if __name__ == "__main__":
    sys.exit(main())
