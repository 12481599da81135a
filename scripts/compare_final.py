#!/usr/bin/env python
"""Compare two runs' final parameters: `compare_final.py A/final.npz B/final.npz [--rtol 1e-9]`.

Prints the largest relative difference ||a - b|| / ||b|| over the arrays (W1, b1, ...) and exits 1
when it exceeds --rtol, or when the files do not hold the same arrays.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def arrays(path: str) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: np.asarray(z[k], dtype=np.float64) for k in z.files if not k.startswith("meta")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--rtol", type=float, default=1e-9)
    args = p.parse_args()
    a, b = arrays(args.a), arrays(args.b)
    if sorted(a) != sorted(b) or not a:
        print(f"different arrays: {sorted(a)} vs {sorted(b)}")
        return 1
    worst = max(np.linalg.norm(a[k] - b[k]) / max(np.linalg.norm(b[k]), 1e-300) for k in a)
    print(f"max relative difference {worst:.3e} over {len(a)} arrays (tolerance {args.rtol:g})")
    return 0 if worst <= args.rtol else 1


if __name__ == "__main__":
    sys.exit(main())
