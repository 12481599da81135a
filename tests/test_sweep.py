"""Sweep helpers: grid expansion in Hydra's order and log-scale learning rates."""
import pytest

from ddl.runner.sweep import expand, logspace, main, split_values


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
