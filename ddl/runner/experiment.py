"""One experiment from a resolved config: data -> model -> train -> evaluate -> save -> track.

Knows nothing of Hydra (the CLI hands it a plain `Config`); MLflow is reached only through
`ddl.tracking`, and only rank 0 writes files or talks to the tracking store.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from ddl import checkpoint as ckpt
from ddl.parallel import StallPolicy, signals, threads
from ddl.backend import get_backend, gpu_status, set_blas_threads
from ddl.parallel.preflight import check_hosts_agree, check_launch
from ddl.config import Config
from ddl.data.dataset import load_dataset
from ddl.data.shard import widest_slice
from ddl.nn import model
from ddl.nn.init import init_bn_state, init_params
from ddl.optim.optimizers import make_optimizer
from ddl.optim.schedules import make_schedule
from ddl.params import Flat
from ddl.runner.hooks import make_hooks, resolve
from ddl.runner.run_dir import mark_refused
from ddl.runner.summary import StallEnding, current_rss_mb, finish, peak_rss_mb, track_failure, track_final
from ddl.train import Setup, TrainState, check_start, train

log = logging.getLogger("ddl")


def build_spec(cfg: Config, ds) -> model.Spec:
    """The network for this dataset: input size from the data, output resolved from `model.output`."""
    n_targets = 1 if ds.n_classes else int(np.prod(ds.train.y.shape[1:], dtype=int))
    output, n_out = model.resolve_output(cfg.model.output, ds.n_classes, n_targets)
    sizes = [ds.n_x, *cfg.model.hidden, n_out]
    return model.make_spec(sizes, cfg.model.activation, output, cfg.model.slope, cfg.model.keep_prob,
                           cfg.model.batchnorm, cfg.model.bn_eps, cfg.model.bn_momentum)


def build_optimization(cfg: Config):
    """(optimizer, schedule) from the config; errors name the config keys the user types."""
    o, s = cfg.optimizer, cfg.schedule
    try:
        opt = make_optimizer(o.name, **optimizer_hyper(cfg))
        schedule = make_schedule(s.name, o.lr, s.decay_rate, s.base, s.k, s.time_interval)
    except ValueError as e:
        raise ValueError(f"optimizer/schedule config (optimizer.name={o.name}, optimizer.lr={o.lr}, "
                         f"schedule.name={s.name}): {e}") from None
    return opt, schedule


def initial_state(cfg: Config, spec, backend, opt) -> TrainState:
    """Fresh parameters (or `model.init_from`), zero optimizer state, BN stats mean 0 / var 1."""
    layout, dtype = model.layout(spec), cfg.train.dtype
    if cfg.model.init_from:
        arrays, _ = ckpt.load_npz(cfg.model.init_from)
        params = ckpt.params_from(arrays, layout, backend, dtype, path=cfg.model.init_from)
    else:
        seed = cfg.train.seed if cfg.model.init_seed is None else cfg.model.init_seed
        host = init_params(spec, cfg.model.init, seed, cfg.model.init_scale, cfg.model.init_stream)
        params = Flat.from_numpy(layout, host, backend, dtype)
    return TrainState(params=params, opt_state=opt.init(params.buf),
                      bn_state=initial_bn(spec, backend, dtype))


def initial_bn(spec, backend, dtype):
    """Running statistics mean 0 / var 1 on the backend, or None without batch norm."""
    host = init_bn_state(spec)
    return {n: backend.asarray(v, dtype) for n, v in host.items()} or None


RESUME_KEYS = ("seed", "batch_size", "dtype", "network", "optimizer")


def stream_meta(cfg: Config, sizes) -> dict:
    """What fixes the rest of a run besides the arrays: the shuffle is default_rng([seed, epoch])
    and dropout keys are (seed, epoch, step), so (seed, epoch, step) is the whole RNG position.
    The world size is not here: any number of ranks continues the same run."""
    return {"seed": cfg.train.seed, "batch_size": cfg.train.batch_size, "dtype": cfg.train.dtype,
            "network": list(sizes), "optimizer": cfg.optimizer.name}


def check_resumable(meta: dict, now: dict, path) -> None:
    """Refuse to continue a checkpoint with settings that would silently change the run."""
    diff = [f"{k}: checkpoint {meta[k]!r}, config {now[k]!r}" for k in RESUME_KEYS
            if k in meta and meta[k] != now[k]]
    if diff:
        raise ckpt.CheckpointError(f"cannot resume from {path}: {'; '.join(diff)}. Use the "
                                   f"checkpoint's settings, or a new out_dir to start afresh.")


def optimizer_hyper(cfg: Config) -> dict:
    o = cfg.optimizer
    return {"beta": o.beta, "beta1": o.beta1, "beta2": o.beta2, "epsilon": o.epsilon}


def resume_path(cfg: Config, run_dir: Path):
    """`checkpoint.resume`: never | auto (newest in the run directory, if any) | a path."""
    r = cfg.checkpoint.resume
    if r in ("never", "", None):
        return None
    if r == "auto":
        return ckpt.newest_checkpoint(run_dir)
    return Path(r)


def run(cfg: Config, comm, run_dir, job: dict, recorder=None, body=None) -> dict:
    """Train one config on every rank of `comm`; rank 0 writes `run_dir` and records the run through
    `recorder` (a child of the job's `parent` run in a sweep, with its `tags`). Returns the summary.
    A tracked run that fails ends FAILED (KILLED on Ctrl-C) with its error as tags and its train.log
    uploaded; a rank other than 0 that fails alone leaves its error where the tracking worker finds it.
    `body(cfg, setup, ds, state, tracker, run_dir)`: what the run does once its parts are built and
    its tracking is open (default: train, finish, track; the learning-rate range test's instead)."""
    run_dir, rss_start = Path(run_dir), current_rss_mb()
    ending = StallEnding(comm, run_dir)      # what rank 0 does before a stall ends the job
    try:
        try:
            setup, ds, state, meta, how = start(cfg, comm, run_dir, recorder, ending)
            tracker = recorder.open(cfg, comm, setup.backend, how, meta.get("run_id"), job.get("parent"),
                                    job.get("tags") or {}, run_dir, job["id"]) if recorder else null_tracker(meta)
        except Exception as err:       # refused before any training: the directory says so
            if comm.rank == 0:
                mark_refused(run_dir, err)
            raise
        body = body or (lambda *parts: tracked_run(*parts, rss_start, ending))
        try:
            return body(cfg, setup, ds, state, tracker, run_dir)
        except BaseException as err:
            track_failure(tracker, comm, err, run_dir)
            raise
    finally:
        ending.unwatch()


def start(cfg: Config, comm, run_dir: Path, recorder, ending: StallEnding):
    """Everything before the first step, each refusal before any work: the process (threads,
    checks, backend), the data and network, the state (fresh or resumed), the run's communicator,
    built once (its backend's transport; its stall watch says where the run is, read from the
    state only then, and stops with the run: `ending`), and what the config asks of this data."""
    backend, how = prepare(cfg, comm, recorder)
    ds, spec, opt, schedule = build(cfg, comm)
    n, why = thread_choice(cfg, comm, spec, ds.train.m)      # a network too small to split: one thread
    if n and n > 1 and comm.local_size == 1 and not cfg.train.blas_threads:   # cores busy: fewer
        n, why = thread_choice(cfg, comm, spec, ds.train.m, threads.busy_cores())
    set_blas_threads(n)
    state, meta = start_state(cfg, spec, backend, opt, comm.rank == 0, run_dir)
    stall = StallPolicy(cfg.train.stall_timeout, cfg.train.on_stall,
                        where=lambda: f"epoch {state.epoch} step {state.step}")
    run_comm = comm.for_run(backend, cfg.allreduce, stall)
    ending.watching(run_comm)
    setup = Setup(backend, run_comm, spec, opt, schedule, cfg.train,
                  cfg.model.l2, cfg.model.sync_bn, threads=n, threads_why=why)
    check_start(ds, setup)
    return setup, ds, state, meta, how


def null_tracker(meta: dict):
    """Ranks other than 0, and library callers without a recorder: nothing is tracked."""
    from ddl.tracking.tracker import NullTracker  # noqa: PLC0415 - no MLflow in it

    return NullTracker(meta.get("run_id"))


def tracked_run(cfg: Config, setup: Setup, ds, state, tracker, run_dir: Path, rss_start: float,
                ending: StallEnding) -> dict:
    """The run once its parts are built and its tracking is open: train, finish, track."""
    comm, backend = setup.comm, setup.backend
    run_id = lambda: tracker.run_id       # noqa: E731 - asked when first needed (a checkpoint, the end)
    line = run_line(cfg, setup, ds, run_dir)
    hooks, write = make_hooks(cfg, comm, backend, run_dir, ds, run_id, tracker,
                              stream_meta(cfg, setup.spec.sizes),
                              on_start=lambda variant: log.info("%s%s)", line, variant))
    ending.arm(state, write, tracker)       # a stall that ends the job is caught on its thread
    state, seconds = train_tracked(ds, setup, state, hooks)
    if state.stopped == "signal":
        comm.close()
        tracker.end("KILLED")
        return {"stopped": "signal", "epoch": state.epoch, "step": state.step, "run_id": resolve(run_id)}
    memory = {"rss_start_mb": comm.allreduce_obj(rss_start, op="max"),
              "peak_rss_mb": comm.allreduce_obj(peak_rss_mb(), op="max")}
    summary = finish(cfg, setup, state, ds, run_dir, run_id, seconds, memory)
    comm.close()
    track_final(tracker, cfg, summary, state, run_dir)
    return summary


def run_line(cfg: Config, setup: Setup, ds, run_dir: Path) -> str:
    """The run-directory line rank 0 logs once the step is built, but for the step's collectives
    and the closing parenthesis."""
    comm = setup.comm
    n, why = setup.threads, setup.threads_why
    dev = ds.dev.m if ds.dev is not None else 0
    world, per_rank = f"world size {comm.size}", f"{n or 'as set'}, {why}"
    if comm.nodes.count > 1:       # collective: each host's threads (its cores, its environment)
        said = dict((host, f"{k or 'as set'}, {how}") for host, k, how in
                    comm.allreduce_obj([(comm.nodes.host_of[comm.rank], n, why)], op="sum"))
        world = f"world size {comm.size} on {comm.nodes.describe()}"
        per_rank = (per_rank.replace("on this node", "on each host") if len(set(said.values())) == 1
                    else "; ".join(f"{host}: {text}" for host, text in said.items()))
    return (f"run directory: {run_dir}  ({world}, backend {setup.backend.name}, network "
            f"{list(setup.spec.sizes)}, {ds.train.m} train / {dev} dev examples; BLAS threads per rank: "
            f"{per_rank}")


def thread_choice(cfg: Config, comm, spec=None, m: int = 0, busy=None) -> tuple:
    """(BLAS threads for this rank, or None: as the environment set them; why): from the allocation,
    and once the network (`spec`) and the training set's size `m` are known, from its work too;
    `busy`: the cores other work keeps busy (threads.busy_cores, sampled once a run)."""
    work = None
    if spec is not None:
        work = (spec.sizes, widest_slice(cfg.train.batch_size, comm.size, m))
    return threads.choose(cfg.train.blas_threads, comm.node_cpus, comm.local_rank, work=work, busy=busy)


def set_threads(configured: int, comm) -> None:
    """BLAS threads per rank from the allocation (ddl/parallel/threads.py; the run directory's log
    line says how many, and why); a warning when an explicit count oversubscribes the node."""
    n, _ = threads.choose(configured, comm.node_cpus, comm.local_rank)
    set_blas_threads(n)
    if comm.rank == 0:
        if n and threads.oversubscribes(n, comm.node_cpus):
            log.warning("train.blas_threads=%d on each of %d ranks needs more than this node's %d cores: "
                        "the ranks will slow each other down", n, len(comm.node_cpus),
                        len(frozenset().union(*comm.node_cpus)))


def prepare(cfg: Config, comm, recorder=None):
    """The process before any work: BLAS threads, launch and tracking-store checks, the backend."""
    set_threads(cfg.train.blas_threads, comm)
    gpus, why = gpu_status()
    for warning in check_launch(comm.size, comm.local_size, gpus, cfg.backend,
                                allreduce=cfg.allreduce, local_rank=comm.local_rank, gpu_reason=why):
        if comm.rank == 0:
            log.warning("preflight: %s", warning)
    how = recorder.check(cfg) if recorder is not None and cfg.tracking.enabled else None
    return get_backend(cfg.backend, comm.local_rank), how


def build(cfg: Config, comm):
    """The run's fixed parts (optimizer, schedule, network) and this rank's view of the data."""
    opt, schedule = build_optimization(cfg)          # before the data: fail fast on a typo
    ds = load_dataset(cfg.data, rank=comm.rank, world_size=comm.size)
    check_hosts_agree(comm, ds.where)
    return ds, build_spec(cfg, ds), opt, schedule


def newest_intact(paths, restore, speak: bool):
    """(path, restore(path)) of the first checkpoint in `paths` that loads; each that does not is
    named in a warning and skipped; (None, None) when there is none. When there are some and none
    loads, a CheckpointError: starting afresh over them is for the user to choose."""
    for path in paths:
        try:
            return path, restore(path)
        except ckpt.CheckpointError as err:
            if speak:
                log.warning("skipping checkpoint %s: %s; trying the next older one", path.name, err)
    if paths:
        raise ckpt.CheckpointError(
            f"checkpoint.resume=auto found {len(paths)} checkpoint(s) in {paths[0].parent} and none is "
            "intact (each is named above). To start afresh, give a new out_dir (or move them "
            "away); to try one anyway, name it: checkpoint.resume=<path>.")
    return None, None


def start_state(cfg: Config, spec, backend, opt, speak: bool, run_dir: Path) -> tuple[TrainState, dict]:
    """A fresh state, or the checkpoint `checkpoint.resume` names (with its metadata); `speak`:
    this rank says which (rank 0)."""
    state = initial_state(cfg, spec, backend, opt)
    found = resume_path(cfg, run_dir)
    if found is None:
        return state, {}

    def restore(path):
        return ckpt.restore(path, TrainState, model.layout(spec), model.bn_state_layout(spec),
                            backend, cfg.train.dtype)

    if cfg.checkpoint.resume == "auto":      # the newest intact one; a damaged one is skipped
        for stale in ckpt.remove_stale_temporaries(run_dir) if speak else ():
            log.info("removed %s: the temporary file of a checkpoint write a killed job left", stale.name)
        found, restored = newest_intact(ckpt.checkpoints_newest_first(run_dir), restore, speak)
        if found is None:
            return state, {}
        state, meta = restored
    else:                                    # a checkpoint named by path: it or an error
        state, meta = restore(found)
    check_resumable(meta, stream_meta(cfg, spec.sizes), found)
    if speak:
        log.info("resuming from %s at epoch %d, step %d", found, state.epoch, state.step)
    return state, meta


def train_tracked(ds, setup: Setup, state: TrainState, hooks) -> tuple[TrainState, float]:
    """`train` with the run's edges: history replayed to the tracker first (a job killed before its
    metrics were sent loses none), stop signals armed."""
    for record in state.history:
        hooks.on_epoch.track(record)
    signals.install_signal_handlers()
    t0 = time.perf_counter()
    try:
        state = train(ds, setup, state, hooks)
    finally:
        hooks.on_epoch.close()
    return state, time.perf_counter() - t0
