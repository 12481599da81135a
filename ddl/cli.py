"""`ddl-train` / `python -m ddl`: the only module that imports Hydra.

Under `mpiexec -n N`, rank 0 alone runs Hydra: it composes the config (or expands a sweep) and creates
each run directory, then broadcasts every job to the other ranks, which wait in `worker_loop`. A
composition error is printed once by Hydra on rank 0 and every rank exits with its status.
"""
from __future__ import annotations

import logging
import os
import secrets
import sys
import warnings
from pathlib import Path
from typing import Sequence

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import OmegaConf

from ddl import config as C
from ddl.config import redact
from ddl.parallel import MPIUnavailable, get_comm, install_abort_handler, shared_memory_problem
from ddl.runner.progress import hide_while_bar
from ddl.runner.job import execute, exit_code, worker_loop
from ddl.runner.logs import setup_logging
from ddl.runner.recorder import Recorder, job_id
from ddl.runner.run_dir import earlier_point, make_run_dir, out_dir_problem, remove_hydras_leftovers
from ddl.runner.session import Session, objective, run_name, standalone_session
from ddl.runner import slurm_launcher
from ddl.runner.startup import first_rank, install_startup_handlers

# conf/ at the top of the repository is installed as the package ddl.conf (see pyproject.toml).
CONF_PATH = "pkg://ddl.conf"
log = logging.getLogger("ddl")


SUFFIX_ENV = "DDL_RUN_SUFFIX"


def run_suffix() -> str:
    """4 hex digits, one per invocation, in out_dir and the sweep directory (`${ddl_suffix:}`):
    runs and sweeps started in the same second never share a directory. Kept in the environment,
    so the processes an invocation starts (a launcher's jobs) resolve the same directory."""
    return os.environ.setdefault(SUFFIX_ENV, secrets.token_hex(2))


OmegaConf.register_new_resolver("ddl_suffix", run_suffix, replace=True)


def register_schemas() -> None:
    """The primary config's first default is this schema, so every group merged into it is
    validated against its dataclass: typos and wrong types fail fast. Groups get no schema
    nodes of their own, which would show up as options (`data=base_data`) in --help."""
    ConfigStore.instance().store(name="base_config", node=C.Config)


def compose(overrides: Sequence[str]) -> tuple[C.Config, str]:
    """The config `ddl-train overrides...` would run, composed with Hydra's compose API (ddl.run
    in a notebook), and its resolved YAML for the run directory. A bad override or value is a
    ValueError in one paragraph, before any work."""
    from hydra import compose as hydra_compose, initialize_config_module  # noqa: PLC0415

    from hydra.core.global_hydra import GlobalHydra  # noqa: PLC0415
    from hydra.initialize import get_gh_backup, restore_gh_from_backup  # noqa: PLC0415

    register_schemas()
    suffix = os.environ.get(SUFFIX_ENV)   # this process is not an invocation: leave none behind
    outer = get_gh_backup() if GlobalHydra.instance().is_initialized() else None
    if outer is not None:                 # the caller's own Hydra: set aside, given back below
        GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="ddl.conf", version_base="1.3"):
            dcfg = hydra_compose(config_name="config", overrides=list(overrides))
        cfg, yaml_text = OmegaConf.to_object(dcfg), redact(OmegaConf.to_yaml(dcfg, resolve=True))
    except Exception as err:  # noqa: BLE001 - Hydra's and OmegaConf's errors, and the schema's
        cause = f" ({err.__cause__})" if err.__cause__ and str(err.__cause__) not in str(err) else ""
        raise ValueError(" ".join(f"bad config: {err}{cause}".split())) from None
    finally:
        if suffix is None:
            os.environ.pop(SUFFIX_ENV, None)
        if outer is not None:
            restore_gh_from_backup(outer)
    problems = config_problems(cfg, overrides)
    if problems:
        raise ValueError(problems)
    return cfg, yaml_text


