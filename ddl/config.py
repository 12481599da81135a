"""Plain dataclasses for every config group (no Hydra here: `cli.py` registers them as schemas).

Field names are the keys users type (`model.hidden=[20,7,5]`, `optimizer.lr=0.01`, ...), so keep them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from ddl.data.config import DataConfig
from ddl.tracking import TrackingConfig


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
    blas_threads: int = 0           # BLAS threads per rank; 0 = leave as is (1 under MPI)
    progress: bool = True           # progress bar on rank 0 when attached to a terminal


@dataclass
class CheckpointConfig:
    every: int = 0                  # epochs between checkpoints; 0 = only at the end / on signals
    resume: str = "never"           # never | auto | <path to a checkpoint .npz>
    keep: int = 2                   # how many periodic checkpoints to keep


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    backend: str = "auto"           # auto | numpy | cupy | array_api_strict
    allreduce: str = "host"         # host | cuda_aware | nccl (GPU only)
    out_dir: str = "runs/default"   # the run directory
