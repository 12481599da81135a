#!/usr/bin/env python
"""ddl's benchmark suite in one command: one table of ratios, each against a baseline measured in
the same run (interleaved rounds, medians with min-max). PyTorch and scikit-learn are the
baselines' extras (pip install -e '.[bench]'); a missing one leaves its rows out, saying so.
JAX's rows time the whole step under jax.jit in a worker process (its compile reported apart).

    python scripts/bench.py                 # the whole suite (about 10 minutes on 2 cores)
    python scripts/bench.py --quick         # a 2-minute subset
    python scripts/bench.py --only big,update --markdown   # some sections; a README-ready table

Sections (--only): big (the [784,1024,1024,10] step vs PyTorch eager, PyTorch with fused Adam, the
whole step jitted by JAX, a hand-written in-place NumPy step and the GEMM floor, batch 32-1024, 1
and 2 threads; page faults per step; at batch 256 ddl-train's whole loop too), small ([2,20,7,5,1]
vs PyTorch eager and fused, JAX and hand-written NumPy; ddl's step and ddl-train's whole loop), update (the Adam update vs
torch's fused Adam and the bandwidth bound), ranks (1 -> 2 -> 4 ranks, strong and weak scaling, vs
DDP/gloo, a hand-written NumPy + mpi4py loop and a bare mpi4py Allreduce of the same bytes; ddl's
default step (optimizer sharded, through shared memory) vs through MPI and unsharded;
peak memory per rank),
accuracy (wall time from process start to a dev accuracy vs scikit-learn's MLPClassifier, on
digits and a synthetic set), startup (the default experiment tracked vs tracking=off).

A ratio is baseline time / ddl time: above 1, ddl is faster (against a floor or bound, the share
of it that ddl reaches).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_step  # noqa: E402
import bench_update  # noqa: E402

BIG, SMALL = [784, 1024, 1024, 10], [2, 20, 7, 5, 1]
SECTIONS = ("big", "small", "update", "ranks", "accuracy", "startup")
ROWS: list[dict] = []          # every measured pair, printed as one table at the end


def row(section, workload, ddl, baseline, base, target=None, unit="ms", scale=1e3):
    """Record ddl's and a baseline's per-round figures (seconds) as one table row."""
    d, b = np.median(ddl), np.median(base)
    ROWS.append({"section": section, "workload": workload, "baseline": baseline,
                 "ddl": f"{d * scale:.3g} {unit} ({min(ddl) * scale:.3g}-{max(ddl) * scale:.3g})",
                 "base": f"{b * scale:.3g} {unit} ({min(base) * scale:.3g}-{max(base) * scale:.3g})",
                 "ratio": b / d, "target": target})


def note(section, workload, text):
    ROWS.append({"section": section, "workload": workload, "baseline": "", "ddl": text, "base": "",
                 "ratio": None, "target": None})


def interleaved(timers: dict, rounds: int) -> dict:
    """name -> per-round seconds; within every round the timers run in turn (one warm-up first)."""
    for t in timers.values():
        t()
    return bench_step.interleaved(timers, rounds)


@contextmanager
def threads(n: int):
    """n BLAS / OpenMP / PyTorch threads inside the block."""
    from threadpoolctl import threadpool_limits

    torch = optional("torch")
    before = torch.get_num_threads() if torch else None
    with threadpool_limits(n):
        if torch:
            torch.set_num_threads(n)
        try:
            yield
        finally:
            if torch:
                torch.set_num_threads(before)


def optional(name):
    try:
        return __import__(name)
    except ImportError:
        return None


# ---- the baselines' steps ----------------------------------------------------------------------

def torch_step(sizes, batch, steps, fused=False):
    """A timer: seconds per PyTorch eager training step of the same ReLU network, Adam, float32."""
    import torch

    torch.manual_seed(0)
    layers = []
    for i in range(len(sizes) - 1):
        layers += [torch.nn.Linear(sizes[i], sizes[i + 1]), torch.nn.ReLU()]
    net = torch.nn.Sequential(*layers[:-1])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, fused=fused or None)
    softmax = sizes[-1] > 1
    X = torch.randn(batch * 8, sizes[0])
    y = torch.randint(0, sizes[-1] if softmax else 2, (batch * 8,))
    loss_fn = torch.nn.CrossEntropyLoss() if softmax else torch.nn.BCEWithLogitsLoss()
    target = y if softmax else y.float().unsqueeze(1)

    def step(i):
        s = slice(i % 8 * batch, (i % 8 + 1) * batch)
        opt.zero_grad(set_to_none=True)
        loss_fn(net(X[s]), target[s]).backward()
        opt.step()

    def timer():
        t0 = time.perf_counter()
        for i in range(steps):
            step(i)
        return (time.perf_counter() - t0) / steps
    return timer


class HandStep:
    """The step written by hand in NumPy, in place: preallocated buffers, `out=` everywhere, ReLU
    hidden layers, a softmax or sigmoid output with its cross-entropy, Adam. The course's maths, none
    of ddl's checks (non-finite, stop flags, count/loss tail)."""

    def __init__(self, sizes, batch, seed=0, dtype=np.float32, reduce=None, world=1):
        """reduce: called on the flat gradient buffer between backward and the update (a data-
        parallel loop's Allreduce); world: ranks, so each rank's sum is over world x batch."""
        rng = np.random.default_rng(seed)
        self.L, self.m, self.reduce, self.scale = len(sizes) - 1, batch, reduce, 1 / (batch * world)
        self.W = [(rng.standard_normal((sizes[i + 1], sizes[i])) * np.sqrt(2 / sizes[i])).astype(dtype)
                  for i in range(self.L)]
        self.b = [np.zeros((n, 1), dtype) for n in sizes[1:]]
        self.Z = [np.empty((n, batch), dtype) for n in sizes[1:]]
        self.A = [np.empty((n, batch), dtype) for n in sizes[1:]]
        self.dZ = [np.empty((n, batch), dtype) for n in sizes[1:]]
        self.mask = [np.empty((n, batch), bool) for n in sizes[1:]]
        self.params = self.W + self.b
        self.flat = np.empty(sum(p.size for p in self.params), dtype)     # one buffer, views
        offsets = np.cumsum([0] + [p.size for p in self.params])
        self.grads = [self.flat[a:b].reshape(p.shape) for a, b, p in zip(offsets, offsets[1:], self.params)]
        self.v = [np.zeros_like(p) for p in self.params]
        self.s = [np.zeros_like(p) for p in self.params]
        self.tmp = [np.empty_like(p) for p in self.params]
        self.col = np.empty((1, batch), dtype)
        k = sizes[-1]
        self.X = rng.standard_normal((sizes[0], batch * 8)).astype(dtype)
        labels = rng.integers(0, k if k > 1 else 2, batch * 8)
        self.Y = (np.eye(k, dtype=dtype)[:, labels] if k > 1 else labels[None].astype(dtype))
        self.t = 0

    def step(self, i):
        L, m = self.L, self.m
        X, Y = self.X[:, i % 8 * m:(i % 8 + 1) * m], self.Y[:, i % 8 * m:(i % 8 + 1) * m]
        A = X
        for l in range(L):
            np.matmul(self.W[l], A, out=self.Z[l])
            self.Z[l] += self.b[l]
            if l < L - 1:
                np.maximum(self.Z[l], 0, out=self.A[l])
            elif self.Z[l].shape[0] > 1:          # softmax
                np.max(self.Z[l], axis=0, keepdims=True, out=self.col)
                np.subtract(self.Z[l], self.col, out=self.A[l])
                np.exp(self.A[l], out=self.A[l])
                np.sum(self.A[l], axis=0, keepdims=True, out=self.col)
                self.A[l] /= self.col
            else:                                  # sigmoid
                np.negative(self.Z[l], out=self.A[l])
                np.exp(self.A[l], out=self.A[l])
                self.A[l] += 1
                np.reciprocal(self.A[l], out=self.A[l])
            A = self.A[l]
        np.subtract(A, Y, out=self.dZ[L - 1])
        self.dZ[L - 1] *= self.scale
        for l in reversed(range(L)):
            prev = X if l == 0 else self.A[l - 1]
            np.matmul(self.dZ[l], prev.T, out=self.grads[l])
            np.sum(self.dZ[l], axis=1, keepdims=True, out=self.grads[L + l])
            if l:
                np.matmul(self.W[l].T, self.dZ[l], out=self.dZ[l - 1])
                np.greater(self.Z[l - 1], 0, out=self.mask[l - 1])
                self.dZ[l - 1] *= self.mask[l - 1]
        if self.reduce is not None:
            self.reduce(self.flat)
        self.t += 1
        c1, c2 = 1 - 0.9 ** self.t, 1 - 0.999 ** self.t
        for p, g, v, s, tmp in zip(self.params, self.grads, self.v, self.s, self.tmp):
            v *= 0.9
            np.multiply(g, 0.1, out=tmp)
            v += tmp
            s *= 0.999
            np.multiply(g, g, out=tmp)
            tmp *= 0.001
            s += tmp
            np.divide(s, c2, out=tmp)
            np.sqrt(tmp, out=tmp)
            tmp += 1e-8
            np.divide(v, tmp, out=tmp)
            tmp *= 1e-3 / c1
            p -= tmp

    def timer(self, steps):
        def run():
            t0 = time.perf_counter()
            for i in range(steps):
                self.step(i)
            return (time.perf_counter() - t0) / steps
        return run


