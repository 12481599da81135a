"""`ddl-train` / `python -m ddl`: the only module that imports Hydra.

Under `mpiexec -n N`, rank 0 alone runs Hydra: it composes the config (or expands a sweep) and creates
each run directory, then broadcasts every job to the other ranks, which wait in `worker_loop`. A
composition error is printed once by Hydra on rank 0 and every rank exits with its status.
"""
from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import OmegaConf

from ddl import config as C
from ddl.dist import get_comm, install_abort_handler, setup_logging
from ddl.progress import hide_while_bar
from ddl.train import NonFiniteError

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
log = logging.getLogger("ddl")
EXIT_STOPPED = 75  # EX_TEMPFAIL: stopped by a signal after a checkpoint; rerun with checkpoint.resume=auto


def register_schemas() -> None:
    """Every config group validates against its dataclass: typos and wrong types fail fast."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=C.Config)
    for group, node in (("data", C.DataConfig), ("model", C.ModelConfig),
                        ("optimizer", C.OptimizerConfig), ("schedule", C.ScheduleConfig),
                        ("train", C.TrainConfig), ("tracking", C.TrackingConfig),
                        ("checkpoint", C.CheckpointConfig)):
        cs.store(group=group, name=f"base_{group}", node=node)


class Session:
    """State of one `ddl-train` invocation on rank 0: the comm, the sweep's parent run, failures."""

    def __init__(self, comm):
        self.comm, self.parent, self.failed, self.sweep_cfg = comm, None, [], None

    def parent_for(self, cfg: C.Config, sweep_dir: str):
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


SESSION: Session | None = None


def tracker_factory(cfg: C.Config, run_id=None, nested_in=None, tags=None):
    from ddl import tracking  # noqa: PLC0415 - MLflow only on rank 0, only when tracking

    params = tracking.flatten_config(asdict(cfg))
    return tracking.open_tracker(cfg.tracking, params, tags or {}, run_id=run_id, nested_in=nested_in)


def standalone_session() -> Session:
    """A job started by a Hydra launcher in a process of its own (e.g. submitit on SLURM, every
    task running this function): build the communicator here; every rank has the config."""
    comm = get_comm("auto")
    install_abort_handler(comm)
    setup_logging(comm)
    return Session(comm)


class SweepCallback(Callback):
    """Closes a sweep's parent run when a launcher ran its points in other processes."""

    def on_multirun_end(self, config, **kwargs) -> None:
        if (SESSION is not None and SESSION.parent) or not config.tracking.enabled:
            return                  # the points ran here: Session.close() ends the parent
        from ddl import tracking  # noqa: PLC0415

        cfg = OmegaConf.to_object(config.tracking)
        parent = cfg.parent_run_id or tracking.find_parent(
            cfg, str(Path(config.hydra.sweep.dir).resolve()))
        if parent and not cfg.parent_run_id:
            tracking.close_parent(cfg, parent)


def task(dcfg):
    """One job (a single run or one sweep point) on rank 0, or in a launcher's own process."""
    global SESSION
    if SESSION is None:
        SESSION = standalone_session()
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(dcfg, run_dir / "config.yaml", resolve=True)
    cfg = OmegaConf.to_object(dcfg)
    if cfg.tracking.run_name is None:  # name runs by what was overridden: readable side by side
        cfg.tracking.run_name = run_name(hc.overrides.task)
    parent = SESSION.parent_for(cfg, hc.sweep.dir) if multirun and SESSION.comm.rank == 0 else None
    job = {"op": "run", "cfg": cfg, "run_dir": str(run_dir), "parent": parent, "multirun": multirun}
    if SESSION.comm.size > 1:
        job = SESSION.comm.bcast(job, root=0)
    summary = execute(job, SESSION.comm)
    return objective(summary)


# Kept apart from `task` so launchers that pickle the task (submitit) find it by reference.
hydra_main = hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")(task)


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