def sweep_shape(argv) -> tuple[int | None, tuple[str, ...]]:
    """(number of points, swept keys) of a basic sweep typed on the command line: `a=1,2 b=x,y`
    -> (4, ("a", "b")). (None, keys) when a key is swept by a range Hydra cannot count, and
    (None, ()) when the overrides do not parse (Hydra reports that itself)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides([a for a in argv if not a.startswith("-")])
    except Exception:  # noqa: BLE001 - Hydra will say what is wrong with them
        return None, ()
    swept = [o for o in parsed if o.is_sweep_override()]
    total: int | None = 1
    for o in swept:
        try:
            total *= len(list(o.sweep_string_iterator()))
        except Exception:  # noqa: BLE001 - an interval (a search sweeper's) has no count
            total = None
            break
    return (total if swept else None), tuple(o.key_or_group for o in swept)


class SweepCallback(Callback):
    """Closes a sweep's parent run when a launcher ran its points in other processes (Hydra's own
    launcher runs them here, and the session ends the parent)."""

    def on_multirun_end(self, config, **kwargs) -> None:
        in_process = OmegaConf.select(config, "hydra.launcher._target_", default="").endswith("BasicLauncher")
        search = OmegaConf.select(config, "hydra.sweeper._target_", default="") == SEARCH
        if not in_process and not search:      # a launcher's jobs: the table, as a sweep here prints it
            from ddl.runner.sweep_summary import console_table  # noqa: PLC0415

            swept = sweep_shape(sys.argv[1:])[1]
            points = slurm_launcher.points_in(Path(config.hydra.sweep.dir), lambda o: run_name(o, swept))
            if points:
                log.info("sweep of %d points (%s):\n%s", len(points), config.hydra.sweep.dir,
                         console_table(points))
        if (in_process and not search) or not config.tracking.enabled:
            return
        from ddl import tracking  # noqa: PLC0415
        from ddl.runner.session import dashboard_hint  # noqa: PLC0415
        from ddl.runner.sweep_summary import close_stored_sweep  # noqa: PLC0415

        cfg = OmegaConf.to_object(config.tracking)
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        if search:
            from ddl.search.sweeper import others_running  # noqa: PLC0415

            if others_running(config.hydra.sweeper, sweep_dir):
                return
        parent = cfg.parent_run_id or tracking.find_parent(cfg, str(sweep_dir))
        if parent and not cfg.parent_run_id:
            status, experiment_id = close_stored_sweep(cfg, parent, sweep_dir)
            log.info("sweep parent run %s %s\n%s", parent, status, dashboard_hint(cfg, experiment_id))


class Task:
    """What Hydra runs for each job (a single run or one sweep point), on rank 0 with the
    invocation's session. A launcher that runs jobs in processes of their own (submitit on SLURM)
    pickles it: there it becomes a task with a session of that process (`__reduce__`)."""

    def __init__(self, session: Session):
        self.session = session

    def __reduce__(self):
        return (standalone_task, ())

    def __call__(self, dcfg):
        session, hc = self.session, HydraConfig.get()
        run_dir, multirun = Path(hc.runtime.output_dir), hc.mode == RunMode.MULTIRUN
        overrides = list(hc.overrides.task)
        if multirun:
            learn_sweep_shape(session, hc)
        cfg, yaml_text = OmegaConf.to_object(dcfg), OmegaConf.to_yaml(dcfg, resolve=True)
        problems, before, done = check_job(cfg, overrides, run_dir, yaml_text, multirun)
        if problems:
            tell_trial(cfg, None)          # a trial that cannot run: FAILED, another is drawn
            return refuse(session, problems, run_dir, hc.job.num if multirun else None, overrides)
        if before == "unfinished" and cfg.checkpoint.resume == "never":
            cfg.checkpoint.resume = "auto"           # from its newest checkpoint, in its MLflow run
        if before != "finished":
            make_run_dir(run_dir, cfg.checkpoint.resume, yaml_text,
                         run_dir / hc.output_subdir if hc.output_subdir else None)
        if multirun:
            session.start_point(hc.job.num, overrides)
            warn_ignored(session, cfg)
        if cfg.tracking.run_name is None:  # name runs by what was overridden: readable side by side
            cfg.tracking.run_name = run_name(overrides, session.swept if multirun else ())
        parent = session.parent_for(cfg, hc.sweep.dir) if multirun and session.comm.rank == 0 else None
        if before == "finished":           # trained by an earlier invocation: taken as it ended
            log.info("[%d/%s] finished in an earlier invocation (%s): not trained again", hc.job.num + 1,
                     session.total or "?", run_dir)
            session.end_point(hc.job.num, overrides, cfg.tracking.run_name, params_of(dcfg), done)
            return objective(done)
        job = {"op": "run", "cfg": cfg, "run_dir": str(run_dir), "parent": parent, "multirun": multirun,
               "tags": {"ddl.overrides": " ".join(overrides)}, "id": job_id()}
        summary = self.execute(session.comm.bcast(job, root=0) if session.comm.size > 1 else job)
        tell_trial(cfg, summary)
        if multirun:
            session.end_point(hc.job.num, overrides, cfg.tracking.run_name, params_of(dcfg), summary)
        elif summary is None:
            session.failed.append(job["run_dir"])
        return objective(summary)

    def execute(self, job: dict):
        """The job on every rank; a sweep stopped by a signal at a step is stopped too."""
        session = self.session
        try:
            return execute(job, session.comm, session.recorder)
        except SystemExit:
            session.stopped = job["multirun"]
            raise
        finally:
            if not session.owner:             # a launcher's process of its own: one job, delivered now
                session.close()


def warn_ignored(session: Session, cfg: C.Config) -> None:
    """A swept key that this point's config ignores makes points that differ only in it the same
    run: said once per key, as the first such point starts."""
    for key in session.swept:
        why = C.ignored(cfg, key)
        if why and key not in session.warned:
            session.warned.add(key)
            log.warning("the sweep varies %s, but %s: points that differ only in it are the same run "
                        "(%s)", key, why, "make schedule.time_interval shorter than train.epochs"
                        if "time_interval" in why else "sweep a schedule or optimizer that uses it")


def check_job(cfg: C.Config, overrides, run_dir: Path, yaml_text: str, multirun: bool):
    """(what is wrong with this job, '' if nothing; what an earlier invocation left of a sweep
    point in its directory: "", "finished" or "unfinished"; a finished point's summary)."""
    problems = config_problems(cfg, overrides)
    if multirun and cfg.lr_range.enabled:
        problems = ("bad config: lr_range.enabled=true is a run of its own (it suggests a range to "
                    "search), not a sweep point.")
    if problems or not multirun:
        return problems, "", None
    try:                                   # a sweep resumed in its directory: what its point left
        return "", *earlier_point(run_dir, yaml_text)
    except ValueError as err:
        return str(err), "", None


def tell_trial(cfg: C.Config, summary) -> None:
    """A search's trial: how its job ended, told to its study (nothing for other jobs)."""
    if cfg.search.trial >= 0:
        from ddl.search.study import tell  # noqa: PLC0415 - Optuna only for a search

        tell(cfg.search, summary)


def params_of(dcfg) -> dict:
    """A point's resolved config, flat, as its run's params."""
    from ddl.tracking.store import flatten_config  # noqa: PLC0415 - pure: no MLflow import

    return flatten_config(OmegaConf.to_container(dcfg, resolve=True))


def refuse(session: Session, problems: str, run_dir: Path, point: int | None, overrides) -> float:
    """A config refused before any work: its paragraph, nothing left behind; a sweep goes on with
    the point failed (`point`: its number), a single run ends with exit 1."""
    print(f"ddl: error: {problems}", file=sys.stderr, flush=True)
    remove_hydras_leftovers(run_dir)
    if point is None:
        raise SystemExit(1)
    session.start_point(point, overrides)
    session.end_point(point, overrides, "", {}, None)
    return objective(None)


def standalone_task() -> Task:
    return Task(standalone_session())


def config_problems(cfg: C.Config, overrides: Sequence[str]) -> str:
    """One paragraph on what is wrong with a composed config ('' if nothing): values out of range
    and `+key=value` keys that no schema has (Hydra adds those silently; ddl would ignore them)."""
    added = [o.lstrip("+").split("=", 1)[0] for o in overrides if o.startswith("+")]
    added = [k for k in added if "/" not in k and k != "experiment" and not k.startswith("hydra.")]
    from ddl.runner.experiment import build_optimization  # noqa: PLC0415
    from ddl.tracking.store import Store  # noqa: PLC0415 - pure: no MLflow import

    store = Store(cfg.tracking.uri).place_problem() if cfg.tracking.enabled else None
    found = C.unknown_keys(added) + C.check(cfg) + ([store] if store else [])
    try:                  # what the optimizer and schedule refuse (optimizer.lr=-1), refused here too
        build_optimization(cfg)
    except ValueError as err:
        found.append(str(err))
    return f"bad config: {'; '.join(found)}." if found else ""


SEARCH = "hydra_plugins.ddl_search.search_sweeper.SearchSweeper"


def learn_sweep_shape(session: Session, hc) -> None:
    """What a sweep's first job learns of it: its directory; a search sweeper's trials and keys
    (in its config, not on the command line); whether the points share their parent with other
    processes (ddl's search: the last of them closes it, in SweepCallback, not each)."""
    session.sweep_dir = Path(hc.sweep.dir)
    if session.total is None:
        session.total = OmegaConf.select(hc, "sweeper.n_trials")
    if not session.swept:
        session.swept = tuple(OmegaConf.select(hc, "sweeper.params") or ())
    if OmegaConf.select(hc, "sweeper._target_") == SEARCH:
        session.closes_parent = False


def main(link=None) -> None:
    """`ddl-train`. link: the tracking worker ddl/__main__.py started before anything loaded."""
    shm = shared_memory_problem()
    if shm:                           # MPI would die of SIGBUS as it starts, saying nothing useful
        fail_before_mpi(shm, link)
    try:
        with warnings.catch_warnings(record=True) as said:    # one plain line each, not Python's form
            warnings.simplefilter("always", RuntimeWarning)
            comm = get_comm("auto")
        for warning in said:
            print(f"ddl: warning: {warning.message}", file=sys.stderr, flush=True)
    except MPIUnavailable as err:
        fail_before_mpi(str(err), link)
    install_abort_handler(comm)
    for handler in setup_logging(comm).handlers:
        handler.addFilter(hide_while_bar)
    if comm.rank != 0:
        sys.exit(worker_loop(comm))
    register_schemas()
    install_startup_handlers()
    if link is None:
        from ddl.tracking.link import Link, worth_prewarming  # noqa: PLC0415 - no MLflow in it

        link = Link.start() if worth_prewarming(sys.argv[1:]) else None   # MLflow loads beside Hydra
    session = Session(comm, *sweep_shape(sys.argv[1:]), owner=True, recorder=Recorder(link))
    bad_dir = out_dir_problem(sys.argv[1:]) or slurm_launcher.launcher_problem(sys.argv[1:])
    if slurm_launcher.wanted(sys.argv[1:]):
        slurm_launcher.quiet_submitit()
    if bad_dir:                       # Hydra would make the directory first, with a traceback
        print(f"ddl: error: {bad_dir}", file=sys.stderr)
    code = 1 if bad_dir else run_hydra(session)
    try:
        session.close()
    except Exception as e:  # noqa: BLE001 - the points ran; say what the summary could not do
        print(f"ddl: error: the sweep's summary failed: {type(e).__name__}: {e}", file=sys.stderr)
        code = code or 1
    if session.failed and code == 0:
        code = 1
        print(f"ddl: {len(session.failed)} sweep point(s) failed: {'; '.join(session.failed)}",
              file=sys.stderr)
    if session.sweep_dir is not None and session.points and (session.failed or session.stopped or code):
        print(f"ddl: to train the points that did not finish (the others are not trained again): "
              f"ddl-train {resume_command(sys.argv[1:], session.sweep_dir)}", file=sys.stderr)
    if comm.size > 1:
        comm.bcast({"op": "exit", "code": code}, root=0)
    sys.exit(code)


def resume_command(argv: Sequence[str], sweep_dir: Path) -> str:
    """The same sweep, in its own directory: its finished points are taken as they are, the others
    resume from their checkpoints or start again (`earlier_point`)."""
    import shlex  # noqa: PLC0415

    kept = [a for a in argv if not a.startswith(("hydra.sweep.dir=", "+hydra.sweep.dir="))]
    return shlex.join([*kept, f"hydra.sweep.dir={sweep_dir}"])


def fail_before_mpi(problem: str, link) -> None:
    """Every rank found the same problem before MPI started: the first one (by the launcher's
    environment) says it, and all exit 1."""
    if link is not None:
        link.close()
    if first_rank():
        print(f"ddl: error: {problem}", file=sys.stderr, flush=True)
    sys.exit(1)


def register_search() -> None:
    """ddl's search sweeper. Hydra finds plugins by scanning the hydra_plugins namespace, which an
    editable install's import hook hides from it: registered here, the same class either way."""
    from hydra.core.plugins import Plugins  # noqa: PLC0415
    from hydra_plugins.ddl_search.search_sweeper import SearchSweeper  # noqa: PLC0415

    Plugins.instance().register(SearchSweeper)


def run_hydra(session: Session) -> int:
    """Hydra composes the config (or expands the sweep) and runs each job: the exit code."""
    if any(a.startswith("hydra/sweeper=") for a in sys.argv[1:]):
        register_search()
    try:
        hydra.main(version_base="1.3", config_path=CONF_PATH, config_name="config")(Task(session))()
    except SystemExit as e:
        return exit_code(e)
    except KeyboardInterrupt:        # a second Ctrl-C, or one before training: no traceback
        print("ddl: interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    except BrokenPipeError:          # `ddl-train --help | head`: the reader left, nothing to say
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    except Exception as e:  # noqa: BLE001 - Hydra's usage errors, outside any job
        print(f"ddl-train: error: {e}\n(see ddl-train --help)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    main()
