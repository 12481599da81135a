"""Plain dataclasses for every config group (no Hydra here: `cli.py` registers them as schemas).

Field names are the keys users type (`model.hidden=[20,7,5]`, `optimizer.lr=0.01`, ...), so keep them.
Only str/int/float/bool/Optional/List fields, so OmegaConf can type-check them; this module imports
nothing but the standard library, so every schema is importable without NumPy or MLflow.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional


NAMES = ("flower", "moons", "circles", "blobs", "spirals", "synthetic", "digits", "breast_cancer",
         "catvnoncat", "football", "signs", "npz", "npy", "csv", "h5", "mat")


@dataclass
class DataConfig:
    # Which dataset: one of NAMES. Generated: flower moons circles blobs spirals synthetic;
    # scikit-learn's bundled digits, breast_cancer; course files catvnoncat football signs;
    # generic files npz npy csv h5 mat.
    name: str = "flower"
    # File or folder. Required for npz/npy/csv/h5/mat; course sets default to
    # $DDL_DATASETS/<assignment folder>; `synthetic` with a path reads the X.npy/y.npy folder
    # written by scripts/make_synthetic.py.
    path: Optional[str] = None
    # Fraction of the examples held out as the dev split (0 = no dev split). Ignored when the
    # source has its own dev split (npz X_dev/y_dev, npy X_dev.npy/y_dev.npy).
    dev_fraction: float = 0.2
    # Fraction held out as the test split (0 = none). Ignored when the source has its own test
    # split (catvnoncat, football, circles, npz X_test/y_test, h5/mat x_test_key/y_test_key).
    test_fraction: float = 0.0
    # Standardize inputs with the training split's mean and std (off: the course's defaults).
    normalize: bool = False
    # Split each class in the given fractions (classification only).
    stratify: bool = False
    # Seed of the train/dev/test split (the same split on every rank).
    split_seed: int = 0
    # Seed of a generated dataset (None: the course's, e.g. flower 1, moons 3, circles 1).
    seed: Optional[int] = None
    # Generated sets: number of examples (None: flower 400, moons/circles/spirals 300, ...).
    m: Optional[int] = None
    # Generated sets: number of features (blobs, synthetic only).
    n_x: Optional[int] = None
    # Number of classes: generated flower/blobs/spirals/synthetic; for files, None infers
    # max(label) + 1 and a value checks every label is in 0..classes-1.
    classes: Optional[int] = None
    # Generated sets: input noise std (flower/moons/circles/spirals), cluster std (blobs), or the
    # probability that a synthetic label is replaced by a random class.
    noise: Optional[float] = None
    # circles only: inner radius / outer radius (None: 0.8, sklearn's default the course keeps).
    factor: Optional[float] = None
    # synthetic: hidden units of the fixed random teacher network that labels the examples.
    teacher_hidden: int = 32
    # synthetic generated in memory: feature dtype ("float32" or "float64").
    dtype: str = "float64"
    # csv: name of the label column (every other column is a feature).
    label: str = "label"
    # h5/mat: keys of the features and labels (None: "X" and "y").
    x_key: Optional[str] = None
    y_key: Optional[str] = None
    # h5/mat: keys of the file's own test split (None: no own test split).
    x_test_key: Optional[str] = None
    y_test_key: Optional[str] = None
    # Files only: labels are float regression targets (m, k); n_classes becomes 0.
    regression: bool = False


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: Optional[str] = None  # None: sqlite:///<cwd>/mlflow.db, resolved when the config is built
    experiment: str = "ddl"
    run_name: Optional[str] = None
    parent_run_id: Optional[str] = None  # join an existing parent (SLURM arrays, other processes)
    bayes_error: float = 0.0
    bias_threshold: float = 0.05
    variance_threshold: float = 0.05
    # variance is also high when the held-out cost climbs this far (0.2: 20 %) above its lowest
    # while the train cost keeps falling (the network fitting noise; ddl.diagnosis)
    overfit_threshold: float = 0.2
    log_every: int = 1  # epochs
    # at most this many points per metric curve (0: no cap): a long run logs every k-th evaluation
    # (30,000 epochs at log_every 1: every 100th), so a run costs the SQLite store ~1 MB, not ~110 MB
    max_points: int = 300
    # an unreachable store at the start: fail (refuse before any work) | continue (untracked);
    # once a run is tracked, an outage never stops it (what it logs is kept and replayed)
    on_error: str = "fail"

    def __post_init__(self):
        # The one place the default store is decided: everything downstream gets a concrete URI.
        if not self.uri:
            self.uri = default_uri()


def default_uri() -> str:
    """$MLFLOW_TRACKING_URI when it is set (MLflow's own variable; a relative SQLite path is made
    absolute, so a sweep's processes all find the same file), else the embedded local store
    `sqlite:///<abs cwd>/mlflow.db`."""
    given = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if given.startswith("sqlite:///") and not given.startswith("sqlite:////"):
        return f"sqlite:///{(Path.cwd() / given[len('sqlite:///'):]).resolve()}"
    return given or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


@dataclass
class ModelConfig:
    hidden: List[int] = field(default_factory=lambda: [4])  # hidden layer sizes; [] = logistic/linear regression
    activation: str = "relu"        # sigmoid | tanh | relu | leaky_relu (hidden layers)
    slope: float = 0.01             # leaky ReLU slope
    output: str = "auto"            # auto | sigmoid | softmax | linear
    init: str = "he"                # zeros | random | he | xavier
    init_scale: float = 0.01        # scale of `random` init (the course's 0.01)
    init_seed: Optional[int] = None # seed of the initial weights (None: train.seed)
    init_stream: str = "default"    # default | course (np.random.seed + randn, as the assignments)
    keep_prob: Any = 1.0            # float, or a list with one value per hidden layer
    l2: float = 0.0                 # lambda of L2 regularization
    batchnorm: bool = False
    bn_eps: float = 1e-5
    bn_momentum: float = 0.9        # running average: r = momentum * r + (1 - momentum) * batch
    sync_bn: bool = True            # batch statistics over the global batch (all ranks)
    init_from: Optional[str] = None # a .npz checkpoint/final.npz to start from


@dataclass
class OptimizerConfig:
    name: str = "adam"              # gd | momentum | rmsprop | adam
    lr: float = 0.01
    beta: float = 0.9               # momentum
    beta1: float = 0.9              # Adam
    beta2: float = 0.999            # RMSprop / Adam
    epsilon: float = 1e-8


@dataclass
class ScheduleConfig:
    name: str = "constant"          # constant | inverse_time | exponential | sqrt | scheduled
    decay_rate: float = 1.0
    base: float = 0.95              # exponential
    k: float = 1.0                  # sqrt
    time_interval: int = 1000       # scheduled


@dataclass
class TrainConfig:
    epochs: int = 100
    batch_size: int = 64            # the GLOBAL mini-batch, split across ranks
    seed: int = 0
    dtype: str = "float32"          # float32 | float64
    patience: int = 0               # early stopping on dev cost; 0 = off
    min_delta: float = 0.0
    on_nonfinite: str = "stop"      # stop | skip: what every rank does when a step is NaN/Inf
    eval_every: int = 1             # epochs between train/dev evaluations (and metric records)
    eval_batch: int = 8192          # columns per evaluation chunk
    cache_mb: float = 512           # splits up to this size live on the device, transposed, once
    log_every: int = 0              # epochs between log lines; 0 = about 20 lines per run
    blas_threads: int = 0           # BLAS threads per rank; 0 = from the allocation (parallel/threads.py)
    progress: bool = True           # progress bar on rank 0 when attached to a terminal
    stall_timeout: float = 120.0    # seconds a step's allreduce may wait before the missing ranks
                                    # are named (0: never); far above any normal step
    on_stall: str = "wait"          # wait (warn again every stall_timeout) | abort (checkpoint, end)
    fused_update: str = "auto"      # auto | on | off: the update in one compiled pass (NumPy + Numba;
                                    # auto: where the saving beats ~0.8 s), bit-identical to the portable one
    compiled_pass: str = "auto"     # auto | on | off: a small dense network's forward, loss and backward
                                    # in one compiled call (NumPy + Numba; auto: runs of >= 20000 steps)
    shard_optimizer: str = "auto"   # auto | on | off: each rank updates its block of the parameters
                                    # (reduce-scatter + allgather; auto: >1 rank, NumPy, >= 65536 parameters)
    # auto | flat | node: ranks on several nodes sum within each node, then between one leader per
    # node (ddl/parallel/nodes.py); auto: where that wins (ddl/train/policy.py)
    reduction: str = "auto"
    shared_memory: str = "auto"     # auto | off: a sharded run with every rank on one node reduces and
                                    # gathers through memory every rank maps (MPI-3 shared windows)


@dataclass
class CheckpointConfig:
    every: int = 0                  # epochs between checkpoints; 0 = only at the end / on signals
    resume: str = "never"           # never | auto | <path to a checkpoint .npz>
    keep: int = 2                   # how many periodic checkpoints to keep


@dataclass
class SearchConfig:
    """Set by ddl's search sweeper for each trial (ddl/search/), never by hand: the study's
    journal file, its name, this job's trial number (-1: not a trial) and the pruner that judges
    it (hydra.sweeper's pruner, startup_trials, warmup_epochs)."""

    storage: str = ""
    study: str = ""
    trial: int = -1
    pruner: str = "hyperband"
    startup_trials: int = 4
    warmup_epochs: int = 10


@dataclass
class LRRangeConfig:
    """The learning-rate range test (ddl/runner/lr_range.py): instead of training, the rate grows
    geometrically from `start` to `end` over `steps` steps and the range where the loss falls is
    suggested."""

    enabled: bool = False
    start: float = 1e-6
    end: float = 10.0
    steps: int = 100


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    lr_range: LRRangeConfig = field(default_factory=LRRangeConfig)
    backend: str = "auto"           # auto | numpy | cupy | array_api_strict
    allreduce: str = "auto"         # auto | host | cuda_aware | nccl (how a GPU run's gradients are summed)
    out_dir: str = "runs/default"   # the run directory


# --- checks that need no data: every one runs before any file, directory or MLflow run ---------

def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def _rules(cfg: "Config") -> list[tuple[str, Any, bool, str]]:
    """(key, value, ok, what it must be) for each value with a range or a fixed set."""
    t, m, c, k, d = cfg.train, cfg.model, cfg.checkpoint, cfg.tracking, cfg.data
    keep = m.keep_prob if isinstance(m.keep_prob, (list, tuple)) else [m.keep_prob]
    r = cfg.lr_range
    return [
        ("lr_range.start", r.start, _number(r.start) and 0 < r.start < r.end if _number(r.end) else False,
         "a rate > 0 below lr_range.end"),
        ("lr_range.steps", r.steps, r.steps >= 10, "an integer >= 10"),
        ("train.epochs", t.epochs, t.epochs >= 1, "an integer >= 1"),
        ("train.batch_size", t.batch_size, t.batch_size >= 1, "an integer >= 1 (the global batch)"),
        ("train.dtype", t.dtype, t.dtype in ("float32", "float64"), "float32 or float64"),
        ("train.on_nonfinite", t.on_nonfinite, t.on_nonfinite in ("stop", "skip"), "stop or skip"),
        ("train.eval_every", t.eval_every, t.eval_every >= 1, "an integer >= 1"),
        ("train.patience", t.patience, t.patience >= 0, "an integer >= 0 (0: no early stopping)"),
        ("train.stall_timeout", t.stall_timeout, _number(t.stall_timeout) and t.stall_timeout >= 0,
         "seconds >= 0 (0: never)"),
        ("train.on_stall", t.on_stall, t.on_stall in ("wait", "abort"), "wait or abort"),
        ("train.fused_update", t.fused_update, t.fused_update in ("auto", "on", "off"), "auto, on or off"),
        ("train.compiled_pass", t.compiled_pass, t.compiled_pass in ("auto", "off") or t.compiled_pass == "on"
         and not (m.batchnorm or any(_number(p) and p < 1 for p in keep) or cfg.backend == "cupy"),
         "auto, on or off; on needs a plain dense network on the NumPy backend (no dropout: model.keep_prob "
         "1, no model.batchnorm)"),
        ("train.shard_optimizer", t.shard_optimizer, t.shard_optimizer in ("auto", "on", "off")
         and not (t.shard_optimizer == "on" and (t.on_stall == "abort" or cfg.backend != "numpy"
                                                 and cfg.backend != "auto")),
         "auto, on or off; on needs train.on_stall=wait (a stalled job's checkpoint is written by rank 0 "
         "alone, which holds only its block of the optimizer state) and the NumPy backend"),
        ("train.shared_memory", t.shared_memory, t.shared_memory in ("auto", "off"), "auto or off"),
        ("train.reduction", t.reduction, t.reduction in ("auto", "flat", "node"), "auto, flat or node"),
        ("model.l2", m.l2, _number(m.l2) and m.l2 >= 0, "a number >= 0"),
        ("model.keep_prob", m.keep_prob, all(_number(p) and 0 < p <= 1 for p in keep),
         "a number in (0, 1], or a list of them (one per hidden layer)"),
        ("checkpoint.every", c.every, c.every >= 0, "an integer >= 0 (0: at the end and on signals)"),
        ("checkpoint.keep", c.keep, c.keep >= 1, "an integer >= 1"),
        ("tracking.bayes_error", k.bayes_error, _number(k.bayes_error) and 0 <= k.bayes_error < 1,
         "a number in [0, 1) (an error rate)"),
        ("tracking.overfit_threshold", k.overfit_threshold,
         _number(k.overfit_threshold) and k.overfit_threshold >= 0, "a number >= 0 (a fraction: 0.2 is 20 %)"),
        ("tracking.log_every", k.log_every, k.log_every >= 1, "an integer >= 1"),
        ("tracking.max_points", k.max_points, k.max_points >= 0, "an integer >= 0 (0: no cap)"),
        ("tracking.on_error", k.on_error, k.on_error in ("fail", "continue"), "fail or continue"),
        ("data.dev_fraction", d.dev_fraction, _number(d.dev_fraction) and 0 <= d.dev_fraction < 1,
         "a number in [0, 1)"),
        ("data.test_fraction", d.test_fraction, _number(d.test_fraction) and 0 <= d.test_fraction < 1
         and d.dev_fraction + d.test_fraction < 1, "a number in [0, 1), with dev_fraction below 1"),
    ]


def check(cfg: "Config") -> list[str]:
    """What is wrong with cfg, one 'key=value: must be …' each (empty: nothing found)."""
    return [f"{key}={value!r}: must be {what}" for key, value, ok, what in _rules(cfg) if not ok]


# which schedules and optimizers read each of their settings (ddl/optim/schedules.py, optimizers.py)
USED_BY = {"schedule.decay_rate": ("schedule.name", ("inverse_time", "scheduled")),
           "schedule.time_interval": ("schedule.name", ("scheduled",)),
           "schedule.base": ("schedule.name", ("exponential",)),
           "schedule.k": ("schedule.name", ("sqrt",)),
           "optimizer.beta": ("optimizer.name", ("momentum",)),
           "optimizer.beta1": ("optimizer.name", ("adam",)),
           "optimizer.beta2": ("optimizer.name", ("rmsprop", "adam")),
           "optimizer.epsilon": ("optimizer.name", ("rmsprop", "adam"))}


def ignored(cfg: "Config", key: str) -> str:
    """Why `key` (a dotted setting) changes nothing in this config ('' when it may): a decay rate
    under a constant schedule, a scheduled decay whose interval is not shorter than the run, β
    under gradient descent."""
    if key not in USED_BY:
        return ""
    owner, users = USED_BY[key]
    section, field_name = owner.split(".")
    name = getattr(getattr(cfg, section), field_name)
    if name not in users:
        return f"{owner}={name} does not use it ({' and '.join(users)} {'does' if len(users) == 1 else 'do'})"
    s = cfg.schedule
    if key in ("schedule.decay_rate", "schedule.time_interval") and name == "scheduled" \
            and s.time_interval >= cfg.train.epochs:
        return (f"the scheduled decay first applies at epoch {s.time_interval} (schedule.time_interval) "
                f"and the run has {cfg.train.epochs} (train.epochs)")
    return ""


def unknown_keys(keys: List[str]) -> list[str]:
    """The dotted keys (from `+key=value` overrides) that no schema field has, each with the
    nearest known key when one is close ('optimizer.lrr: no such key (optimizer.lr?)')."""
    import dataclasses
    import difflib
    import typing

    out = []
    for key in keys:
        node: Any = Config
        for i, part in enumerate(key.split(".")):
            fields = {f.name: f for f in dataclasses.fields(node)} if dataclasses.is_dataclass(node) else {}
            if part not in fields:
                near = difflib.get_close_matches(part, fields, n=1)
                prefix = ".".join(key.split(".")[:i])
                hint = f" ({prefix + '.' if prefix else ''}{near[0]}?)" if near else ""
                out.append(f"{key}: no such key{hint}")
                break
            node = typing.get_type_hints(node).get(part)
    return out


# A URI's user information: everything between "scheme://" and the LAST "@" before the host (a
# password may hold a raw "@"), up to the first "/" or space.
_USER_INFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://)([^/\s]*)@")


def redact(text: str) -> str:
    """Credentials in URIs hidden, for everything ddl writes or logs (only the live MLflow client
    keeps the URI as given): 'http://me:secret@host' -> 'http://me:***@host', a password with
    an "@" in it too, and a token given as the user ('https://TOKEN@host') -> 'https://***@host'."""
    def hidden(m: re.Match) -> str:
        user, sep, _ = m.group(2).partition(":")
        return f"{m.group(1)}{user}:***@" if sep else f"{m.group(1)}***@"
    return _USER_INFO.sub(hidden, text)


class RedactingFilter:
    """A logging filter that applies `redact` to each record's message (handlers, train.log)."""

    def filter(self, record) -> bool:
        message = record.getMessage()
        hidden = redact(message)
        if hidden != message:
            record.msg, record.args = hidden, None
        return True