class JaxStep:
    """A timer of the same network's whole training step under `jax.jit` (forward, backward and
    Adam written by hand, float32), in a worker process of its own: XLA sizes its thread pool when
    it loads, so each thread count is a process (1 thread: Eigen's pool off, one core). The worker
    compiles once (`compile_s`, reported apart from the step) and times `steps` steps each time the
    timer is called, so its rounds interleave with the others'."""

    def __init__(self, sizes, batch, steps, output, threads: int):
        env = dict(os.environ)
        if threads == 1:
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
        cmd = [sys.executable, __file__, "--jax-worker", json.dumps([sizes, batch, steps, output, threads])]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.compile_s = float(self._read())

    def _read(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the JAX worker ended (status {self.proc.wait()})")
        return line

    def __call__(self) -> float:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return float(self._read())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def jax_worker(spec: str) -> None:
    """--jax-worker: compile the step, say how long that took, then time it on every 'go'."""
    sizes, batch, steps, output, threads = json.loads(spec)
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:threads])
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    params = [(jnp.asarray(rng.standard_normal((sizes[i + 1], sizes[i])).astype(np.float32)
                           * np.float32(np.sqrt(2.0 / sizes[i]))),
               jnp.zeros((sizes[i + 1], 1), jnp.float32)) for i in range(len(sizes) - 1)]
    softmax = output == "softmax"
    labels = rng.integers(0, sizes[-1] if softmax else 2, batch * 8)
    X = rng.standard_normal((sizes[0], batch * 8)).astype(np.float32)
    Y = (np.eye(sizes[-1], dtype=np.float32)[:, labels] if softmax else labels[None].astype(np.float32))
    batches = [(jnp.asarray(X[:, i * batch:(i + 1) * batch]), jnp.asarray(Y[:, i * batch:(i + 1) * batch]))
               for i in range(8)]

    def loss(params, X, Y):
        A = X
        for W, b in params[:-1]:
            A = jax.nn.relu(W @ A + b)
        W, b = params[-1]
        Z = W @ A + b
        if softmax:
            return -jnp.sum(Y * jax.nn.log_softmax(Z, axis=0)) / X.shape[1]
        return jnp.sum(jnp.maximum(Z, 0) - Z * Y + jnp.log1p(jnp.exp(-jnp.abs(Z)))) / X.shape[1]

    @jax.jit
    def step(params, m, v, t, X, Y):
        g = jax.grad(loss)(params, X, Y)
        t = t + 1
        m = jax.tree_util.tree_map(lambda m, g: 0.9 * m + 0.1 * g, m, g)
        v = jax.tree_util.tree_map(lambda v, g: 0.999 * v + 0.001 * g * g, v, g)
        scale = 1e-3 * jnp.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        params = jax.tree_util.tree_map(lambda p, m, v: p - scale * m / (jnp.sqrt(v) + 1e-8), params, m, v)
        return params, m, v, t

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    state = (params, zeros, zeros, jnp.float32(0))
    t0 = time.perf_counter()
    state = jax.block_until_ready(step(*state, *batches[0]))
    print(time.perf_counter() - t0, flush=True)
    for line in sys.stdin:
        t0 = time.perf_counter()
        for i in range(steps):
            state = step(*state, *batches[i % 8])
        jax.block_until_ready(state)
        print((time.perf_counter() - t0) / steps, flush=True)


