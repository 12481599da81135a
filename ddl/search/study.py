"""The search's Optuna study: one journal file every process of the search shares (several
`ddl-train -m` started by hand, SLURM array tasks, each possibly an `mpiexec` group), trials drawn
from it one at a time, intermediate dev errors reported to it and pruned by its pruner. No Hydra
here (ddl/search/sweeper.py is the Hydra edge); Optuna only.

    claim(study, n, space)   the next trial, or None when n trials are done or under way; under a
                             lock beside the journal, after the trials of processes that died on
                             this host are ended FAILED (their pid is gone)
    Pruning(search_cfg, comm)    after each evaluated epoch: report the held-out error, ask the
                             pruner on rank 0, give every rank its answer ("pruned" or "")
    tell(search_cfg, summary)    the job's end as the trial's: COMPLETE with its objective,
                             PRUNED, or FAIL

A trial's process writes its host and pid as user attributes when it claims it. Optuna's own
heartbeat is for RDB storages only; a trial whose process died on another host (a lost node) stays
RUNNING until a process on that host claims a trial, or `stale_s` has passed since its last report.
"""
from __future__ import annotations

import logging
import math
import os
import socket
import time
from typing import Any, Mapping, Optional

log = logging.getLogger("ddl")
PRUNERS = ("median", "hyperband", "none")
SAMPLERS = ("tpe", "random")


def _optuna():
    try:
        import optuna  # noqa: PLC0415 - the optional extra
    except ImportError:
        raise ImportError("ddl's search needs Optuna: pip install 'ddl[optuna]'") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def storage(path: str):
    """The journal file at `path` as Optuna storage (safe for processes on several hosts over a
    shared filesystem: its lock is a file opened exclusively)."""
    optuna = _optuna()
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock  # noqa: PLC0415

    return optuna.storages.JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))


def open_study(path: str, name: str, sampler: str = "tpe", seed: Optional[int] = 0,
               pruner: str = "median", startup_trials: int = 4, warmup_epochs: int = 5,
               max_epochs: int = 100):
    """The study `name` in the journal at `path`, created or continued (minimizing the held-out
    error). median: a trial whose error after an epoch is worse than the median of the trials
    before it at that epoch stops, once `startup_trials` finished and after `warmup_epochs`;
    hyperband: successive halving brackets from `warmup_epochs` to `max_epochs`."""
    optuna = _optuna()
    if sampler not in SAMPLERS:
        raise ValueError(f"hydra.sweeper.sampler must be one of {SAMPLERS}, got {sampler!r}")
    chosen_sampler = (optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials)
                      if sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed))
    return optuna.create_study(storage=storage(path), study_name=name, sampler=chosen_sampler,
                               pruner=make_pruner(pruner, startup_trials, warmup_epochs, max_epochs),
                               direction="minimize", load_if_exists=True)


def make_pruner(name: str, startup_trials: int, warmup_epochs: int, max_epochs: int):
    """The study's pruner. Optuna keeps none in the study: the sweeper and every trial's job build
    the same one from the same settings."""
    optuna = _optuna()
    if name not in PRUNERS:
        raise ValueError(f"hydra.sweeper.pruner must be one of {PRUNERS}, got {name!r}")
    return {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=startup_trials,
                                                      n_warmup_steps=warmup_epochs),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=max(warmup_epochs, 1),
                                                            max_resource=max(max_epochs, warmup_epochs + 1)),
        "none": lambda: optuna.pruners.NopPruner(),
    }[name]()


def claim(study, n_trials: int, space: Mapping[str, Any], path: str, stale_s: float = 3600.0):
    """The next trial of `study` (its params drawn from `space`, {key: distribution}), or None
    when `n_trials` have ended COMPLETE or PRUNED or are under way. Failed trials do not count: a
    trial whose process died is drawn again."""
    optuna = _optuna()
    from optuna.storages.journal import JournalFileOpenLock  # noqa: PLC0415

    lock = JournalFileOpenLock(path + ".claim")
    lock.acquire()
    try:
        end_dead(study, stale_s)
        states = [t.state for t in study.get_trials(deepcopy=False)]
        live = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING)
        if sum(s in live for s in states) >= n_trials:
            return None
        trial = study.ask(dict(space))
        trial.set_user_attr("ddl.host", socket.gethostname())
        trial.set_user_attr("ddl.pid", os.getpid())
        trial.set_user_attr("ddl.beat", time.time())
        return trial
    finally:
        lock.release()


