"""Learning-rate schedules: formula values, independence from call history, bad input."""
import math

import numpy as np
import pytest

from ddl.optim import SCHEDULES, make_schedule, schedule_values

LR0 = 0.3
PARAMS = {"decay_rate": 0.5, "base": 0.9, "k": 2.0, "time_interval": 4}
EPOCHS = (0, 1, 10, 1000)


def formula(name, e):
    """The formulas written out with PARAMS (epochs counted from 0)."""
    return {
        "constant": LR0,
        "inverse_time": LR0 / (1 + 0.5 * e),
        "exponential": LR0 * 0.9**e,
        "sqrt": LR0 * 2.0 / math.sqrt(e + 1),
        "scheduled": LR0 / (1 + 0.5 * math.floor(e / 4)),
    }[name]


@pytest.mark.parametrize("name", SCHEDULES)
def test_values_match_formula(name):
    fn = make_schedule(name, LR0, **PARAMS)
    for e in EPOCHS:
        got = fn(e)
        assert type(got) is float
        assert got == pytest.approx(formula(name, e), rel=1e-12, abs=0), (name, e)


def test_first_epoch_trains_at_lr0():
    for name in SCHEDULES:
        k_factor = 2.0 if name == "sqrt" else 1.0    # sqrt is lr0 * k at epoch 0
        assert make_schedule(name, LR0, **PARAMS)(0) == pytest.approx(LR0 * k_factor, rel=1e-15)


def test_known_course_numbers():
    # The course's table (lr0 = 0.2, decay_rate = 1): 0.1, 0.067, 0.05, 0.04 at e = 1..4.
    fn = make_schedule("inverse_time", 0.2, decay_rate=1.0)
    assert schedule_values(fn, 5)[1:] == pytest.approx([0.1, 0.2 / 3, 0.05, 0.04], rel=1e-12)
    fixed = make_schedule("scheduled", 0.2, decay_rate=1.0, time_interval=3)
    assert schedule_values(fixed, 7) == pytest.approx([0.2] * 3 + [0.1] * 3 + [0.2 / 3], rel=1e-12)


@pytest.mark.parametrize("name", SCHEDULES)
def test_rate_depends_only_on_epoch(name):
    fresh = make_schedule(name, LR0, **PARAMS)(10)
    used = make_schedule(name, LR0, **PARAMS)
    history = schedule_values(used, 12)
    assert used(10) == fresh == history[10]
    assert used(3) == history[3]              # going back gives the same rate again


def test_schedule_values_lists_every_epoch():
    fn = make_schedule("exponential", LR0, base=0.5)
    np.testing.assert_allclose(schedule_values(fn, 4), [0.3, 0.15, 0.075, 0.0375], rtol=1e-15)
    assert schedule_values(fn, 0) == []


def test_defaults():
    assert make_schedule("exponential", 1.0)(2) == pytest.approx(0.95**2, rel=1e-15)
    assert make_schedule("sqrt", 1.0)(3) == pytest.approx(0.5, rel=1e-15)
    scheduled = make_schedule("scheduled", 1.0)
    assert scheduled(999) == 1.0 and scheduled(1000) == pytest.approx(0.5, rel=1e-15)
    assert make_schedule("inverse_time", 1.0)(1) == pytest.approx(0.5, rel=1e-15)


def test_integer_valued_float_interval_is_accepted():
    assert make_schedule("scheduled", 1.0, time_interval=2.0)(2) == pytest.approx(0.5, rel=1e-15)


def test_unknown_schedule_lists_choices():
    with pytest.raises(ValueError, match=r"schedule must be one of \('constant', .*'scheduled'\), "
                                         r"got 'cosine'"):
        make_schedule("cosine", 0.1)


@pytest.mark.parametrize("kwargs,message", [
    ({"lr0": 0.0}, r"lr0 must be a positive finite number, got 0.0"),
    ({"lr0": -0.1}, r"lr0 must be a positive finite number, got -0.1"),
    ({"lr0": math.inf}, r"lr0 must be a positive finite number, got inf"),
    ({"decay_rate": -1.0}, r"decay_rate must be a finite number >= 0, got -1.0"),
    ({"base": 0.0}, r"base must be in \(0, 1\], got 0.0"),
    ({"base": 1.5}, r"base must be in \(0, 1\], got 1.5"),
    ({"k": 0.0}, r"k must be a positive finite number, got 0.0"),
    ({"time_interval": 0}, r"time_interval must be a whole number >= 1, got 0"),
    ({"time_interval": 2.5}, r"time_interval must be a whole number >= 1, got 2.5"),
    ({"lr0": "0.1"}, r"lr0 must be a positive finite number, got '0.1'"),
])
@pytest.mark.parametrize("name", ["constant", "scheduled"])
def test_bad_parameters_raise(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_schedule(name, **{"lr0": 0.1, **kwargs})


@pytest.mark.parametrize("epoch", [-1, 1.5, True])
def test_bad_epoch_raises(epoch):
    with pytest.raises(ValueError, match=r"epoch must be an integer >= 0 \(counted from 0\), got"):
        make_schedule("constant", 0.1)(epoch)


def test_numpy_integer_epoch_is_accepted():
    assert make_schedule("inverse_time", 1.0)(np.int64(3)) == pytest.approx(0.25, rel=1e-15)