def ddl_step(sizes, batch, steps, output, faults=None, compiled="auto"):
    """A timer of ddl's own training step (bench_step's), counting minor page faults per step;
    compiled: train.compiled_pass (auto: as a long run would choose)."""
    from ddl.parallel import SerialComm

    built = bench_step.build(batch, SerialComm(), sizes=sizes, output=output, compiled=compiled)

    def run():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = bench_step.time_steps(*built, steps, warmup=1)
        if faults is not None:
            faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / (steps + 1))
        return t
    return run


# ---- sections ----------------------------------------------------------------------------------

def big(args):
    torch, jax = optional("torch"), optional("jax")
    cases = [(1, 256)] if args.quick else [(1, b) for b in (32, 64, 128, 256, 512, 1024)] + [(2, 256)]
    for n, batch in cases:
        steps = max(4, min(args.steps, 4096 // batch * 2))
        faults: list = []
        with threads(n):
            timers = {"ddl": ddl_step(BIG, batch, steps, "softmax", faults),
                      "floor": lambda: bench_step.gemm_floor(batch, steps),
                      "hand": HandStep(BIG, batch).timer(steps)}
            if torch:
                timers["torch"] = torch_step(BIG, batch, steps)
                timers["torch fused"] = torch_step(BIG, batch, steps, fused=True)
            if jax:
                timers["jax"] = JaxStep(BIG, batch, steps, "softmax", n)
            if (n, batch) == (1, 256):
                timers["ddl-train"] = cli_loop(BIG, batch, "softmax", 16 if args.quick else 80)
            got = interleaved(timers, args.rounds)
            if jax:
                timers["jax"].close()
        w = f"big net, batch {batch}, {n} thread{'s' * (n > 1)}"
        floor_target = {1: 0.90, 2: 0.85}[n] if batch == 256 else (0.85 if batch >= 128 else None)
        row("big", w, got["ddl"], "GEMM floor", got["floor"], floor_target)
        if torch:
            row("big", w, got["ddl"], "PyTorch eager", got["torch"],
                {1: 1.25, 2: 1.30}[n] if batch == 256 else None)
            row("big", w, got["ddl"], "PyTorch, fused Adam", got["torch fused"])
        row("big", w, got["ddl"], "hand-written NumPy", got["hand"])
        if "ddl-train" in got:
            row("big", w + ", ddl-train's whole loop", got["ddl-train"], "hand-written NumPy", got["hand"])
            if torch:
                row("big", w + ", ddl-train's whole loop", got["ddl-train"], "PyTorch, fused Adam",
                    got["torch fused"])
        if jax:
            row("big", w, got["ddl"], "JAX, whole step jitted", got["jax"])
            note("big", w, f"JAX's compile {timers['jax'].compile_s:.2f} s, apart from its step")
        note("big", w, f"{np.median(faults[1:]):.0f} minor page faults per ddl step")
    if not torch:
        note("big", "PyTorch rows", "left out: torch is not installed (pip install -e '.[bench]')")
    if not jax:
        note("big", "JAX rows", "left out: jax is not installed (pip install -e '.[bench]')")


def small(args):
    torch, jax = optional("torch"), optional("jax")
    steps = 200 if args.quick else 500
    with threads(1):
        timers = {"ddl": ddl_step(SMALL, 64, steps, "sigmoid"), "hand": HandStep(SMALL, 64).timer(steps),
                  "ddl portable": ddl_step(SMALL, 64, steps, "sigmoid", compiled="off"),
                  # a course-sized set (moons: 300 examples), 5 batches an epoch, 20,000 steps
                  "ddl-train": cli_loop(SMALL, 64, "sigmoid", 5, every=1000)}
        if torch:
            timers["torch"] = torch_step(SMALL, 64, steps)
            timers["torch fused"] = torch_step(SMALL, 64, steps, fused=True)
        if jax:
            timers["jax"] = JaxStep(SMALL, 64, steps, "sigmoid", 1)
        got = interleaved(timers, args.rounds)
        if jax:
            timers["jax"].close()
    w = "small net [2,20,7,5,1], batch 64, 1 thread"
    row("small", w, got["ddl"], "hand-written NumPy", got["hand"], 1.0, "us", 1e6)
    row("small", w + ", train.compiled_pass=off", got["ddl portable"], "hand-written NumPy", got["hand"],
        1.0, "us", 1e6)
    row("small", w + ", ddl-train's whole loop (320 examples)", got["ddl-train"], "hand-written NumPy", got["hand"],
        0.95, "us", 1e6)
    if torch:
        row("small", w, got["ddl"], "PyTorch eager", got["torch"], None, "us", 1e6)
        row("small", w, got["ddl"], "PyTorch, fused Adam", got["torch fused"], None, "us", 1e6)
    if jax:
        row("small", w, got["ddl"], "JAX, whole step jitted", got["jax"], 1.0, "us", 1e6)
        row("small", w + ", ddl-train's whole loop (320 examples)", got["ddl-train"], "JAX, whole step jitted", got["jax"],
            1.0, "us", 1e6)
        note("small", w, f"JAX's compile {timers['jax'].compile_s:.2f} s, apart from its step")


def cli_loop(sizes, batch, output, steps_per_epoch: int, epochs: int = 4, every: int = 1):
    """A timer of ddl-train's whole loop (`python -m ddl`, tracking off, 1 BLAS thread): seconds per
    step from the samples/s of its records after the first (each record's training time,
    evaluations apart: what the loop around the step costs, not Python's start-up, the first steps'
    warm-up or the evaluations), read from the run's final.npz. The training set holds
    `steps_per_epoch` batches; 4 records of `every` epochs each: long enough that
    train.fused_update and train.compiled_pass choose as a real run of that network would."""
    classes = sizes[-1] if output == "softmax" else 2
    args = ["data=synthetic", f"data.m={batch * steps_per_epoch}", f"data.n_x={sizes[0]}",
            f"data.classes={classes}", "data.dev_fraction=0", f"model.hidden=[{','.join(map(str, sizes[1:-1]))}]",
            "model.activation=relu", "model.init=he", "optimizer=adam", "optimizer.lr=0.001",
            f"train.batch_size={batch}", f"train.epochs={epochs * every}", f"train.eval_every={every}",
            "train.progress=false", "train.blas_threads=1", "tracking=off"]

    def run() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([sys.executable, "-m", "ddl", *args, f"out_dir={tmp}/run"], cwd=tmp,
                                 capture_output=True, text=True, timeout=600)
            if out.returncode != 0:
                raise RuntimeError(f"ddl-train failed: {out.stderr[-2000:]}")
            from ddl.checkpoint import load_npz

            history = load_npz(Path(tmp) / "run" / "final.npz")[1]["history"]
            return batch / float(np.median([r["samples_per_s"] for r in history[1:]]))
    return run


def update(args):
    with threads(1):
        got = bench_update.measure(5 if args.quick else 15)
    w = "Adam update, 1.86 M float32, cold cache"
    if "torch fused Adam" in got:
        row("update", w, got["ddl fused"], "torch fused Adam", got["torch fused Adam"], 1 / 1.2)
    row("update", w, got["ddl fused"], "bandwidth bound", got["bandwidth bound"])
    row("update", w, got["ddl fused"], "ddl portable update", got["ddl portable"])
    w2 = "the same, 2 threads"
    if "torch fused Adam, 2 threads" in got:
        row("update", w2, got["ddl fused, 2 threads"], "torch fused Adam, 2 threads",
            got["torch fused Adam, 2 threads"], 1 / 1.2)
    row("update", w2, got["ddl fused, 2 threads"], "ddl fused update, 1 thread", got["ddl fused"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_worker(args):
    """Under mpiexec (PMI_RANK/PMI_SIZE from MPICH's launcher): DDP over gloo, the big network,
    the same global batch; rank 0 prints seconds per step as JSON."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    rank, size = int(os.environ["PMI_RANK"]), int(os.environ["PMI_SIZE"])
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}", rank=rank,
                            world_size=size)
    torch.manual_seed(0)
    net = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(
        torch.nn.Linear(784, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1024), torch.nn.ReLU(),
        torch.nn.Linear(1024, 10)))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    local = args.batch // size
    X, y = torch.randn(local * 8, 784), torch.randint(0, 10, (local * 8,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(i):
        s = slice(i % 8 * local, (i % 8 + 1) * local)
        opt.zero_grad(set_to_none=True)
        loss_fn(net(X[s]), y[s]).backward()
        opt.step()

    for i in range(3):
        step(i)
    dist.barrier()
    t0 = time.perf_counter()
    for i in range(args.steps):
        step(i)
    dist.barrier()
    if rank == 0:
        print(json.dumps({"ranks": size, "step_s": (time.perf_counter() - t0) / args.steps}), flush=True)
    dist.destroy_process_group()


def mpi_hand_worker(args):
    """Under mpiexec: the hand-written step with one mpi4py Allreduce of its flat gradient buffer,
    the same global batch split over the ranks; rank 0 prints seconds per step as JSON."""
    from mpi4py import MPI
    from threadpoolctl import threadpool_limits

    world = MPI.COMM_WORLD
    size = world.Get_size()
    with threadpool_limits(1):
        hand = HandStep(BIG, args.batch // size, seed=world.Get_rank(), world=size,
                        reduce=lambda buf: world.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM))
        for i in range(3):
            hand.step(i)
        world.Barrier()
        t0 = time.perf_counter()
        for i in range(args.steps):
            hand.step(i)
        world.Barrier()
    if world.Get_rank() == 0:
        print(json.dumps({"ranks": size, "step_s": (time.perf_counter() - t0) / args.steps}), flush=True)


def run_mpi_hand(batch, steps, n) -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = ["mpiexec", "-n", str(n), sys.executable, __file__, "--mpi-hand-worker", "--batch", str(batch),
           "--steps", str(steps)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["step_s"]


def run_ddp(batch, steps, n) -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = ["mpiexec", "-n", str(n), sys.executable, __file__, "--ddp-worker", "--port", str(free_port()),
           "--batch", str(batch), "--steps", str(steps)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["step_s"]


def ranks(args):
    torch = optional("torch")
    worlds = [1, 2] if args.quick else [1, 2, 4]
    steps, batch, cores = (10 if args.quick else 30), 512, os.cpu_count() or 1
    got = {n: [] for n in worlds}
    ddp, hand = {n: [] for n in worlds if n > 1}, {n: [] for n in worlds if n > 1}
    variants = {"train.shared_memory=off": ("auto", "off"),      # sharded, through MPI
                "train.shard_optimizer=off": ("off", "auto")}
    # against the default (sharded, through shared memory on one node), 2 ranks
    other = {name: [] for name in variants}
    weak = {n: [] for n in worlds if n != 2}    # local batch 256 per rank (2 ranks: the strong runs)
    for _ in range(max(1, args.rounds // 2)):           # interleaved: every world size per round
        for n in worlds:
            got[n].append(bench_step.run_ranks(batch, steps, [n])[0])
            if n != 2:
                weak[n].append(bench_step.run_ranks(256 * n, steps, [n])[0])
            if n > 1:
                hand[n].append(run_mpi_hand(batch, steps, n))
            if torch and n > 1:
                ddp[n].append(run_ddp(batch, steps, n))
            for name, (shard, shm) in variants.items() if n == 2 else ():
                other[name].append(bench_step.run_ranks(batch, steps, [n], shard, shm)[0])
    one = [r["step_s"] for r in got[1]]
    for n in worlds[1:]:
        over = " (oversubscribed)" if n > cores else ""
        w = f"{n} ranks x 1 thread, global batch {batch}{over}"
        mine = [r["step_s"] for r in got[n]]
        row("ranks", w, mine, "1 rank (strong scaling)", one, 1.8 if n == 2 else None)
        row("ranks", w, mine, "hand-written NumPy + mpi4py loop", hand[n], 1.05 if n == 2 else None)
        if torch:
            row("ranks", w, mine, "DDP/gloo", ddp[n], 1.45 if n == 2 else None)
        row("ranks", w, [r["allreduce_s"] for r in got[n]], "bare mpi4py Allreduce, same bytes",
            [r["bare_allreduce_s"] for r in got[n]])
        for name, runs in other.items() if n == 2 else ():
            row("ranks", w, mine, f"ddl with {name}", [r["step_s"] for r in runs])
        # weak scaling: the same 256 examples per rank; the ratio is the efficiency (ideal 1.0)
        local = [r["step_s"] for r in (got[2] if n == 2 else weak[n])]
        row("ranks", f"{n} ranks x 1 thread, 256 per rank (global {256 * n}){over}", local,
            "1 rank, batch 256 (weak scaling)", [r["step_s"] for r in weak[1]])
    for n in worlds:
        note("ranks", f"{n} rank{'s' * (n > 1)}, peak memory",
             f"{max(r['peak_rss_mib'] for r in got[n]):.0f} MiB per rank (max over ranks)")


DDL_MLP = ["model=mlp", "model.hidden=[64]", "model.batchnorm=false", "optimizer=adam",
           "train.batch_size=64", "tracking=off", "train.progress=false"]
SKLEARN = """
import sys, time
from sklearn.neural_network import MLPClassifier
from ddl.config import DataConfig
from ddl.data.dataset import load_dataset
ds = load_dataset(DataConfig(name={name!r}))
(X, y), (Xd, yd) = (s.take(range(s.m)) for s in (ds.train, ds.dev))
clf = MLPClassifier(hidden_layer_sizes=(64,), solver="adam", batch_size=64, learning_rate_init=0.01,
                    alpha=0.0, random_state=0)
for epoch in range(1, 201):
    clf.partial_fit(X, y, classes=list(range(ds.n_classes)))
    if clf.score(Xd, yd) >= {target}:
        print(epoch)
        break
else:
    print(0)
"""


def epochs_to(name, target) -> int:
    """The first epoch at which ddl's dev accuracy reaches `target` (0: never, in 100)."""
    import ddl

    result = ddl.run(f"data={name}", "train.epochs=100", *DDL_MLP, quiet=True)
    return next((h["epoch"] + 1 for h in result.history if 1 - h["dev_error"] >= target), 0)


def wall(cmd, cwd) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, check=True)
    return time.perf_counter() - t0, out.stdout


def logged_at(log: Path, text: str) -> float:
    """The wall-clock time (seconds since the epoch) of the first train.log line holding `text`."""
    from datetime import datetime

    line = next(line for line in log.read_text().splitlines() if text in line)
    return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()


def accuracy(args):
    if optional("sklearn") is None:
        return note("accuracy", "time to accuracy", "left out: scikit-learn is not installed")
    sets = [("digits", 0.95)] + ([] if args.quick else [("synthetic", 0.93)])
    with tempfile.TemporaryDirectory() as tmp:
        for name, target in sets:
            epochs = epochs_to(name, target)
            ddl_cmd = ["ddl-train", f"data={name}", f"train.epochs={epochs}", *DDL_MLP]
            sk_cmd = [sys.executable, "-c", SKLEARN.format(name=name, target=target)]
            to_epoch, whole, theirs, sk_epochs = [], [], [], ""
            for _ in range(max(1, args.rounds // 2)):
                out_dir = Path(tmp) / f"{name}{len(whole)}"
                launched = time.time()
                whole.append(wall(ddl_cmd + [f"out_dir={out_dir}"], tmp)[0])
                reached = json.loads((out_dir / "summary.json").read_text())["dev"]["accuracy"]
                if reached < target:                        # the timed run must reach it too
                    sys.exit(f"bench: ddl reached {reached:.4f} < {target} on {name}")
                to_epoch.append(logged_at(out_dir / "train.log", f"epoch {epochs}/") - launched)
                seconds, sk_epochs = wall(sk_cmd, tmp)       # it stops as soon as it reaches it
                theirs.append(seconds)
            w = f"time to {target:.0%} dev accuracy, {name}, 64 hidden, Adam, batch 64"
            row("accuracy", w, to_epoch, "scikit-learn MLPClassifier", theirs, 1.0, "s", 1)
            note("accuracy", w, f"epochs: ddl {epochs}, scikit-learn {sk_epochs.strip()} (0: not reached); "
                                "ddl: process start to the train.log line of that epoch")
            row("accuracy", "the same, ddl's whole process (final.npz, 2 PNGs at its end)", whole,
                "scikit-learn MLPClassifier", theirs, None, "s", 1)


def startup(args):
    with tempfile.TemporaryDirectory() as tmp:
        wall(["ddl-train", "train.progress=false"], tmp)                    # creates the store once
        tracked, untracked = [], []
        for _ in range(max(2, args.rounds // 2)):
            tracked.append(wall(["ddl-train", "train.progress=false"], tmp)[0])
            untracked.append(wall(["ddl-train", "train.progress=false", "tracking=off"], tmp)[0])
    row("startup", "the default experiment, whole process", tracked, "the same, tracking=off", untracked,
        1 / 1.5, "s", 1)


# ---- the table ---------------------------------------------------------------------------------

def verdict(r) -> str:
    if r["ratio"] is None or r["target"] is None:
        return ""
    return f"{'met' if r['ratio'] >= r['target'] - 1e-12 else 'NOT met'} (>= {r['target']:.2f})"


def print_table(markdown: bool) -> None:
    if markdown:
        print("| workload | ddl | baseline | baseline's | baseline / ddl | target |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in ROWS:
            ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else ""
            cells = (r["workload"], r["ddl"], r["baseline"], r["base"], ratio, verdict(r))
            print("| " + " | ".join(cells) + " |")
        return
    last = None
    for r in ROWS:
        if r["section"] != (last or {}).get("section"):
            print(f"\n[{r['section']}]")
        if r["workload"] != (last or {}).get("workload"):
            print(f"  {r['workload']}")
        last = r
        if r["ratio"] is None:
            print(f"    {r['ddl']}")
            continue
        print(f"    vs {r['baseline']}: {r['ratio']:.2f}x  {verdict(r)}\n"
              f"       ddl {r['ddl']}, {r['base']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a 2-minute subset")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5, quick 3)")
    p.add_argument("--steps", type=int, default=20, help="steps per round (big net)")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mpi-hand-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--jax-worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=512, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.ddp_worker:
        return ddp_worker(args)
    if args.mpi_hand_worker:
        return mpi_hand_worker(args)
    if args.jax_worker:
        return jax_worker(args.jax_worker)
    args.rounds = args.rounds or (3 if args.quick else 5)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        sys.exit(f"bench: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    t0 = time.perf_counter()
    print(f"ddl benchmarks: {os.cpu_count()} cores, {args.rounds} interleaved rounds, medians (min-max)"
          f"{', quick' if args.quick else ''}", flush=True)
    for name in chosen:
        t = time.perf_counter()
        globals()[name](args)
        print(f"  {name}: {time.perf_counter() - t:.0f} s", flush=True)
    print_table(args.markdown)
    print(f"\n(total {time.perf_counter() - t0:.0f} s; ratio = baseline time / ddl time)")


if __name__ == "__main__":
    main()
