"""ddl's search sweeper, a Hydra Sweeper (`ddl-train -m hydra/sweeper=search`, or one of the
course's ready-made spaces: hydra/sweeper=lr_search, decay_search, adam_search,
regularization_search, hidden_search). The search space is written as Hydra's sweep syntax, in
the config's `params` or on the command line:

    optimizer.lr: tag(log, interval(1e-4, 1))     log-uniform float
    model.keep_prob: interval(0.5, 1.0)           uniform float
    optimizer: choice(gd, momentum, adam)         categorical
    train.batch_size: range(32, 257, step=32)     integers

Each trial is one job of Hydra's launcher (in this process, or a submitit job), numbered by its
trial number in the sweep directory, so several processes given the same `hydra.sweep.dir` share
one study (its journal: <sweep dir>/study.journal), one MLflow parent and one directory. The job
reports every evaluated epoch's dev error to the trial, which the pruner may stop ("pruned"), and
tells the study how it ended (ddl/search/study.py). Running the same command again continues the
study until `n_trials` trials completed or were pruned.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep, Transformer
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

from ddl.search import study as S

log = logging.getLogger("ddl")
JOURNAL = "study.journal"


class SearchSweeper(Sweeper):
    def __init__(self, n_trials: int = 12, params: Optional[dict] = None, study: Optional[str] = None,
                 storage: Optional[str] = None, sampler: str = "tpe", seed: Optional[int] = 0,
                 pruner: str = "hyperband", startup_trials: int = 4, warmup_epochs: int = 10,
                 stale_s: float = 3600.0):
        self.n_trials, self.params = int(n_trials), dict(params or {})
        self.study_name, self.storage, self.sampler, self.seed = study, storage, sampler, seed
        self.pruner, self.startup_trials, self.warmup_epochs = pruner, startup_trials, warmup_epochs
        self.stale_s = stale_s
        self.config = self.launcher = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        space, fixed = search_space(self.params, arguments)
        if not space:
            raise ValueError("the search has no space: give hydra.sweeper.params (e.g. "
                             "'hydra.sweeper.params={optimizer.lr: tag(log, interval(1e-4, 1))}') or "
                             "a swept override (optimizer.lr='tag(log, interval(1e-4, 1))')")
        path, name = location(self.config.hydra.sweeper, sweep_dir)
        epochs = int(OmegaConf.select(self.config, "train.epochs", default=100))
        study = S.open_study(path, name, self.sampler, self.seed, self.pruner, self.startup_trials,
                             self.warmup_epochs, epochs)
        log.info("search: study %r in %s, %d trials (%s sampler, %s pruner)", name, path, self.n_trials,
                 self.sampler, self.pruner)
        returns = []
        while (trial := S.claim(study, self.n_trials, space, path, self.stale_s)) is not None:
            chosen = [f"{key}={_literal(value)}" for key, value in trial.params.items()]
            job = [*fixed, *chosen, f"search.storage={path}", f"search.study={name}",
                   f"search.trial={trial.number}", f"search.pruner={self.pruner}",
                   f"search.startup_trials={self.startup_trials}", f"search.warmup_epochs={self.warmup_epochs}"]
            returns += self.launcher.launch([job], initial_job_idx=trial.number)
        states = [t.state.name for t in study.get_trials(deepcopy=False)]
        log.info("search: the study has %s", ", ".join(f"{states.count(s)} {s.lower()}"
                                                         for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")
                                                         if states.count(s)))
        return returns


def others_running(sweeper_cfg, sweep_dir: Path) -> bool:
    """Whether other processes still run trials of this search's study (the last of them closes
    the sweep's parent run)."""
    under_way = S.running(*location(sweeper_cfg, sweep_dir))
    if under_way:
        log.info("search: %d trial(s) still run in other processes; the last to end closes the "
                 "sweep's parent run", under_way)
    return bool(under_way)


def location(sweeper_cfg, sweep_dir: Path) -> tuple[str, str]:
    """(the journal's path, the study's name): given, or <sweep dir>/study.journal and the sweep
    directory's name."""
    storage = OmegaConf.select(sweeper_cfg, "storage") or str(Path(sweep_dir).resolve() / JOURNAL)
    name = OmegaConf.select(sweeper_cfg, "study") or Path(sweep_dir).resolve().name
    return str(storage), str(name)


def search_space(params: dict, arguments: list[str]) -> tuple[dict, list[str]]:
    """({key: Optuna distribution}, the fixed overrides): the config's params and the command
    line's, the command line winning; a swept override is a dimension, any other is fixed."""
    import optuna  # noqa: PLC0415

    D = optuna.distributions
    merged = {**{k: str(v) for k, v in params.items()},
              **{a.split("=", 1)[0]: a.split("=", 1)[1] for a in arguments if "=" in a}}
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in merged.items()])
    space, fixed = {}, []
    for override in parsed:
        key, value = override.get_key_element(), override.value()
        if not override.is_sweep_override():
            fixed.append(f"{key}={override.get_value_element_as_str()}")
        elif isinstance(value, IntervalSweep):
            log_scale = "log" in value.tags
            if isinstance(value.start, int) and isinstance(value.end, int):
                space[key] = D.IntDistribution(value.start, value.end, log=log_scale)
            else:
                space[key] = D.FloatDistribution(float(value.start), float(value.end), log=log_scale)
        elif isinstance(value, RangeSweep) and not value.shuffle and all(
                isinstance(x, int) for x in (value.start, value.stop, value.step)):
            space[key] = D.IntDistribution(value.start, value.stop - 1, step=value.step)
        elif isinstance(value, (ChoiceSweep, RangeSweep)):
            space[key] = D.CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
        else:
            raise ValueError(f"{key}={override.get_value_element_as_str()}: not a search dimension "
                             "(use interval(a, b), tag(log, interval(a, b)), choice(...) or range(...))")
    return space, fixed


def _literal(value) -> str:
    """A drawn value as an override's value ('0.0123', 'adam', '[20,7]')."""
    return str(value).replace(" ", "") if isinstance(value, (list, tuple)) else str(value)
