#!/usr/bin/env python
"""The optimizer update alone, on the big network's 1.86 M float32 parameters, cold cache:
ddl's fused update (on 1 and on 2 threads) and its portable one, PyTorch's fused Adam (1 and 2
threads; if installed: pip install 'ddl[bench]') and the memory-bandwidth bound (copies moving the
bytes one pass must move), interleaved rounds, medians with min-max.

    OMP_NUM_THREADS=1 python scripts/bench_update.py [--rounds 15]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from ddl.backend import get_backend
from ddl.optim import make_optimizer
from ddl.optim.fused import fused_update

N = 1_863_690                     # [784, 1024, 1024, 10]: weights and biases


def measure(rounds: int) -> dict:
    """name -> per-round seconds of each update, run in turn within every round."""
    rng = np.random.default_rng(0)
    P, G = rng.standard_normal(N).astype(np.float32), rng.standard_normal(N).astype(np.float32)
    opt = make_optimizer("adam")
    fused = fused_update(opt, get_backend("numpy"), N, "on")
    fused2 = fused_update(opt, get_backend("numpy"), N, "on", threads=2)
    state = {"fused": opt.init(P), "fused2": opt.init(P), "portable": opt.init(P)}
    junk = np.zeros(64 * 2**20 // 4, np.float32)      # 64 MiB, touched before each timing

    def timed(work, before=lambda: None):
        def run():
            before()
            np.add(junk, 1.0, out=junk)
            t0 = time.perf_counter()
            work()
            return time.perf_counter() - t0
        return run

    def portable():
        g = G / 256.0
        delta, state["portable"] = opt.update(g, state["portable"], 1e-3, donate=True)
        P.__isub__(delta)

    V, S = np.zeros(N, np.float32), np.zeros(N, np.float32)
    timers = {"ddl fused": timed(lambda: state.update(fused=fused(P, G, state["fused"], 1e-3, 256.0,
                                                                  P[:0], 0.0))),
              "ddl fused, 2 threads": timed(lambda: state.update(fused2=fused2(
                  P, G, state["fused2"], 1e-3, 256.0, P[:0], 0.0))),
              "ddl portable": timed(portable),
              "bandwidth bound": timed(lambda: (np.copyto(V, S), np.copyto(S, V), np.copyto(P, P)))}
    try:
        import torch
        tp = torch.from_numpy(P.copy())
        tp.grad = torch.from_numpy(G.copy())
        topt = torch.optim.Adam([tp], lr=1e-3, fused=True)
        topt.step()
        timers["torch fused Adam"] = timed(topt.step, lambda: torch.set_num_threads(1))
        timers["torch fused Adam, 2 threads"] = timed(topt.step, lambda: torch.set_num_threads(2))
    except ImportError:
        print("(torch not installed: pip install 'ddl[bench]' for its fused Adam)")
    try:
        return _rounds(timers, rounds)
    finally:
        if "torch fused Adam" in timers:
            torch.set_num_threads(1)


def _rounds(timers: dict, rounds: int) -> dict:
    for t in timers.values():                       # warm-up: compiled loops, first-touch pages
        t()
    got = {k: [] for k in timers}
    for _ in range(rounds):
        for k, t in timers.items():
            got[k].append(t())
    return got


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=15)
    args = p.parse_args()
    got = measure(args.rounds)
    base = np.median(got["ddl fused"])
    print(f"Adam update, {N} float32, cold cache, {args.rounds} interleaved rounds")
    print(f"  {'':28} {'median ms':>10} {'min-max ms':>15} {'this / ddl fused':>17}")
    for k, v in got.items():
        med = np.median(v)
        print(f"  {k:28} {med * 1e3:10.2f} {min(v) * 1e3:7.2f}-{max(v) * 1e3:<7.2f} {med / base:16.2f}x")


if __name__ == "__main__":
    main()
