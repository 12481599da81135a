#!/usr/bin/env python
"""A scaling model of ddl's data-parallel step, fitted on this machine and projected to clusters.

A step is its compute (forward and backward at the rank's local batch), the optimizer update of
this rank's block of the parameters (ddl shards the optimizer: 1/N of the update), and the
gradient reduction: a reduce-scatter plus an allgather, which move the bytes of a ring allreduce
of the gradient buffer (S bytes) over N ranks:

    T_ring(N, S) = 2 (N - 1) alpha + 2 (N - 1) / N * S / B

(latency alpha per message, bandwidth B). Not overlapped, as ddl runs. The "overlapped" rows are
analysis only: each layer's bucket sent as soon as backward has produced it (the last layer
first), so only what is left when backward ends adds to the step, assuming the collectives
progress on their own (NCCL, or MPI with a progress thread on a spare core). ddl had that as
train.overlap and removed it: MPICH on this 2-core machine does not progress on its own, and it
was slower wherever it was measured (README).

The script measures an MPI Allreduce over 2 ranks here, over shared memory and over TCP loopback
(UCX told to use TCP: a stand-in for a network), fits alpha and B to each, measures ddl's compute
and update per step at several local batch sizes (1 BLAS thread), checks the model against a
measured 2-rank ddl step, and projects weak and strong scaling efficiency at 8-1024 ranks on the
fitted links and on two stated interconnects. Backward's time per layer, for the overlap, is the
measured compute shared out in proportion to each layer's matrix-product flops.

    python scripts/scaling_model.py [--quick] [--markdown]

With --hosts it checks the model against hosts joined by real (shaped) links instead: on the
simulated cluster of scripts/cluster_up.sh (root), for each link rate in --links it reshapes the
links, fits alpha and B between two hosts (one rank each), and measures the 2-host x 2-rank step
of the big network (global batch 512, unsharded) with ddl's flat allreduce (MPICH's default
algorithm, modelled as a plain ring over the 4 ranks), with train.reduction=node (ddl's two
levels) and with MPICH's own two-level algorithm forced (its `smp` allreduce); the model predicts
each, and the projections to 1024 ranks are anchored on the fitted link. The cluster is left as
it was found.

    sudo bash scripts/cluster_up.sh 2 && python scripts/scaling_model.py --hosts [--links 10gbit,1gbit]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_step  # noqa: E402

TRANSPORTS = {"shared memory": {}, "TCP loopback": {"UCX_TLS": "tcp", "MPIR_CVAR_NOLOCAL": "1"}}
# Stated, not measured: typical achieved figures for MPI over these links.
LINKS = {"100 Gb/s InfiniBand (alpha 2 us, 11 GB/s)": (2e-6, 11e9),
         "25 Gb/s Ethernet (alpha 25 us, 2.8 GB/s)": (25e-6, 2.8e9)}
NETWORKS = {"big [784,1024,1024,10]": ([784, 1024, 1024, 10], "softmax", 256, 8192),
            "course cat [12288,20,7,5,1]": ([12288, 20, 7, 5, 1], "sigmoid", 64, 256)}
WORLDS = (8, 32, 128, 512, 1024)


def ring(n: int, nbytes: float, alpha: float, bandwidth: float) -> float:
    return 0.0 if n == 1 else 2 * (n - 1) * alpha + 2 * (n - 1) / n * nbytes / bandwidth


def worker(args) -> None:
    """Under mpiexec: median seconds of an in-place float32 Allreduce per size, as JSON."""
    from mpi4py import MPI

    world, out = MPI.COMM_WORLD, {}
    for nbytes in args.sizes:
        buf = np.ones(nbytes // 4, np.float32)
        for _ in range(3):
            world.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        times = []
        for _ in range(args.reps):
            world.Barrier()
            t0 = time.perf_counter()
            world.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            times.append(time.perf_counter() - t0)
        out[nbytes] = float(np.median(world.allreduce(np.median(times), op=MPI.MAX)))
    if world.Get_rank() == 0:
        print(json.dumps(out), flush=True)


def measure_allreduce(sizes, reps, extra_env, launcher=("mpiexec",)) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", **extra_env)
    cmd = [*launcher, "-n", "2", sys.executable, __file__, "--worker", "--reps", str(reps),
           "--sizes", *map(str, sizes)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=True)
    return {int(k): v for k, v in json.loads(out.stdout.strip().splitlines()[-1]).items()}


def fit(times: dict) -> tuple[float, float]:
    """(alpha, B) of T = 2 alpha + S / B (the ring over 2 ranks), least squares in relative error
    (small messages weigh as much as large ones)."""
    s = np.array(sorted(times), float)
    t = np.array([times[int(k)] for k in s])
    slope, intercept = np.polyfit(s, t, 1, w=1.0 / t)
    return max(intercept / 2, 0.0), 1.0 / slope


def compute_times(sizes, output, batches, steps) -> tuple[dict, float]:
    """(seconds per ddl step without its update at each local batch size, seconds of the whole
    update), 1 process (so no collective), 1 BLAS thread."""
    from threadpoolctl import threadpool_limits

    from ddl.parallel import SerialComm

    out, updates = {}, []
    with threadpool_limits(1):
        for b in batches:
            ds, setup, state, bufs = built = bench_step.build(b, SerialComm(), sizes=sizes, output=output)
            runs = [bench_step.time_steps(*built, steps, warmup=2) for _ in range(3)]
            updates.append(update_time(state, bufs, setup, steps))
            out[b] = float(np.median(runs))
    update = float(np.median(updates))
    return {b: t - update for b, t in out.items()}, update


def update_time(state, bufs, setup, steps: int) -> float:
    """Seconds of one optimizer update of the whole buffer (the step's update, alone)."""
    g, p = bufs.grads.buf, state.params.buf
    times = []
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        state.opt_state = bufs.update(p, g, state.opt_state, 1e-3, 256.0, bufs.mask)
        times.append(time.perf_counter() - t0)
    return float(np.median(times[2:]))


def step_time(net, compute: float, update: float, n: int, link, overlap: bool = False) -> float:
    """The model: compute + update / n + the reduction's exposed time (all of it, or with
    `overlap` what is left of the layer buckets' when backward ends)."""
    alpha, bw = link
    layers = [(net[i] * net[i + 1] + net[i + 1]) * 4 for i in range(len(net) - 1)]   # bytes, layer 1 first
    exposed = ring(n, sum(layers) + 20, alpha, bw)
    if overlap and n > 1:
        flops = [w / 4 for w in layers]
        fwd, bwd = sum(flops), [f * (2 if i > 0 else 1) for i, f in enumerate(flops)]  # dW, and dA above 1
        per_flop = compute / (fwd + sum(bwd))
        ready, free = 0.0, 0.0
        for i in reversed(range(len(layers))):        # the last layer's bucket first
            ready += bwd[i] * per_flop
            free = max(ready, free) + ring(n, layers[i], alpha, bw)
        exposed = free - ready + ring(n, 20, alpha, bw)  # ready: backward's end; then the tail
    return compute + update / n + exposed


def interpolate(table: dict, b: float) -> float:
    """Compute time at local batch b: log-log between measured sizes; below the smallest, its
    time (a step has fixed costs); above the largest, proportional."""
    bs = sorted(table)
    if b <= bs[0]:
        return table[bs[0]]
    if b >= bs[-1]:
        return table[bs[-1]] * b / bs[-1]
    return float(np.exp(np.interp(np.log(b), np.log(bs), np.log([table[k] for k in bs]))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--hosts", action="store_true",
                   help="check the model over the simulated cluster's shaped links (scripts/cluster_up.sh)")
    p.add_argument("--links", default="10gbit,1gbit", help="--hosts: link rates, as tc writes them")
    p.add_argument("--rounds", type=int, default=3, help="--hosts: interleaved rounds (medians)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--reps", type=int, default=20, help=argparse.SUPPRESS)
    p.add_argument("--sizes", type=int, nargs="*", default=[], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if args.hosts:
        return hosts(args)
    sizes = [2**k for k in range(12, 26, 2 if args.quick else 1)]          # 4 KiB .. 32 MiB
    links = {}
    for name, env in TRANSPORTS.items():
        times = measure_allreduce(sizes, 10 if args.quick else 30, env)
        links[f"{name} (fitted here)"] = fit(times)
        alpha, bw = links[f"{name} (fitted here)"]
        worst = max(abs(ring(2, s, alpha, bw) - t) / t for s, t in times.items() if s >= 2**16)
        print(f"allreduce over 2 ranks, {name}: alpha {alpha * 1e6:.1f} us, B {bw / 1e9:.2f} GB/s "
              f"(fit within {worst:.0%} from 64 KiB up; {len(times)} sizes 4 KiB-32 MiB)")
    links.update(LINKS)
    steps = 5 if args.quick else 15
    rows = []
    for label, (net, output, local, global_batch) in NETWORKS.items():
        nbytes = 4 * (sum(net[i] * net[i + 1] + net[i + 1] for i in range(len(net) - 1)) + 5)
        batches = sorted({max(1, global_batch // n) for n in (1, *WORLDS)} | {local, 32, 64, 128, 256})
        batches = [b for b in batches if b <= 8192 and (not args.quick or b in (local, 32, 256, 2048))]
        compute, update = compute_times(net, output, batches, steps)
        print(f"{label}: gradient buffer {nbytes / 2**20:.2f} MiB; update {update * 1e3:.2f} ms; ddl "
              "compute per step without it: "
              + ", ".join(f"b={b} {t * 1e3:.2f} ms" for b, t in sorted(compute.items())))
        t1 = interpolate(compute, global_batch) + update
        for link in links:
            for overlap in (False, True) if label.startswith("big") else (False,):
                how = ", overlapped*" if overlap else ""
                c = interpolate(compute, local)
                weak = [(c + update) / step_time(net, c, update, n, links[link], overlap) for n in WORLDS]
                strong = [t1 / (n * step_time(net, interpolate(compute, global_batch / n), update, n,
                                              links[link], overlap))
                          if global_batch >= n else None for n in WORLDS]  # None: under 1 example a rank
                rows.append((label, link, f"weak, local batch {local}{how}", weak))
                rows.append((label, link, f"strong, global batch {global_batch}{how}", strong))
    check(links["shared memory (fitted here)"])
    head = ["network", "link", "scaling"] + [f"N={n}" for n in WORLDS]
    if args.markdown:
        print("| " + " | ".join(head) + " |\n|" + " --- |" * len(head))
        for net, link, kind, eff in rows:
            print(f"| {net} | {link} | {kind} | " + " | ".join(shown(e) for e in eff) + " |")
    else:
        print("\nprojected efficiency (compute / step time; strong: T(1) / (N T(N))):")
        for net, link, kind, eff in rows:
            print(f"  {net:28} {link[:34]:34} {kind:25} " + " ".join(f"{shown(e):>5}" for e in eff))
        print(f"  ({' '.join(f'N={n}' for n in WORLDS)}; —: fewer examples than ranks)")
    print("* overlapped: analysis only, if the collectives progressed on their own (not so here; "
          "ddl does not build it)")


def shown(e) -> str:
    return "—" if e is None else f"{e:.0%}"


def check(shm) -> None:
    """The model against a measured 2-rank ddl step of the big network (global batch 512)."""
    alpha, bw = shm
    net, nbytes = NETWORKS["big [784,1024,1024,10]"][0], 4 * 1863695
    # through MPI (train.shared_memory=off), as the model's collectives: on one node ddl's default
    # shares the buffers instead, and no cluster of several nodes can
    measured = bench_step.run_ranks(512, 15, [2], shared_memory="off")[0]
    compute, update = compute_times(net, "softmax", [256], 10)
    model = step_time(net, compute[256], update, 2, shm)
    print(f"check, big net on 2 ranks x 1 thread, global batch 512, through MPI: "
          f"measured {measured['step_s'] * 1e3:.2f} "
          f"ms/step, model {model * 1e3:.2f} ms (compute {compute[256] * 1e3:.2f} + update/2 "
          f"{update / 2 * 1e3:.2f} + ring {ring(2, nbytes, alpha, bw) * 1e3:.2f}; the measured "
          f"reduce-scatter + allgather {measured['allreduce_s'] * 1e3:.2f})")


# ---- --hosts: the model against a measured multi-host step -------------------------------------
CLUSTER = Path(os.environ.get("DDL_CLUSTER_DIR", "/run/ddl-cluster"))
REPO = Path(__file__).resolve().parents[1]
SMP = {"MPIR_CVAR_ALLREDUCE_INTRA_ALGORITHM": "smp", "MPIR_CVAR_IALLREDUCE_INTRA_ALGORITHM": "sched_smp"}
VARIANTS = {   # (train.reduction, extra environment, model), measured in turn within every round
    "flat (MPICH's default algorithm)": ("flat", {}, "plain"),
    "train.reduction=node (ddl's two levels)": ("node", {}, "two-level"),
    "flat, MPICH's two-level algorithm (smp)": ("flat", SMP, "two-level"),
}


def two_level(nbytes: float, shm, link) -> float:
    """Within each host to one rank (2 ranks: one message), between the two hosts' ranks (the
    2-rank allreduce, fitted as 2 alpha + S / B), back within each host."""
    return 2 * (shm[0] + nbytes / shm[1]) + 2 * link[0] + nbytes / link[1]


def plain(nbytes: float, link, n: int = 4) -> float:
    """A ring over all n ranks: each of its 2 (n - 1) steps sends S / n over the link between
    the hosts (the slowest edge of every step)."""
    return ring(n, nbytes, link[0], link[1])


def hosts(args) -> None:
    wrapper = CLUSTER / "mpiexec"
    if not wrapper.is_file():
        sys.exit(f"scaling_model --hosts: no simulated cluster at {CLUSTER}: run "
                 "`sudo bash scripts/cluster_up.sh 2` first")
    was = dict(kv.split("=", 1) for kv in (CLUSTER / "config").read_text().split())
    up = ["bash", str(REPO / "scripts" / "cluster_up.sh"), "2"] + (["--slurm"] if was.get("slurm") == "1" else [])
    net, nbytes = NETWORKS["big [784,1024,1024,10]"][0], 4 * 1863695
    steps, reps = (5, 10) if args.quick else (10, 20)
    sizes = [2**k for k in range(16, 25, 2 if args.quick else 1)]                  # 64 KiB .. 16 MiB
    shm = fit(measure_allreduce(sizes, reps, {}))
    compute, update = compute_times(net, "softmax", [128], steps)
    # 4 ranks on this machine's cores: each computes at its share of them
    share = max(1.0, 4 / len(os.sched_getaffinity(0)))
    rows, fitted = [], {}
    try:
        for rate in args.links.split(","):
            subprocess.run([*up, "--link", rate], check=True, capture_output=True, text=True)
            link = fit(measure_allreduce(sizes, reps, {}, launcher=(str(wrapper), "-ppn", "1")))
            fitted[f"{rate} between simulated hosts (fitted here)"] = link
            got = {name: [] for name in VARIANTS}
            for _ in range(args.rounds):
                for name, (reduction, env, _) in VARIANTS.items():
                    got[name] += bench_step.run_ranks(512, steps, [4], shard="off", reduction=reduction,
                                                      launcher=(str(wrapper),), extra_env=env)
            models = {"plain": plain(nbytes, link), "two-level": two_level(nbytes, shm, link)}
            model = {name: models[kind] for name, (_, _, kind) in VARIANTS.items()}
            for name, runs in got.items():
                red = float(np.median([r["allreduce_s"] for r in runs]))
                step = float(np.median([r["step_s"] for r in runs]))
                spread = (min(r["step_s"] for r in runs), max(r["step_s"] for r in runs))
                rows.append((rate, link, name, model[name], red, (compute[128] + update) * share + model[name],
                             step, spread))
    finally:
        restore = [*up[:3], *(["--link", was["link"]] if was.get("link") else []), *up[3:]]
        subprocess.run(restore, check=False, capture_output=True)
    print(f"2 hosts x 2 ranks, big net {net}, global batch 512, unsharded, 1 BLAS thread a rank; "
          f"within a host (shared memory): alpha {shm[0] * 1e6:.1f} us, B {shm[1] / 1e9:.2f} GB/s; "
          f"compute + update at local batch 128: {(compute[128] + update) * 1e3:.1f} ms x {share:.0f} "
          f"(4 ranks on {len(os.sched_getaffinity(0))} cores); medians of {args.rounds} interleaved rounds")
    head = ["link", "fitted alpha, B", "reduction", "model ms", "measured ms", "measured/model",
            "model step ms", "measured step ms (min-max)", "measured/model"]
    print("| " + " | ".join(head) + " |\n|" + " --- |" * len(head))
    for rate, link, name, m_red, red, m_step, step, (lo, hi) in rows:
        print(f"| {rate} | {link[0] * 1e6:.0f} us, {link[1] / 1e9:.3f} GB/s | {name} | {m_red * 1e3:.1f} | "
              f"{red * 1e3:.1f} | {red / m_red:.2f} | {m_step * 1e3:.1f} | {step * 1e3:.1f} "
              f"({lo * 1e3:.0f}-{hi * 1e3:.0f}) | {step / m_step:.2f} |")
    c = compute[128]
    print("\nprojected efficiency of the big net over the fitted links (flat ring model, weak scaling at "
          "local batch 256 needs its compute: measured 1 process at 128, doubled):")
    for name, link in fitted.items():
        eff = [(2 * c + update) / step_time(net, 2 * c, update, n, link) for n in WORLDS]
        print(f"  {name:44} " + " ".join(f"N={n} {e:.0%}" for n, e in zip(WORLDS, eff)))


if __name__ == "__main__":
    main()
