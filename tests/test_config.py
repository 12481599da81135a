"""Hydra configs: every group option and every experiment composes against its dataclass schema,
and bad overrides fail fast with Hydra's message and a non-zero status."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from ddl import cli
from ddl import config as C
from ddl.config import Config
from helpers import ddl_train

CONF = Path(__file__).resolve().parents[1] / "conf"   # what pkg://ddl.conf installs
GROUPS = ["data", "model", "optimizer", "schedule", "train", "tracking", "checkpoint"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture(scope="module")
def hydra_ctx():
    cli.register_schemas()
    GlobalHydra.instance().clear()
    with initialize_config_module(config_module=cli.CONF_PATH.removeprefix("pkg://"), version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


def build(overrides) -> Config:
    cfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_object(cfg)


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes(hydra_ctx, group, option):
    cfg = build([f"{group}={option}"])
    assert isinstance(cfg, Config)
    if group in ("data", "optimizer", "schedule"):
        assert getattr(cfg, group).name == option


@pytest.mark.parametrize("name", options("experiment"))
def test_every_experiment_composes(hydra_ctx, name):
    cfg = build([f"experiment={name}"])
    assert cfg.train.epochs > 0 and cfg.optimizer.lr > 0


def test_course_experiments_carry_the_course_settings(hydra_ctx):
    deep = build(["experiment=cat_deep"])
    assert (deep.data.name, deep.model.hidden, deep.optimizer.lr) == ("catvnoncat", [20, 7, 5], 0.0075)
    l2 = build(["experiment=football_l2"])
    assert (l2.model.l2, l2.optimizer.lr, l2.train.epochs) == (0.7, 0.3, 30000)
    drop = build(["experiment=football_dropout"])
    assert drop.model.keep_prob == 0.86
    decay = build(["experiment=moons_momentum_decay"])
    assert (decay.optimizer.name, decay.schedule.name, decay.schedule.time_interval) == \
        ("momentum", "scheduled", 1000)


def test_the_keys_users_type_exist(hydra_ctx):
    cfg = build(["data=moons", "data.path=x.npz", "model.hidden=[20,7,5]", "model.activation=tanh",
                 "model.init=xavier", "model.output=softmax", "model.keep_prob=0.8", "model.l2=0.1",
                 "model.batchnorm=true", "model.init_from=a.npz", "optimizer.lr=0.5",
                 "optimizer.beta=0.8", "optimizer.beta1=0.8", "optimizer.beta2=0.99",
                 "optimizer.epsilon=1e-7", "schedule.decay_rate=0.3", "schedule.time_interval=10",
                 "train.epochs=3", "train.batch_size=7", "train.seed=4", "train.dtype=float64",
                 "train.patience=2", "backend=numpy", "tracking.uri=http://x:1",
                 "tracking.experiment=e", "tracking.enabled=false", "out_dir=/tmp/r"])
    assert cfg.model.hidden == [20, 7, 5] and cfg.train.batch_size == 7 and cfg.out_dir == "/tmp/r"


@pytest.mark.parametrize("override,words", [
    ("optimizer.lrr=0.1", "lrr"),                   # unknown key
    ("train.epochs=many", "epochs"),                # wrong type
    ("optimizer=sgd", "sgd"),                       # unknown option
])
def test_bad_overrides_fail_fast_with_hydras_message(tmp_path, override, words):
    code, out, err = ddl_train(0, override, "tracking=off", cwd=tmp_path, timeout=60)
    assert code != 0
    assert words in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists(), "nothing is created for a config that fails"


@pytest.mark.parametrize("overrides,words", [
    (["model.l2=-1"], "model.l2=-1.0: must be a number >= 0"),
    (["checkpoint.every=-1", "checkpoint.keep=0"], "checkpoint.every=-1: must be an integer >= 0"),
    (["checkpoint.keep=0"], "checkpoint.keep=0: must be an integer >= 1"),
    (["+optimizer.lrr=0.1"], "optimizer.lrr: no such key (optimizer.lr?)"),   # Hydra's own hint
    (["model.keep_prob=abc"], "model.keep_prob='abc': must be a number in (0, 1]"),
    (["train.batch_size=0"], "train.batch_size=0: must be an integer >= 1"),
    (["train.epochs=0"], "train.epochs=0: must be an integer >= 1"),
    (["train.on_nonfinite=ignore"], "train.on_nonfinite='ignore': must be stop or skip"),
    (["train.dtype=float16"], "train.dtype='float16': must be float32 or float64"),
    (["tracking.bayes_error=5"], "tracking.bayes_error=5.0: must be a number in [0, 1)"),
])
def test_bad_values_are_refused_before_any_file_or_mlflow_run(tmp_path, overrides, words):
    code, out, err = ddl_train(0, *overrides, cwd=tmp_path, timeout=60)   # tracking on
    assert code == 1 and f"ddl: error: bad config: {words}" in err, err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == [], "nothing is created for a config that is refused"


def test_the_notebook_api_refuses_the_same_values(tmp_path, monkeypatch):
    import ddl

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"model\.l2=-1\.0: must be a number >= 0"):
        ddl.run("model.l2=-1")
    assert list(tmp_path.iterdir()) == []


def test_bad_override_under_mpi_is_printed_once_and_every_rank_exits(tmp_path):
    code, out, err = ddl_train(2, "optimizer.lrr=0.1", "tracking=off", cwd=tmp_path, timeout=60)
    assert code != 0
    assert err.count("Key 'lrr' not in") == 1, err


def test_cfg_job_prints_the_composed_config(tmp_path):
    code, out, err = ddl_train(0, "--cfg", "job", "optimizer=momentum", cwd=tmp_path, timeout=60)
    assert code == 0, err
    assert "name: momentum" in out and "batch_size:" in out


def test_help_lists_groups_and_options(tmp_path):
    code, out, err = ddl_train(0, "--help", cwd=tmp_path, timeout=60)
    assert code == 0, err
    groups_part = out.split("== Configuration groups ==")[1].split("== Config ==")[0]
    lines = {line.split(":")[0]: line for line in groups_part.splitlines() if ":" in line}
    for group in GROUPS + ["experiment"]:
        assert all(o in lines[group] for o in options(group)), (group, out)
    assert "ddl-train" in out


def test_optuna_lr_search_runs_trials_on_a_log_scale(tmp_path):
    code, out, err = ddl_train(0, "-m", "hydra/sweeper=lr_search", "hydra.sweeper.n_trials=3",
                               "data=moons", "train.epochs=2", "tracking=off", cwd=tmp_path, timeout=180)
    assert code == 0, out + err
    runs = sorted(tmp_path.glob("multirun/*/*/*/config.yaml"))
    assert len(runs) == 3
    lrs = [OmegaConf.load(p).optimizer.lr for p in runs]
    assert len(set(lrs)) == 3 and all(1e-4 <= lr <= 1.0 for lr in lrs), lrs


def test_submitit_slurm_launcher_config_composes(tmp_path):
    code, out, err = ddl_train(0, "hydra/launcher=slurm", "--cfg", "hydra", cwd=tmp_path, timeout=60)
    assert code == 0, err
    assert "submitit_slurm" in out and "tasks_per_node: 2" in out and "SLURM_MPI_TYPE=pmi2" in out


@pytest.mark.parametrize("why", ["no sbatch", "no controller"])
def test_hydras_slurm_launcher_where_slurm_cannot_take_jobs_is_one_paragraph(tmp_path, why):
    """Where SLURM is absent (no sbatch on PATH) or its controller does not answer, the sweep is
    refused before Hydra, in ddl's words (submitit's traceback, and a parent left behind, before)."""
    import sys

    env = {**os.environ, "PATH": str(Path(sys.executable).parent)} if why == "no sbatch" else {
        **os.environ, "SLURM_CONF": str(tmp_path / "absent.conf")}
    if why == "no controller" and shutil.which("scontrol") is None:
        env["PATH"] = str(Path(sys.executable).parent)      # no SLURM at all: the same refusal
    code, out, err = ddl_train(0, "-m", "hydra/launcher=slurm", "optimizer=gd,adam", "train.epochs=2",
                               cwd=tmp_path, timeout=60, env=env)
    assert code == 1 and "Traceback" not in err and "hydra/launcher=slurm" in err, err
    assert ("no sbatch on PATH" if env["PATH"] == str(Path(sys.executable).parent)
            else "the SLURM controller does not answer") in err, err
    assert "drop hydra/launcher=slurm" in err and not (tmp_path / "multirun").exists()
    assert not (tmp_path / "mlflow.db").exists()


def test_usage_error_is_one_paragraph(tmp_path):
    code, out, err = ddl_train(0, "-m", "--cfg", "job", cwd=tmp_path, timeout=60)
    assert code == 2 and "ddl-train: error: Only one of" in err and "Traceback" not in err, err


def test_a_store_or_run_directory_that_cannot_be_is_refused_at_once(tmp_path):
    """A directory where the SQLite file goes (MLflow would retry for ~100 s) and an out_dir
    that is a file (Hydra would make it first, with a traceback): one paragraph, nothing made."""
    work = tmp_path / "work"
    (work / "store").mkdir(parents=True)
    (work / "afile").write_text("")
    before = sorted(p.name for p in work.iterdir())
    code, so, se = ddl_train(0, "train.epochs=2", f"tracking.uri=sqlite:///{work / 'store'}",
                             cwd=work, timeout=60)
    assert code == 1 and "names a directory, not an SQLite file" in se and "Traceback" not in se, se
    for out in ("afile", "afile/sub"):
        code, so, se = ddl_train(0, "train.epochs=2", "tracking=off", f"out_dir={work / out}",
                                 cwd=work, timeout=60)
        assert code == 1 and "is a file, so it cannot hold a run directory" in se, se
        assert "Traceback" not in se and "HYDRA_FULL_ERROR" not in se, se
    assert sorted(p.name for p in work.iterdir()) == before


@pytest.mark.parametrize("overrides, words", [
    (["data=moons", "data.dev_fraction=0", "train.patience=5"], "train.patience > 0 (early stopping) "
                                                                "needs a dev split"),
    (["data=npz", "data.path=narrow.npz"], "(dev split): examples of shape (2,), but the train split's "
                                           "are (3,)"),
])
def test_what_the_data_must_allow_is_refused_before_any_mlflow_run(tmp_path, overrides, words):
    """Checks that need the data (its own dev split, its width) run before the MLflow run opens."""
    import numpy as np
    from mlflow import MlflowClient

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "narrow.npz", X=rng.random((40, 3)), y=np.arange(40) % 2,
             X_dev=rng.random((10, 2)), y_dev=np.arange(10) % 2)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, so, se = ddl_train(0, *overrides, f"tracking.uri={uri}", cwd=tmp_path, timeout=60)
    assert code == 1 and words in se and "Traceback" not in se, se
    client = MlflowClient(uri)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


@pytest.mark.parametrize("text, shown", [
    ("http://me:secret@host:5000/x", "http://me:***@host:5000/x"),
    ("http://user:p@ss@host", "http://user:***@host"),                # a raw "@" in the password
    ("https://ghp_TOKEN123@host/api", "https://***@host/api"),          # a token as the user
    ("see http://a:b@c and https://t@d/e", "see http://a:***@c and https://***@d/e"),
    ("sqlite:////tmp/a@b/mlflow.db", "sqlite:////tmp/a@b/mlflow.db"),   # no user part: as it is
    ("http://host:5000/path@v2", "http://host:5000/path@v2"),
])
def test_credentials_in_uris_are_redacted(text, shown):
    from ddl.config import redact

    assert redact(text) == shown


def test_the_traceback_kept_in_train_log_is_redacted(tmp_path):
    from types import SimpleNamespace

    from ddl.runner.logs import keep_traceback

    try:
        raise ConnectionError("cannot reach https://ghp_TOKEN123@host and http://me:p@ss@host")
    except ConnectionError as err:
        keep_traceback(tmp_path, SimpleNamespace(rank=0), err)
    text = (tmp_path / "train.log").read_text()
    assert "ConnectionError" in text and "TOKEN123" not in text and "p@ss" not in text, text


def test_a_setting_the_config_ignores_is_named_with_the_reason():
    cfg = C.Config()
    assert "schedule.name=constant does not use it (inverse_time and scheduled do)" == C.ignored(cfg, "schedule.decay_rate")
    cfg.schedule.name, cfg.train.epochs = "scheduled", 300
    assert "first applies at epoch 1000" in C.ignored(cfg, "schedule.decay_rate")
    cfg.schedule.time_interval = 100
    assert C.ignored(cfg, "schedule.decay_rate") == ""
    assert C.ignored(cfg, "optimizer.beta") == "optimizer.name=adam does not use it (momentum does)"
    assert C.ignored(cfg, "optimizer.beta1") == "" and C.ignored(cfg, "model.l2") == ""


def test_a_sweep_over_a_key_that_changes_nothing_is_warned_once(tmp_path):
    code, so, se = ddl_train(0, "-m", "optimizer=gd", "schedule.decay_rate=0,1", "optimizer.beta=0.8,0.9",
                             "data=moons", "train.epochs=2", "train.progress=false", "tracking=off",
                             cwd=tmp_path, timeout=180)
    text = so + se
    assert code == 0, text
    assert text.count("the sweep varies schedule.decay_rate, but schedule.name=constant does not use it") == 1, text
    assert text.count("the sweep varies optimizer.beta, but optimizer.name=gd does not use it") == 1, text
    code, so, se = ddl_train(0, "-m", "schedule=inverse_time", "schedule.decay_rate=0,1", "data=moons",
                             "train.epochs=2", "train.progress=false", "tracking=off", cwd=tmp_path, timeout=180)
    assert code == 0 and "the sweep varies" not in so + se, so + se