def end_dead(study, stale_s: float) -> list[int]:
    """End FAILED the RUNNING trials whose process is gone: on this host, its pid no longer runs;
    anywhere, nothing heard from it for `stale_s` seconds. Returns their numbers."""
    optuna = _optuna()
    host, now, ended = socket.gethostname(), time.time(), []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        attrs = t.user_attrs
        gone = attrs.get("ddl.host") == host and not _alive(int(attrs.get("ddl.pid", 0)))
        if gone or now - float(attrs.get("ddl.beat", now)) > stale_s:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            log.warning("search: trial %d ended FAILED: its process (pid %s on %s) is gone", t.number,
                        attrs.get("ddl.pid"), attrs.get("ddl.host"))
            ended.append(t.number)
    return ended


def _alive(pid: int) -> bool:
    """Whether process `pid` of this host still runs (a zombie does not: it has died, its parent
    has not yet read its status)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def running(path: str, name: str) -> int:
    """How many trials of the study are under way (after ending those of dead processes)."""
    optuna = _optuna()
    study = optuna.load_study(study_name=name, storage=storage(path))
    end_dead(study, 3600.0)
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))


def held_out(record: Mapping[str, Any]) -> float:
    """What a trial reports and minimizes: the dev error (test without a dev split; the train
    cost without either)."""
    for key in ("dev_error", "test_error"):
        value = record.get(key)
        if value is not None and math.isfinite(value):
            return float(value)
    return float(record.get("train_cost", math.inf))


class Pruning:
    """Hooks.stop_after for a trial: rank 0 reports each evaluated epoch's held-out error and asks
    the pruner; every rank gets its answer in one broadcast."""

    def __init__(self, search_cfg, comm, max_epochs: int):
        self.comm, self.trial = comm, None
        if comm.rank == 0:
            optuna = _optuna()
            pruner = make_pruner(search_cfg.pruner, search_cfg.startup_trials, search_cfg.warmup_epochs,
                                 max_epochs)
            study = optuna.load_study(study_name=search_cfg.study, storage=storage(search_cfg.storage),
                                      pruner=pruner)
            trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, search_cfg.trial)
            self.trial = optuna.trial.Trial(study, trial_id)

    def __call__(self, record: dict) -> str:
        verdict = ""
        if self.trial is not None:
            self.trial.report(held_out(record), record["epoch"])
            self.trial.set_user_attr("ddl.beat", time.time())
            verdict = "pruned" if self.trial.should_prune() else ""
        return self.comm.bcast(verdict, root=0) if self.comm.size > 1 else verdict


def tell(search_cfg, summary: Optional[dict]) -> None:
    """The job's end as its trial's: PRUNED, COMPLETE with the held-out error, or FAIL (None)."""
    optuna = _optuna()
    study = optuna.load_study(study_name=search_cfg.study, storage=storage(search_cfg.storage))
    state = optuna.trial.TrialState
    if summary is None:
        study.tell(search_cfg.trial, state=state.FAIL, skip_if_finished=True)
    elif summary.get("stopped") == "pruned":
        study.tell(search_cfg.trial, state=state.PRUNED, skip_if_finished=True)
    else:
        study.tell(search_cfg.trial, final_value(summary), skip_if_finished=True)


def final_value(summary: dict) -> float:
    """A finished trial's value: its final held-out error (the train cost without one)."""
    for split in ("dev", "test"):
        value = summary.get(split, {}).get("error")
        if value is not None and math.isfinite(value):
            return float(value)
    return float(summary["train"]["cost"])