def execute(job: dict, comm) -> dict | None:
    """Run one job on this rank; errors become one clear paragraph (traceback in the run's log)."""
    from ddl import experiment  # noqa: PLC0415

    run_dir = Path(job["run_dir"])
    handler = attach_file_log(run_dir) if comm.rank == 0 else None
    factory = tracker_factory if job["cfg"].tracking.enabled else None
    try:
        summary = experiment.run(job["cfg"], comm, run_dir, factory, job["parent"])
        if summary.get("stopped") == "signal":
            log.warning("stopped by a signal at epoch %d step %d; checkpoint written in %s. Rerun "
                        "with out_dir=%s checkpoint.resume=auto to continue.", summary["epoch"],
                        summary["step"], run_dir, run_dir)
            raise SystemExit(EXIT_STOPPED)
        return summary
    except NonFiniteError as e:            # decided from allreduced values: the same on every rank
        fail(job, comm, e, fatal=not job["multirun"], consistent=True)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as e:  # noqa: BLE001 - every other error is reported once and ends the job
        fail(job, comm, e, fatal=not job["multirun"] or comm.size > 1, consistent=False)
    finally:
        if handler:
            log.removeHandler(handler)
            handler.close()
    return None


def fail(job, comm, err: BaseException, fatal: bool, consistent: bool) -> None:
    """Print one paragraph; keep the traceback in the log. Under MPI an error seen by one rank only
    aborts every rank (they may be waiting in a collective), after giving rank 0 the first word."""
    keep_traceback(Path(job["run_dir"]), comm, err)
    where = f"[rank {comm.rank}] " if comm.size > 1 else ""
    msg = (f"ddl: error: {where}{type(err).__name__}: {err}\n"
           f"(run directory {job['run_dir']}; the full traceback is in its train.log)")
    if SESSION is not None:
        SESSION.failed.append(job["run_dir"])
    if comm.size > 1 and not consistent:
        if comm.rank != 0:
            time.sleep(1.0)  # a global error: let rank 0 report and abort for everyone
        print(msg, file=sys.stderr, flush=True)
        comm.abort(1)
        raise SystemExit(1)   # abort normally does not return
    if comm.rank == 0:
        print(msg, file=sys.stderr, flush=True)
    if fatal:
        raise SystemExit(1)


def keep_traceback(run_dir: Path, comm, err: BaseException) -> None:
    """The traceback goes to the run's log file, not the console."""
    name = "train.log" if comm.rank == 0 else f"train.rank{comm.rank}.log"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / name, "a") as f:
            f.write("".join(traceback.format_exception(err)))
    except OSError:
        traceback.print_exception(err)  # nowhere to keep it: show it rather than lose it


def attach_file_log(run_dir: Path) -> logging.Handler:
    run_dir.mkdir(parents=True, exist_ok=True)
    h = logging.FileHandler(run_dir / "train.log")
    h.setLevel(logging.DEBUG)
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(h)
    return h


def worker_loop(comm) -> int:
    """Ranks > 0: run each job rank 0 broadcasts, until told to exit (rank 0 decides what follows
    an error: the next sweep point or "exit")."""
    while True:
        job = comm.bcast(None, root=0)
        if job["op"] == "exit":
            return int(job["code"])
        try:
            execute(job, comm)
        except SystemExit:
            pass


def exit_code(e: SystemExit) -> int:
    if e.code is None:
        return 0
    return e.code if isinstance(e.code, int) else 1


def main() -> None:
    global SESSION
    comm = get_comm("auto")
    install_abort_handler(comm)
    for handler in setup_logging(comm).handlers:
        handler.addFilter(hide_while_bar)
    if comm.rank != 0:
        sys.exit(worker_loop(comm))
    register_schemas()
    SESSION, code = Session(comm), 0
    try:
        hydra_main()
    except SystemExit as e:
        code = exit_code(e)
    except BrokenPipeError:          # `ddl-train --help | head`: the reader left, nothing to say
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115
        code = 0
    except Exception as e:  # noqa: BLE001 - Hydra's usage errors, outside any job
        print(f"ddl-train: error: {e}\n(see ddl-train --help)", file=sys.stderr)
        code = 2
    finally:
        SESSION.close()
        if SESSION.failed and code == 0:
            code = 1
            print(f"ddl: {len(SESSION.failed)} sweep point(s) failed: {', '.join(SESSION.failed)}",
                  file=sys.stderr)
        if comm.size > 1:
            comm.bcast({"op": "exit", "code": code}, root=0)
    sys.exit(code)


if __name__ == "__main__":
    main()
