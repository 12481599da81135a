"""The loop's types (a leaf: it imports nothing of the loop): what decides the rest of a run
(`TrainState`), the fixed parts of one run (`Setup`) and the edges the loop calls out to (`Hooks`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from ddl.backend import Backend
from ddl.config import TrainConfig
from ddl.data.feed import feeder
from ddl.nn import model
from ddl.optim.optimizers import Optimizer
from ddl.params import Flat


@dataclass
class TrainState:
    """All that decides the rest of a run: saving and loading it resumes bit-identically."""

    params: Flat
    opt_state: dict
    bn_state: Optional[dict] = None
    epoch: int = 0                  # next epoch to run
    step: int = 0                   # next step within `epoch`
    history: list = field(default_factory=list)
    best: Optional[dict] = None     # early stopping: {"cost", "epoch", "params": Flat, "bn_state"}
    bad_epochs: int = 0
    skipped_steps: int = 0
    stopped: str = ""               # "", "early", "signal", or what Hooks.stop_after said ("pruned")
    diverged: bool = False          # the train cost ran far above its start (see `diverging`)


@dataclass
class Hooks:
    """The edges the loop calls out to (tracking, progress, checkpoints); all optional."""

    on_start: Callable[[str], None] = lambda step_variant: None   # the step's collectives, as built
    on_epoch: Callable[[dict], None] = lambda record: None
    checkpoint: Callable[[TrainState, str], None] = lambda state, reason: None
    checkpoint_every: int = 0
    # after each evaluated epoch, on every rank: why the run stops there ("" goes on): a search's
    # pruner, which gives every rank rank 0's answer
    stop_after: Callable[[dict], str] = lambda record: ""


@dataclass
class Setup:
    """The fixed parts of one run, built once."""

    backend: Backend
    comm: object
    spec: model.Spec
    opt: Optimizer
    schedule: Callable[[int], float]
    cfg: TrainConfig
    l2: float = 0.0
    sync_bn: bool = True
    threads: Optional[int] = None                 # the BLAS threads given to this rank (None: as set)
    threads_why: str = ""                         # why that many (the run-directory line says it)
    feeders: dict = field(default_factory=dict)   # split -> Feeder, built on first use

    def batch(self, split, idx):
        """Rows `idx` of `split` as backend columns (X (n_x, b), y)."""
        f = feeder(self.feeders, self.backend, split, self.cfg.dtype, self.cfg.cache_mb)
        return f.batch(idx)
