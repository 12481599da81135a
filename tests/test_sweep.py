"""Sweep helpers: grid expansion in Hydra's order and log-scale learning rates."""
import pytest

from ddl.runner.grid import expand, logspace, main, split_values


def test_grid_points_in_hydra_order():
    pts = expand(["optimizer=gd,adam", "schedule.decay_rate=0,1"])
    assert pts == [["optimizer=gd", "schedule.decay_rate=0"], ["optimizer=gd", "schedule.decay_rate=1"],
                   ["optimizer=adam", "schedule.decay_rate=0"], ["optimizer=adam", "schedule.decay_rate=1"]]


def test_brackets_keep_their_commas():
    assert split_values("[20,7,5],[4]") == ["[20,7,5]", "[4]"]
    assert len(expand(["model.hidden=[20,7,5],[4]", "x=1"])) == 2


def test_logspace_is_even_in_log10():
    assert logspace(1e-4, 1e-1, 4) == [1e-4, 1e-3, 1e-2, 1e-1]
    assert logspace(1e-3, 1e-2, 3) == [0.001, 0.00316, 0.01]
    with pytest.raises(ValueError, match="0 < lo < hi"):
        logspace(0, 1, 3)


def test_cli_point_and_bad_index(capsys):
    assert main(["point", "1", "a=1,2", "b=x"]) == 0
    assert capsys.readouterr().out.strip() == "a=2 b=x"
    assert main(["point", "5", "a=1,2"]) == 2
    assert "outside the grid's 2 points" in capsys.readouterr().err


def submit_sweep_with(tmp_path, sbatch_script=None):
    """slurm/submit_sweep.sh on a PATH holding python and dirname, plus `sbatch_script` as sbatch."""
    import os
    import shutil
    import subprocess
    import sys

    from helpers import REPO, clean_env

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    # a script, not a link to sys.executable: a link drops the virtual environment the tests run in
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    os.chmod(bin_dir / "python", 0o755)
    (bin_dir / "dirname").symlink_to(shutil.which("dirname"))
    if sbatch_script:
        (bin_dir / "sbatch").write_text(sbatch_script)
        os.chmod(bin_dir / "sbatch", 0o755)
    env = clean_env(PATH=str(bin_dir), DDL_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    return subprocess.run([shutil.which("bash"), str(REPO / "slurm" / "submit_sweep.sh"), "optimizer=gd,adam",
                           "data=moons"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_submit_sweep_without_sbatch_is_refused_before_any_parent_run(tmp_path):
    out = submit_sweep_with(tmp_path)
    assert out.returncode == 2 and "sbatch not found" in out.stderr, out.stderr
    assert "ddl-train -m optimizer=gd,adam data=moons" in out.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_submit_sweep_whose_sbatch_fails_ends_its_parent_failed(tmp_path):
    from mlflow import MlflowClient

    out = submit_sweep_with(tmp_path, "#!/bin/sh\necho 'sbatch: error: Unable to contact slurm "
                                      "controller' >&2\nexit 1\n")
    assert out.returncode != 0 and "Unable to contact slurm controller" in out.stderr, out.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (parent,) = client.search_runs([client.get_experiment_by_name("ddl").experiment_id])
    assert parent.info.status == "FAILED", parent.info
