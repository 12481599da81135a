"""One `ddl-train` invocation on rank 0: its communicator, a sweep's MLflow parent run, the points
that failed; how runs are named and what a search sweeper minimizes."""
from __future__ import annotations

import logging
from pathlib import Path

from ddl.config import Config
from ddl.parallel import get_comm, install_abort_handler, setup_logging

log = logging.getLogger("ddl")


class Session:
    """State of one `ddl-train` invocation on rank 0: the comm, the sweep's parent run, failures."""

    def __init__(self, comm):
        self.comm, self.parent, self.failed, self.sweep_cfg = comm, None, [], None

    def parent_for(self, cfg: Config, sweep_dir: str):
        """A sweep is one MLflow parent run with a nested child per point."""
        if not cfg.tracking.enabled:
            return None
        if cfg.tracking.parent_run_id:
            return cfg.tracking.parent_run_id
        if self.parent is None:
            from ddl import tracking  # noqa: PLC0415

            self.sweep_cfg = cfg.tracking
            key = str(Path(sweep_dir).resolve())   # jobs of one sweep launched elsewhere share it
            self.parent = tracking.parent_for_key(cfg.tracking, f"sweep {sweep_dir}", key)
            log.info("sweep parent run %s in experiment %r", self.parent, cfg.tracking.experiment)
        return self.parent

    def close(self) -> None:
        if self.parent and self.sweep_cfg is not None and not self.sweep_cfg.parent_run_id:
            from ddl import tracking  # noqa: PLC0415

            tracking.end_run(self.sweep_cfg, self.parent, "FAILED" if self.failed else "FINISHED")



def standalone_session() -> Session:
    """A job started by a Hydra launcher in a process of its own (e.g. submitit on SLURM, every
    task running this function): build the communicator here; every rank has the config."""
    comm = get_comm("auto")
    install_abort_handler(comm)
    setup_logging(comm)
    return Session(comm)


def objective(summary: dict | None) -> float:
    """What a search sweeper (Optuna) minimizes: the final dev error (train error without a dev
    split); a failed point scores +inf."""
    if not summary:
        return float("inf")
    for split in ("dev", "train"):
        v = summary[split]["error"]
        if v is not None and v == v:
            return float(v)
    return float(summary["train"]["cost"])


NOT_IN_NAMES = ("out_dir", "checkpoint.", "tracking.", "train.blas_threads", "train.progress",
                "hydra.", "backend", "allreduce")


def run_name(overrides) -> str | None:
    """'optimizer=adam,schedule.decay_rate=0.3' from the overrides that change the model."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith(NOT_IN_NAMES)]
    return ",".join(kept)[:250] or None
