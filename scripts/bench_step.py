#!/usr/bin/env python
"""Training-step benchmark of the [784, 1024, 1024, 10] ReLU/softmax network (Adam, float32).

Two measurements, each against a baseline timed in the same run:

  python scripts/bench_step.py                 # 1 process, batch 256: ddl's full step vs the
                                               # bare matrix products of that step (GEMM floor)
  python scripts/bench_step.py --backend cupy  # the same on the GPU, beside the device's GEMM
                                               # floor and the NumPy step on this CPU
  python scripts/bench_step.py --ranks 1,2     # data-parallel, global batch 512, 1 BLAS thread
                                               # per rank: samples/s of N ranks vs 1 rank, and the
                                               # step's allreduce vs a bare mpi4py Allreduce

The data-parallel part runs this same script under `mpiexec -n N ... --worker`.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

SIZES = [784, 1024, 1024, 10]


def build(batch: int, comm, dtype="float32", seed=0, backend_name="numpy", sizes=SIZES,
          output="softmax", shard="auto", shared_memory="auto", reduction="auto", compiled="auto"):
    """A ddl Setup/state/batches for a ReLU network (`sizes`, default the benchmark's) on random data;
    `shard`, `shared_memory`, `reduction`, `compiled`: train.shard_optimizer (auto shards with more
    than one rank), train.shared_memory, train.reduction, train.compiled_pass."""
    from ddl.backend import get_backend
    from ddl.config import Config
    from ddl.data.dataset import Dataset
    from ddl.data.splits import Split
    from ddl.runner.experiment import initial_state
    from ddl.nn import model
    from ddl.optim.optimizers import make_optimizer
    from ddl.optim.schedules import make_schedule
    from ddl.parallel import StallPolicy
    from ddl.train import Setup, StepBuffers

    rng = np.random.default_rng(seed)
    m = batch * 8
    classes = sizes[-1] if output == "softmax" else 2
    X, y = rng.standard_normal((m, sizes[0])).astype(dtype), rng.integers(0, classes, m)
    ds = Dataset("bench", Split(X, y), None, None, classes, None, None, "random")
    cfg = Config()
    cfg.model.init, cfg.train.dtype, cfg.train.batch_size = "he", dtype, batch
    cfg.train.shard_optimizer, cfg.train.shared_memory = shard, shared_memory
    cfg.train.reduction, cfg.train.compiled_pass = reduction, compiled
    spec = model.make_spec(list(sizes), "relu", output)
    backend = get_backend(backend_name, comm.local_rank)
    stall = StallPolicy(cfg.train.stall_timeout, cfg.train.on_stall)     # as a run's: watched
    setup = Setup(backend, comm.for_run(backend, cfg.allreduce, stall), spec, make_optimizer("adam"),
                  make_schedule("constant", 1e-3), cfg.train)
    state = initial_state(cfg, spec, backend, setup.opt)
    bufs = StepBuffers.make(setup, state.params.layout)
    bufs.hold(state)                    # what train() does first (the block, the shared buffer)
    return ds, setup, state, bufs


def time_steps(ds, setup, state, bufs, steps: int, warmup: int = 3) -> float:
    """Seconds per data-parallel training step (this rank's slices of the global batches)."""
    from ddl.data.shard import shard_batches
    from ddl.train import train_step

    comm, cfg = setup.comm, setup.cfg
    batches = shard_batches(ds.train.m, cfg.batch_size, 0, 0, comm.rank, comm.size)
    def step(i):
        idx = batches[i % len(batches)]
        X, y = setup.batch(ds.train, idx)
        train_step(setup, state, bufs, X, y, idx, i, 1e-3)

    for i in range(warmup):
        step(i)
    setup.backend.synchronize()
    comm.barrier()
    comm.reset_counters()
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    setup.backend.synchronize()     # a GPU step is done when its kernels are
    comm.barrier()
    return (time.perf_counter() - t0) / steps


def gemm_floor(batch: int, steps: int, dtype="float32", backend=None, sizes=SIZES) -> float:
    """Seconds for the step's matrix products alone: L forward, L dW, L-1 dA_prev (8 for 3 layers)."""
    rng = np.random.default_rng(1)
    put = backend.asarray if backend is not None else np.asarray
    sync = backend.synchronize if backend is not None else (lambda: None)
    L = len(sizes) - 1
    W = [put(rng.standard_normal((sizes[i + 1], sizes[i])).astype(dtype)) for i in range(L)]
    A = [put(rng.standard_normal((sizes[i], batch)).astype(dtype)) for i in range(L + 1)]
    D = [put(rng.standard_normal((sizes[i + 1], batch)).astype(dtype)) for i in range(L)]

    def once():
        for i in range(L):
            W[i] @ A[i]
            D[i] @ A[i].T
        for i in range(1, L):
            W[i].T @ D[i]

    once()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        once()
    sync()
    return (time.perf_counter() - t0) / steps


def interleaved(timers: dict, rounds: int) -> dict:
    """name -> sorted per-round seconds, the timers run in turn within every round."""
    out = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            out[name].append(timer())
    return {name: sorted(v) for name, v in out.items()}


def single(args) -> None:
    from ddl.parallel import SerialComm

    built = {"numpy": build(args.batch, SerialComm())}
    timers = {"ddl step (NumPy, CPU)": lambda: time_steps(*built["numpy"], args.steps),
              "GEMM floor (CPU)": lambda: gemm_floor(args.batch, args.steps)}
    if args.backend == "cupy":
        built["cupy"] = build(args.batch, SerialComm(), backend_name="cupy")
        gpu = built["cupy"][1].backend
        timers = {"ddl step (CuPy, GPU)": lambda: time_steps(*built["cupy"], args.steps),
                  "GEMM floor (GPU)": lambda: gemm_floor(args.batch, args.steps, backend=gpu),
                  **timers}
    got = interleaved(timers, args.rounds)
    print(f"network {SIZES}, batch {args.batch}, float32, Adam, 1 process, BLAS threads "
          f"{blas_threads()}, {args.rounds} interleaved rounds of {args.steps} steps")
    print(f"  {'':24} {'median ms':>10} {'min-max ms':>17} {'samples/s':>10}")
    for name, v in got.items():
        med = v[len(v) // 2]
        print(f"  {name:24} {med * 1e3:10.3f} {v[0] * 1e3:8.3f}-{v[-1] * 1e3:<8.3f} "
              f"{args.batch / med:10.0f}")
    names = list(got)
    for step, floor in zip(names[::2], names[1::2]):
        print(f"  ratio {step} / {floor}: {median(got[step]) / median(got[floor]):.2f}x")
    if args.backend == "cupy":
        print(f"  ratio CPU step / GPU step: "
              f"{median(got[names[2]]) / median(got[names[0]]):.1f}x faster on the GPU")


def median(v) -> float:
    return float(np.median(v))


def worker(args) -> None:
    """Under mpiexec: time the data-parallel step and a bare Allreduce of the same buffer."""
    from mpi4py import MPI

    from ddl.parallel import get_comm

    comm = get_comm("mpi")
    ds, setup, state, bufs = build(args.batch, comm, shard=args.shard, shared_memory=args.shared_memory,
                                   reduction=args.reduction)
    step = time_steps(ds, setup, state, bufs, args.steps)
    times = setup.comm.times
    allreduce = (times.get("grad", 0.0) + times.get("params", 0.0)) / args.steps
    raw = np.zeros(bufs.reduction.ext.shape[0], dtype=np.float32)
    world = MPI.COMM_WORLD
    for _ in range(3):
        world.Allreduce(MPI.IN_PLACE, raw, op=MPI.SUM)
    world.Barrier()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        world.Allreduce(MPI.IN_PLACE, raw, op=MPI.SUM)
    bare = (time.perf_counter() - t0) / args.steps
    peak = world.allreduce(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, op=MPI.MAX)
    if comm.rank == 0:
        print(json.dumps({"ranks": comm.size, "step_s": step, "samples_per_s": args.batch / step,
                          "allreduce_s": allreduce, "bare_allreduce_s": bare,
                          "buffer_floats": int(raw.size), "peak_rss_mib": peak,
                          "step": bufs.reduction.describe or "one allreduce"}),
              flush=True)


def blas_threads() -> int:
    from threadpoolctl import threadpool_info

    return max((i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"), default=0)


def run_ranks(batch: int, steps: int, ranks, shard: str = "auto", shared_memory: str = "auto",
              reduction: str = "auto", launcher=("mpiexec",), extra_env=None) -> list:
    """One `mpiexec -n N` worker run per world size, 1 BLAS thread per rank: their JSON records
    (`shard`, `shared_memory`, `reduction`: train.shard_optimizer, train.shared_memory,
    train.reduction; `launcher`: the mpiexec command, e.g. a simulated cluster's)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               **(extra_env or {}))
    results = []
    for n in ranks:
        cmd = [*launcher, "-n", str(n), sys.executable, __file__, "--worker", "--batch", str(batch),
               "--steps", str(steps), "--shard", shard, "--shared-memory", shared_memory,
               "--reduction", reduction]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return results


def parallel(args) -> None:
    results = run_ranks(args.batch, args.steps, [int(r) for r in args.ranks.split(",")], args.shard,
                        args.shared_memory)
    base = results[0]
    print(f"network {SIZES}, global batch {args.batch}, float32, Adam, 1 BLAS thread per rank")
    print(f"{'ranks':>5} {'ms/step':>9} {'samples/s':>10} {'speed-up':>9} {'allreduce ms':>13} "
          f"{'share':>6} {'bare Allreduce ms':>18} {'ddl/bare':>9}")
    for r in results:
        print(f"{r['ranks']:>5} {r['step_s'] * 1e3:9.2f} {r['samples_per_s']:10.0f} "
              f"{r['samples_per_s'] / base['samples_per_s']:8.2f}x {r['allreduce_s'] * 1e3:13.3f} "
              f"{r['allreduce_s'] / r['step_s']:6.1%} {r['bare_allreduce_s'] * 1e3:18.3f} "
              f"{r['allreduce_s'] / max(r['bare_allreduce_s'], 1e-12):8.2f}x")
    print(f"(gradient buffer: {base['buffer_floats']} float32 = {base['buffer_floats'] * 4 / 2**20:.1f} MiB)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=None, help="(global) batch size")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=5, help="interleaved repetitions (medians)")
    p.add_argument("--backend", choices=["numpy", "cupy"], default="numpy",
                   help="cupy: time the GPU step too (1 process)")
    p.add_argument("--ranks", default=None, help="comma-separated world sizes, e.g. 1,2")
    p.add_argument("--shard", choices=["auto", "on", "off"], default="auto",
                   help="train.shard_optimizer of the data-parallel runs")
    p.add_argument("--shared-memory", choices=["auto", "off"], default="auto",
                   help="train.shared_memory of the sharded data-parallel runs")
    p.add_argument("--reduction", choices=["auto", "flat", "node"], default="auto",
                   help="train.reduction (ranks on several nodes)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if args.ranks:
        args.batch = args.batch or 512
        return parallel(args)
    args.batch = args.batch or 256
    return single(args)


if __name__ == "__main__":
    try:
        main()
    except RuntimeError as err:     # e.g. backend=cupy without a usable GPU: one paragraph
        sys.exit(f"bench_step: {err}")
