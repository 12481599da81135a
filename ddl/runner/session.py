"""One `ddl-train` invocation on rank 0: its communicator, a sweep's MLflow parent run, its points
(a line as each starts and ends, the table at the end); how runs are named and what a search
sweeper minimizes."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional, Sequence

from ddl.config import Config, redact
from ddl.runner.names import compact
from ddl.parallel import get_comm, install_abort_handler
from ddl.runner.logs import setup_logging
from ddl.runner.recorder import Recorder

log = logging.getLogger("ddl")


class Session:
    """State of one `ddl-train` invocation on rank 0: the comm, how its runs are recorded, the
    sweep's parent run and points. total: the sweep's number of points when known; swept: the
    keys it varies; owner: every point runs in this process, so close() ends the parent (and
    the tracking worker ends it if this process dies first)."""

    def __init__(self, comm, total: Optional[int] = None, swept: Sequence[str] = (), owner: bool = False,
                 recorder: Optional[Recorder] = None):
        self.comm, self.parent, self.failed, self.sweep_cfg = comm, None, [], None
        self.total, self.swept, self.points, self.sweep_dir = total, tuple(swept), [], None
        self.owner, self.stopped = owner, False     # stopped: a point was stopped by a signal
        self.closes_parent = True                   # False: a shared search's last process does
        self.warned: set = set()                    # swept keys said to change nothing, once each
        self.recorder = recorder if recorder is not None or comm.rank != 0 else Recorder()

    def point_label(self, overrides: Sequence[str]) -> str:
        """A point's swept overrides as typed ('optimizer=adam schedule.decay_rate=0.3')."""
        chosen = [o for o in overrides if override_key(o) in self.swept] or list(overrides)
        return " ".join(chosen) or "(no overrides)"

    def _tag(self, index: int) -> str:
        return f"[{index + 1}/{self.total or '?'}]"

    def start_point(self, index: int, overrides: Sequence[str]) -> None:
        log.info("%s %s", self._tag(index), self.point_label(overrides))

    def end_point(self, index: int, overrides: Sequence[str], name: str, params: dict,
                  summary: Optional[dict]) -> None:
        """Record a point's outcome and say it in one short line."""
        from ddl.runner.sweep_summary import point_run  # noqa: PLC0415

        self.points.append(point_run(index, name or self.point_label(overrides), params, summary))
        if summary is None:
            self.failed.append(self.point_label(overrides))
            log.info("%s failed (its error is above)", self._tag(index))
        elif summary.get("stopped") == "pruned":
            log.info("%s pruned after epoch %d: %s", self._tag(index), summary["epochs_run"],
                     result_line(summary).split(": ", 1)[1])
        else:
            log.info("%s %s", self._tag(index), result_line(summary))

    def parent_for(self, cfg: Config, sweep_dir: str):
        """A sweep is one MLflow parent run with a nested child per point: its id."""
        if not cfg.tracking.enabled:
            return None
        if cfg.tracking.parent_run_id:
            return cfg.tracking.parent_run_id
        if self.parent is None:
            self.sweep_cfg = cfg.tracking
            key = str(Path(sweep_dir).resolve())   # jobs of one sweep launched elsewhere share it
            self.sweep_dir = Path(sweep_dir)
            self.parent = self.recorder.parent(cfg.tracking, self.parent_name(sweep_dir), key, guard=self.owner)
            log.info("sweep parent run %s in experiment %r", self.parent.run_id, cfg.tracking.experiment)
        return self.parent.run_id

    def parent_name(self, sweep_dir: str) -> str:
        """'sweep optimizer × decay_rate (4 points)'; the directory when the keys are unknown."""
        if not self.swept:
            return f"sweep {sweep_dir}"
        keys = " × ".join(k.rsplit(".", 1)[-1] for k in self.swept)
        return f"sweep {keys}" + (f" ({self.total} points)" if self.total else "")

    def close(self) -> None:
        """The invocation's end: a sweep's table best-first, its parent run's rollups, artifacts
        and status (unless the parent belongs to someone else: tracking.parent_run_id, or the
        points ran in other processes); then everything recorded is delivered."""
        try:
            self._close()
        finally:
            if self.recorder is not None:
                self.recorder.close()

    def _close(self) -> None:
        if not self.points:
            return
        from ddl.runner.sweep_summary import close_sweep, console_table  # noqa: PLC0415

        log.info("sweep results, best first:\n%s", console_table(self.points))
        if self.parent is not None and self.owner and self.closes_parent:
            stored = [p["status"] for p in self.points] + ["KILLED"] * self.stopped
            status = close_sweep(self.parent, self.sweep_dir, self.points, stored, expected=self.total)
            log.info("sweep parent run %s %s\n%s", self.parent.run_id, status,
                     dashboard_hint(self.sweep_cfg, self.parent.experiment_id))


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
    if not summary or "train" not in summary:      # failed, or a range test (no objective)
        return float("inf")
    for split in ("dev", "train"):
        v = summary[split]["error"]
        if v is not None and v == v:
            return float(v)
    return float(summary["train"]["cost"])


NOT_IN_NAMES = ("out_dir", "checkpoint.", "tracking.", "train.blas_threads", "train.progress",
                "hydra.", "backend", "allreduce", "search.")


def override_key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def run_name(overrides: Sequence[str], swept: Sequence[str] = ()) -> str | None:
    """A short name from the overrides that change the model, in compact form; in a sweep only
    the swept ones: ['optimizer=adam', 'schedule.decay_rate=0.3'] -> 'adam decay_rate=0.3'.
    The full list is kept as the run's ddl.overrides tag."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith(NOT_IN_NAMES)]
    chosen = [o for o in kept if override_key(o) in swept] or kept
    return " ".join(compact(o.lstrip("+~")) for o in chosen)[:250] or None


def result_line(summary: dict) -> str:
    """'done in 12.3 s: dev err 12.30 %, high variance' (held-out split: dev, else test)."""
    split = summary.get("diagnosis_split", "dev")
    error = summary.get(split, {}).get("error") if split in ("dev", "test") else None
    figure = f"{split} err {100 * error:.2f}%" if error is not None and not math.isnan(error) else \
        f"train err {100 * summary['train']['error']:.2f}%"
    return f"done in {summary.get('train_seconds', math.nan):.3g} s: {figure}, {summary['diagnosis']}"


def dashboard_hint(tracking_cfg, experiment_id: Optional[str]) -> str:
    """Where to look, a line each: the UI command for a local store, the link that opens ddl's
    view of the experiment (model-training mode), and the terminal's table."""
    from ddl.tracking.dashboard import ui_url, view_link  # noqa: PLC0415

    uri = redact(tracking_cfg.uri)
    lines = [f"  dashboard: mlflow ui --backend-store-uri {uri}"] if uri.startswith("sqlite") else []
    if experiment_id is not None:
        lines.append(f"  open:      {view_link(ui_url(uri), experiment_id)}")
    lines.append(f"  table:     ddl-report --experiment {tracking_cfg.experiment}")
    return "\n".join(lines)
